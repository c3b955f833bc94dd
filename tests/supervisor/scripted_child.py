"""A torch-free child whose behaviour per attempt is given on the command line.

    python -m tests.supervisor.scripted_child PLAN1 PLAN2 ...

Attempt N (``ChildEnv.from_environ().attempt``) runs PLAN_N (the last plan repeats). A plan
is a comma-separated list of actions, run in order:

    ckpt:S      commit a (tensor-free) checkpoint at step S, in the real manifest format
    cleanstop   record a clean stop as the Guard does: the job record's stop object and the
                `stop` event
    oldcleanstop  record a clean stop as Guards before the stop object did: the event only
    recordstop  record a clean stop in the job record only (its event was lost)
    printenv:N  print N=<value of environment variable N>
    exit:C      exit with code C
    term75      from now on, SIGTERM makes the process exit 75 (as the Guard does)
    ignoreterm  from now on, SIGTERM is ignored
    grandchild  start a `sleep` in the same process group, print its pid
    hang        print "hanging" and sleep until killed
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from spotsafe.checkpoint.manifest import Manifest, checkpoint_dir
from spotsafe.env import ChildEnv
from spotsafe.events import EventLog
from spotsafe.jobrecord import record_clean_stop
from spotsafe.storage import open_store


def commit_checkpoint(env: ChildEnv, step: int) -> None:
    """A checkpoint with no tensors, committed the way the Checkpointer commits one."""
    assert env.store is not None
    store = open_store(env.store)
    attempt = env.attempt or 0
    manifest = Manifest(
        step=step, epoch=0, created_at=time.time(), writer=secrets.token_hex(8),
        job_id=env.job_id, attempt=attempt, generation=attempt,
        world_size=1, versions={}, config_fingerprint=None, files={}, tensors=[],
        tree={"$dict": [["step", step]]},  # the encoding of {"step": step} (checkpoint.tree)
    )  # fmt: skip
    store.write_bytes(f"{checkpoint_dir(step, secrets.token_hex(4))}/MANIFEST.json",
                      manifest.to_bytes())  # fmt: skip


def main() -> None:
    plans = sys.argv[1:]
    env = ChildEnv.from_environ()
    assert env.attempt is not None and env.store is not None, "run me under the supervisor"
    attempt = env.attempt
    plan = plans[min(attempt, len(plans)) - 1]
    print(f"attempt {attempt}: {plan}", flush=True)
    for action in plan.split(","):
        name, _, arg = action.partition(":")
        if name == "ckpt":
            commit_checkpoint(env, int(arg))
        elif name in ("cleanstop", "oldcleanstop", "recordstop"):
            store = open_store(env.store)
            if name != "oldcleanstop":
                record_clean_stop(store, attempt, step=0, reason="signal:SIGTERM")
            if name != "recordstop":
                events = EventLog(store, job_id=env.job_id, attempt=attempt, flush_interval_s=0)
                events.record("stop", clean=True, step=0, source="signal:SIGTERM")
                events.close()
        elif name == "printenv":
            print(f"{arg}={os.environ.get(arg, '')}", flush=True)
        elif name == "exit":
            sys.exit(int(arg))
        elif name == "term75":
            signal.signal(signal.SIGTERM, lambda *_: os._exit(75))
        elif name == "ignoreterm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif name == "grandchild":
            proc = subprocess.Popen(["sleep", "300"])
            print(f"grandchild {proc.pid}", flush=True)
        elif name == "hang":
            print("hanging", flush=True)
            while True:
                time.sleep(1)
        else:
            raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    main()
