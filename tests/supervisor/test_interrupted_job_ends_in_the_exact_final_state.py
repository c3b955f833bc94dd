"""A kill, a preemption and a crash in sequence, then success: the same final weights, bit
for bit, as a run that was never interrupted. Real training processes under `spotsafe run`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from spotsafe.policy import ExitClass
from spotsafe.storage import open_store
from spotsafe.supervisor import JobRecord, newest_valid_step
from tests.supervisor.conftest import REPO, child_env, write_pool

TRAIN = [sys.executable, "-m", "tests.support.guarded_train"]
ARGS = ["--epochs", "3", "--every", "3", "--step-s", "0.03"]


def test_kill_preempt_crash_then_the_exact_final_state(
    tmp_path: Path, spawn_supervisor: Callable[..., subprocess.Popen[str]]
) -> None:
    reference = subprocess.Popen(
        [*TRAIN, str(tmp_path / "ref"), *ARGS], stdout=subprocess.PIPE, text=True,
        cwd=REPO, env=child_env(),
    )  # fmt: skip
    store = tmp_path / "s"
    sup = spawn_supervisor(store, write_pool(tmp_path / "c.toml"), *TRAIN, str(store), *ARGS)
    assert sup.stdout is not None
    # attempt 1: SIGKILL (node lost), 2: SIGTERM (preemption), 3: SIGSEGV (the program's
    # own fault), 4: runs to the end.
    plan = {1: signal.SIGKILL, 2: signal.SIGTERM, 3: signal.SIGSEGV}
    attempt, resumed, final = 1, 0, ""
    for line in sup.stdout:
        if line.startswith("resumed "):
            resumed = int(line.split()[1])
        elif line.startswith("step ") and attempt in plan:
            if int(line.split()[1]) >= resumed + 7:
                doc = store / "job" / "attempts" / f"{attempt:06d}-child.json"
                pgid = json.loads(doc.read_text())["pgid"]
                sup_sig = plan[attempt]
                import os

                os.killpg(pgid, sup_sig)
                attempt += 1
        elif line.startswith("final "):
            final = line.split()[1]
    assert sup.wait(timeout=120) == 0, sup.stderr.read() if sup.stderr else ""
    ref_out, _ = reference.communicate(timeout=120)
    ref_final = next(x.split()[1] for x in ref_out.splitlines() if x.startswith("final "))
    assert final == ref_final

    record = JobRecord.open(open_store(str(store)))
    got = [r.exit_class for r in record.retry_state().attempts]
    assert got == [ExitClass.UNCLEAN, ExitClass.PREEMPTED, ExitClass.CRASH, ExitClass.SUCCESS]
    assert [r.returncode for r in record.retry_state().attempts] == [-9, 75, -11, 0]
    # The supervisor's probe (no torch) agrees with the Checkpointer on the newest step.
    import spotsafe

    listing = spotsafe.Checkpointer(str(store), events=False).checkpoints()
    newest = max(c.step for c in listing if c.status.value == "valid")
    assert newest_valid_step(open_store(str(store))) == newest == 30
