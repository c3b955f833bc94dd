"""An attempt that shows no training step for the pool's ``max_stall_s`` is hung: the supervisor
stops it (SIGTERM, the grace, SIGKILL of its whole process tree), records ``hung`` with the last
step seen, and retries it under the hang budget. Start-up never counts.

The two hangs users meet run for real: a collective under torchrun that one rank stopped
calling (2-rank DDP on gloo), and a process stuck at exit after its last step. This module is
also their child (``python -m tests.supervisor.test_hang MODE``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest

from spotsafe.events import read_events
from spotsafe.jobrecord import attempt_path
from spotsafe.policy import (
    AttemptRecord,
    ExitClass,
    GiveUp,
    Pool,
    Restart,
    RetryPolicy,
    RetryState,
    classify_exit,
    load_pools,
)
from spotsafe.policy.retry import Budget
from spotsafe.progress_channel import Progress, RankProgress, StallClock
from spotsafe.storage import open_store
from spotsafe.supervisor import JobRecord, Supervisor
from tests.supervisor.conftest import REPO, child_env, write_pool

ME = [sys.executable, "-m", "tests.supervisor.test_hang"]
STALL_S = 3.0  # max_stall_s of these jobs: far above a step or a tiny save, below a test


# ---------------------------------------------------------------- the decisions, pure


def at(step: int | None, t: float | None, *, first: float | None = None) -> Progress:
    return Progress((RankProgress(slot=0, pid=1, first_step_s=first, last_step=step,
                                  last_step_s=t),))  # fmt: skip


def test_start_up_never_counts_and_any_step_restarts_the_count() -> None:
    clock = StallClock(max_stall_s=10.0)
    starting = Progress((RankProgress(slot=0, pid=1, entered_s=0.0),))
    assert clock.stalled_s(starting, now_s=0.0) is None
    assert not clock.hung(starting, now_s=10_000.0)  # imports, restore, compile: not a hang
    assert not clock.hung(at(1, 1.0, first=1.0), now_s=10_000.0)  # the count starts here
    assert clock.stalled_s(at(1, 1.0, first=1.0), now_s=10_009.0) == 9.0
    assert not clock.hung(at(2, 2.0, first=1.0), now_s=10_009.5)  # a step: from zero again
    assert clock.hung(at(2, 2.0, first=1.0), now_s=10_019.5)
    left = Progress((RankProgress(slot=0, pid=1, entered_s=0.0, left_s=5.0),))
    assert StallClock(max_stall_s=1.0).stalled_s(left, now_s=3.0) == 0.0  # no step, but left


def test_a_hang_is_its_own_class_and_budget() -> None:
    assert classify_exit(-9, hung=True, progressed=True) is ExitClass.HUNG
    assert classify_exit(75, hung=True, clean_stop_recorded=True) is ExitClass.HUNG
    assert classify_exit(1, hung=True, progressed=False) is ExitClass.HUNG  # not no_progress
    assert classify_exit(0, hung=True) is ExitClass.SUCCESS  # it finished after all

    def attempt(n: int, cls: ExitClass, end: int) -> AttemptRecord:
        return AttemptRecord(attempt=n, exit_class=cls, started_s=0.0, ended_s=1.0,
                             start_step=end - 1, end_step=end, returncode=-9)  # fmt: skip

    policy = RetryPolicy.from_pool(Pool(max_failures=2, backoff_initial_s=5.0, jitter=0.0))
    two_crashes = [attempt(1, ExitClass.CRASH, 1), attempt(2, ExitClass.CRASH, 2)]
    hangs = [attempt(3 + i, ExitClass.HUNG, 3 + i) for i in range(3)]
    state = RetryState(attempts=(*two_crashes, *hangs[:2]))
    assert state.spent(Budget.HANGS) == 2 and state.spent(Budget.FAILURES) == 2
    decision = policy.decide(state, rng=random.Random(0))
    assert isinstance(decision, Restart) and decision.after_s == 5.0
    assert decision.reason == "hung (exit -9): restart 2 of 2 allowed after hangs"
    assert state.interruptions == 0  # on-demand capacity does not cure a deadlock
    gave_up = policy.decide(RetryState(attempts=(*two_crashes, *hangs)), rng=random.Random(0))
    assert isinstance(gave_up, GiveUp) and gave_up.exit_class is ExitClass.HUNG
    assert "3 hangs, budget of 2 restarts after hangs spent" in gave_up.reason


# ---------------------------------------------------------------- the children


def stuck_at_exit() -> None:
    """Attempt 1: three steps under a Guard, then a thread that never ends keeps the process
    from exiting. Later attempts: done at once."""
    from spotsafe.env import ChildEnv

    if ChildEnv.from_environ().attempt != 1:
        return
    import torch

    import spotsafe

    state = spotsafe.TrainState(model=torch.nn.Linear(2, 1))
    ckpt = spotsafe.Checkpointer()
    ckpt.save(state)  # the first save's one-off costs fall in start-up, not after step 3
    with spotsafe.Guard(ckpt, state, every_steps=100, async_saves=False, watchers=[]) as g:
        for _ in range(3):
            g.step()
    ckpt.close()
    print("training done", flush=True)
    # A non-daemon thread that waits for ever: the interpreter waits for it at exit, as it
    # does for a forgotten loader, uploader or NCCL watchdog thread.
    threading.Thread(target=threading.Event().wait, daemon=False).start()


def torchrun_job() -> None:
    """Attempt 1: a 2-rank DDP run (torchrun) whose rank 1 stops calling the collective
    after step 3. Later attempts: done at once."""
    from spotsafe.env import ChildEnv

    if ChildEnv.from_environ().attempt != 1:
        return
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "tests.supervisor.test_hang", "ddp-rank"]  # fmt: skip
    os.execve(sys.executable, argv, env)  # the supervisor's child *is* torchrun


def ddp_rank() -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    import spotsafe

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    state = spotsafe.TrainState(model=model, optimizer=opt)
    ckpt = spotsafe.Checkpointer()
    with spotsafe.Guard(ckpt, state, every_steps=100, watchers=[]) as guard:
        while True:
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()  # DDP's all-reduce: rank 0 waits here for rank 1, for ever
            opt.step()
            guard.step()
            if rank == 1 and state.step == 3:
                while True:  # stuck elsewhere (a dead data source, a bug): no more collectives
                    time.sleep(1)


# ---------------------------------------------------------------- the jobs


@pytest.fixture
def supervise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)

    def run(mode: str) -> tuple[JobRecord, list[dict]]:
        config = write_pool(tmp_path / "spotsafe.toml", max_stall_s=STALL_S, grace_s=1.0)
        store = open_store(str(tmp_path / mode))
        sup = Supervisor(store=store, command=[*ME, mode], pool=load_pools(config)["fast"],
                         watchers=[], sleep=lambda s: None, rng=random.Random(0),
                         echo=False)  # fmt: skip
        outcome = sup.run()
        assert outcome.exit_code == 0, outcome.reason
        record = JobRecord.open(store)
        ends = [json.loads(store.read_bytes(attempt_path(n, "end"))) for n in sorted(record.ends)]
        return record, ends

    return run


def classes(record: JobRecord) -> list[ExitClass]:
    return [r.exit_class for r in record.retry_state().attempts]


def test_a_process_stuck_at_exit_is_stopped_as_hung_and_retried(supervise) -> None:
    record, (hung, done) = supervise("stuck-at-exit")
    assert classes(record) == [ExitClass.HUNG, ExitClass.SUCCESS]
    assert hung["returncode"] == -15  # the Guard was left: SIGTERM ended it, no SIGKILL needed
    assert hung["progress"]["last_step"] == 3
    assert hung["hung_after_s"] >= STALL_S
    assert hung["ended_s"] - hung["progress"]["last_step_s"] >= STALL_S
    assert done["progress"]["last_step"] is None  # the retry had nothing left to do
    (hang,) = [e for e in read_events(record.store, attempt=1) if e.kind == "hang"]
    assert hang.get("last_step") == 3


def test_a_collective_one_rank_stopped_calling_is_hung_and_no_rank_outlives_it(
    supervise,
) -> None:
    record, (hung, _) = supervise("torchrun-job")
    assert classes(record) == [ExitClass.HUNG, ExitClass.SUCCESS]
    assert hung["progress"]["last_step"] == 3
    assert hung["progress"]["first_step_s"] <= hung["progress"]["last_step_s"]
    (hang,) = [e for e in read_events(record.store, attempt=1) if e.kind == "hang"]
    ranks = hang.get("ranks")
    assert sorted((r["slot"], r["last_step"]) for r in ranks) == [(0, 3), (1, 3)]
    # Workers live in sessions of their own (torchrun's doing): the grace's SIGKILL must
    # still reach them, or they would hold the job's collectives (and its GPUs) for ever.
    for r in ranks:
        assert gone_soon(r["pid"]), f"rank {r['slot']} (pid {r['pid']}) outlived the attempt"


def gone_soon(pid: int, within_s: float = 30.0) -> bool:
    """Whether ``pid`` is gone or a zombie within ``within_s``: a SIGKILLed worker's parent
    (or init, once torchrun is gone) reaps it a moment later, later still on a busy machine."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    {"stuck-at-exit": stuck_at_exit, "torchrun-job": torchrun_job,
     "ddp-rank": ddp_rank}[sys.argv[1]]()  # fmt: skip
