"""The supervisor watches the cloud itself: a spot notice reaches the child as SIGTERM even
when the child watches nothing. A real IMDSv2 server on loopback, real processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spotsafe.events import read_events
from spotsafe.interrupt import watchers_from_env
from spotsafe.policy import Pool
from spotsafe.storage import open_store
from spotsafe.supervisor import EXIT_STOPPED, JobRecord, Supervisor
from tests.interrupt.metadata_servers import AwsImds
from tests.supervisor.conftest import CHILD, child_env


def test_a_spot_notice_is_forwarded_as_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)  # the child watches nothing: SPOTSAFE_CLOUD=none
    store = open_store(str(tmp_path / "s"))
    with AwsImds() as imds:
        env = {"SPOTSAFE_CLOUD": "aws", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}
        watchers = watchers_from_env(env)
        sup = Supervisor(store=store, command=[*CHILD, "term75,ckpt:3,hang"],
                         pool=Pool(grace_s=30.0), watchers=watchers, echo=False)  # fmt: skip

        def notice_once_running() -> None:
            # Once the child saved: an interruption before the first save is no progress.
            while not list((tmp_path / "s").glob("checkpoints/*/MANIFEST.json")):
                time.sleep(0.02)
            imds.instance_action = {"action": "terminate", "time": "2099-01-01T00:00:00Z"}

        import threading

        threading.Thread(target=notice_once_running, daemon=True).start()
        t0 = time.monotonic()
        outcome = sup.run()
    assert outcome.exit_code == EXIT_STOPPED
    assert time.monotonic() - t0 < 20.0  # SIGTERM, not SIGKILL after the 30 s grace
    doc = JobRecord.open(store).end_docs[1]
    assert doc["returncode"] == 75 and doc["exit_class"] == "preempted"
    assert doc["stopped_by"].startswith("aws:")
    notices = [e for e in read_events(store, attempt=1) if e.kind == "notice"]
    assert notices and notices[0].get("action") == "forward_sigterm"
