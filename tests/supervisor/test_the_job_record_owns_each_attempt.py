"""The job record owns each attempt's lifecycle (start, child, clean stop, end): the
supervisor classifies exits from it alone, old stores (a stop told only by an event) stay
readable, the chaos harness reads it through its API, and the child's environment is the
one contract of spotsafe.env."""

from __future__ import annotations

import ast
import inspect
import random
from pathlib import Path

import pytest

from spotsafe import jobrecord
from spotsafe.env import ChildEnv
from spotsafe.errors import StorageError
from spotsafe.events import read_events
from spotsafe.jobrecord import (
    attempt_path,
    clean_stop_recorded,
    read_child,
    read_stop,
    record_child,
    record_clean_stop,
)
from spotsafe.policy import ExitClass, Pool
from spotsafe.storage import open_store
from spotsafe.supervisor import JobRecord, Outcome, Supervisor, chaos
from spotsafe.supervisor.job import AttemptStart
from tests.supervisor.conftest import CHILD, child_env

POOL = Pool(backoff_initial_s=0, backoff_max_s=0, grace_s=2, lease_ttl_s=2)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)


def supervise(store: Path, *plans: str) -> tuple[Outcome, list[str]]:
    lines: list[str] = []

    class Out:
        def write(self, data: bytes) -> None:
            lines.extend(data.decode().splitlines())

        def flush(self) -> None:
            pass

    sup = Supervisor(store=open_store(str(store)), command=[*CHILD, *plans], pool=POOL,
                     watchers=[], sleep=lambda s: None, rng=random.Random(0),
                     stdout=Out(), stderr=Out())  # type: ignore[arg-type]  # fmt: skip
    return sup.run(), lines


def classes(store: Path) -> list[ExitClass]:
    return [r.exit_class for r in JobRecord.open(open_store(str(store))).retry_state().attempts]


def test_a_clean_stop_in_the_job_record_is_a_preemption_without_any_event(
    tmp_path: Path,
) -> None:
    # torchrun reports the Guard's 75 as 1; the stop object alone must say "preempted" (the
    # supervisor used to read the event log, so a lost event made it a crash).
    outcome, _ = supervise(tmp_path / "s", "ckpt:5,recordstop,exit:1", "exit:0")
    assert outcome.exit_code == 0, outcome.reason
    assert classes(tmp_path / "s") == [ExitClass.PREEMPTED, ExitClass.SUCCESS]
    assert (tmp_path / "s" / attempt_path(1, "stop")).is_file()
    events = read_events(open_store(str(tmp_path / "s")), attempt=1)
    assert [e for e in events if e.kind == "stop"] == []


def test_an_old_child_that_wrote_only_the_event_is_still_read(tmp_path: Path) -> None:
    outcome, _ = supervise(tmp_path / "s", "ckpt:5,oldcleanstop,exit:1", "exit:0")
    assert outcome.exit_code == 0, outcome.reason
    assert classes(tmp_path / "s") == [ExitClass.PREEMPTED, ExitClass.SUCCESS]
    assert read_stop(open_store(str(tmp_path / "s")), 1) is None


def test_a_cut_off_attempt_is_closed_from_its_stop_record(tmp_path: Path) -> None:
    # Its supervisor died after the child flushed and recorded the stop, before the end.
    store = open_store(str(tmp_path / "s"))
    record = JobRecord.open(store)
    record.start(AttemptStart(attempt=1, started_s=1000.0, start_step=None))
    from tests.supervisor.scripted_child import commit_checkpoint

    commit_checkpoint(ChildEnv(store=str(tmp_path / "s"), job_id=record.job_id, attempt=1), 5)
    assert record_clean_stop(store, 1, step=5, reason="aws", wall_clock=lambda: 1060.0)
    outcome, _ = supervise(tmp_path / "s", "exit:0")
    assert outcome.exit_code == 0, outcome.reason
    ended = JobRecord.open(store)
    assert ended.ends[1].exit_class is ExitClass.PREEMPTED  # was UNCLEAN: no event said so
    assert ended.end_docs[1]["recovered"] is True


def test_the_stop_record_is_created_once_and_only_under_the_supervisor(memory_url: str) -> None:
    store = open_store(memory_url)
    assert record_clean_stop(store, None, step=3, reason="signal:SIGTERM") is False
    assert store.list() == {}
    assert record_clean_stop(store, 2, step=3, reason="signal:SIGTERM", exit_code=75,
                             wall_clock=lambda: 50.0)  # fmt: skip
    assert not record_clean_stop(store, 2, step=9, reason="aws")  # a second rank: first wins
    stop = read_stop(store, 2)
    assert stop is not None and (stop.step, stop.reason, stop.wall_s) == (3, "signal:SIGTERM", 50.0)
    assert stop.details == {"exit_code": 75}
    assert clean_stop_recorded(store, 2) and not clean_stop_recorded(store, 1)
    store.write_bytes(attempt_path(4, "stop"), b'{"clean": true, "step": "ten"}')
    with pytest.raises(StorageError, match="garbled") as info:
        read_stop(store, 4)
    assert info.value.retryable is False


def test_the_child_object_is_read_back(memory_url: str) -> None:
    store = open_store(memory_url)
    assert read_child(store, 1) is None
    assert record_child(store, 1, pid=123, pgid=120)
    assert not record_child(store, 1, pid=9, pgid=9)
    child = read_child(store, 1)
    assert child is not None and (child.pid, child.pgid) == (123, 120)
    assert jobrecord.attempt_files(store) == {1: {"child"}}


def test_the_chaos_harness_reads_the_record_through_its_api(tmp_path: Path) -> None:
    source = inspect.getsource(chaos)
    for spelled in ("-child.json", "-start.json", "-end.json", "ATTEMPTS_DIR", "json.loads"):
        assert spelled not in source, f"chaos.py spells {spelled!r}: use spotsafe.jobrecord"
    job = chaos._Job(["true"], tmp_path / "s", tmp_path / "c.toml", tmp_path / "log")
    record = JobRecord.open(job.store)
    record.start(AttemptStart(attempt=1, started_s=1.0, start_step=7))
    assert job.running_attempt(0) is None  # no child yet
    record_child(job.store, 1, pid=4242, pgid=4242)
    assert job.running_attempt(0) == (1, 4242) and job.running_attempt(1) is None
    assert job.start_step(1) == 7 and not job.ended(1)
    job.log.close()


def test_the_supervisor_spells_no_child_variable_itself() -> None:
    from spotsafe.supervisor import runner

    tree = ast.parse(inspect.getsource(runner))
    spelled = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str) and n.value.startswith("SPOTSAFE_")}  # fmt: skip
    assert spelled == set()


def test_the_child_gets_the_contract_and_no_stale_value_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The supervisor's own environment held values of an outer run: they must not leak.
    monkeypatch.setenv("SPOTSAFE_ON_DEMAND", "1")
    monkeypatch.setenv("SPOTSAFE_CONFIG", str(tmp_path / "elsewhere.toml"))
    monkeypatch.setenv("SPOTSAFE_ATTEMPT", "41")
    names = ["SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL",
             "SPOTSAFE_CONFIG", "SPOTSAFE_ON_DEMAND"]  # fmt: skip
    outcome, lines = supervise(tmp_path / "s", ",".join(f"printenv:{n}" for n in names) + ",exit:0")
    assert outcome.exit_code == 0, outcome.reason
    seen = dict(line.split("=", 1) for line in lines if line.startswith("SPOTSAFE_"))
    record = JobRecord.open(open_store(str(tmp_path / "s")))
    assert ChildEnv.from_environ(seen) == ChildEnv(
        store=str(tmp_path / "s"), job_id=record.job_id, attempt=1, pool="standard"
    )
