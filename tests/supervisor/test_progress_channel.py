"""The progress board tells the supervisor how far an attempt got, even when the attempt is
SIGKILLed: every rank's Guard writes its own slot, the writer never raises, and the end
record's ``"progress"`` holds the exact furthest step.

This module is also the child it supervises: ``python -m tests.supervisor.test_progress_channel
guarded`` trains a tiny model under a Guard and SIGKILLs itself at step 6 in attempt 1.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sys
from pathlib import Path

import pytest

from spotsafe.jobrecord import attempt_path
from spotsafe.policy import ExitClass, load_pools
from spotsafe.progress_channel import (
    BOARD_BYTES,
    BOARD_SLOTS,
    ProgressBoard,
    ProgressWriter,
    read_board,
)
from spotsafe.storage import open_store
from spotsafe.supervisor import JobRecord, Supervisor
from tests.supervisor.conftest import child_env, write_pool

KILLED_AT = 6  # attempt 1 SIGKILLs itself right after this step
EVERY = 4  # steps between checkpoints: attempt 2 resumes from step 4
STEPS = 10


@pytest.fixture
def board() -> ProgressBoard:
    with ProgressBoard.create() as b:
        yield b


def test_each_rank_writes_its_own_slot_and_the_attempt_is_their_sum(board) -> None:
    times = iter(float(t) for t in range(100, 200))
    ranks = [ProgressWriter(board.path, rank=r, pid=1000 + r, wall_clock=lambda: next(times))
             for r in (0, 1)]  # fmt: skip
    for w in ranks:
        w.entered()
    ranks[0].restored(step=40, seconds=2.0)
    ranks[1].restored(step=40, seconds=3.5)
    for step in (41, 42):
        for w in ranks:
            w.step(step)
    ranks[0].step(43)  # rank 1 stopped at 42: a collective hang in the making
    ranks[0].saved(43)
    p = board.read()
    assert [(r.slot, r.pid, r.last_step) for r in p.ranks] == [(0, 1000, 43), (1, 1001, 42)]
    assert p.to_json() == {
        "entered_s": 100.0, "restore_s": 3.5, "restored_step": 40,
        "first_step_s": 102.0, "last_step": 43, "last_step_s": 106.0,
    }  # fmt: skip
    assert (p.saved_step, p.saved_s) == (43, 107.0)
    assert read_board(board.path) == p  # the file itself says the same


def test_torchruns_local_rank_picks_the_slot(board) -> None:
    env = {"SPOTSAFE_PROGRESS": board.path, "LOCAL_RANK": "3"}
    writer = ProgressWriter.from_environ(env, rank=0)
    assert writer is not None and writer.rank == 3
    writer.step(9)
    assert [(r.slot, r.last_step) for r in board.read().ranks] == [(3, 9)]
    assert ProgressWriter.from_environ({"LOCAL_RANK": "3"}) is None  # no supervisor, no board


def test_a_board_that_cannot_be_used_disables_the_writer_and_nothing_raises(
    tmp_path: Path, board
) -> None:
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"\0" * BOARD_BYTES)
    short = tmp_path / "short"
    short.write_bytes(b"SPSFPRG1")
    writers = [ProgressWriter(str(tmp_path / "missing")), ProgressWriter(str(foreign)),
               ProgressWriter(str(short)), ProgressWriter(str(tmp_path)),
               ProgressWriter(board.path, rank=BOARD_SLOTS)]  # fmt: skip
    for w in writers:
        assert not w.enabled
        w.entered(), w.restored(step=1, seconds=1.0), w.step(1), w.saved(1), w.left()
    good = ProgressWriter(board.path)
    good.step(2**70)  # not a 64-bit step: dropped, not raised
    good.restored(step=-5, seconds=float("nan"))
    assert board.read().last_step is None
    board.close()
    good.step(3)  # the supervisor deleted the board: the mapping lives on, nobody reads it
    assert board.read().ranks == ()
    assert foreign.read_bytes() == b"\0" * BOARD_BYTES  # a foreign file is never written


def guarded() -> None:
    """The child: restore, train under a Guard (a save every 4 steps), die by SIGKILL at step
    6 in the first attempt, finish at step 10 in the next."""
    import torch

    import spotsafe
    from spotsafe.env import ChildEnv

    env = ChildEnv.from_environ()
    attempt = env.attempt
    print(f"board {env.progress}", flush=True)
    state = spotsafe.TrainState(model=torch.nn.Linear(2, 1))
    ckpt = spotsafe.Checkpointer()
    ckpt.restore(state)
    with spotsafe.Guard(ckpt, state, every_steps=EVERY, async_saves=False, watchers=[]) as g:
        while state.step < STEPS:
            g.step()
            if attempt == 1 and state.step == KILLED_AT:
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would: no last word
    ckpt.close()


def test_a_sigkilled_attempt_is_recorded_with_its_exact_furthest_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)
    store = open_store(str(tmp_path / "s"))
    pool = load_pools(write_pool(tmp_path / "spotsafe.toml"))["fast"]
    sup = Supervisor(store=store, pool=pool, watchers=[], sleep=lambda s: None,
                     rng=random.Random(0), echo=False,
                     command=[sys.executable, "-m", "tests.supervisor.test_progress_channel",
                              "guarded"])  # fmt: skip
    assert sup.run().exit_code == 0
    record = JobRecord.open(store)
    assert [r.exit_class for r in record.retry_state().attempts] == [
        ExitClass.UNCLEAN,
        ExitClass.SUCCESS,
    ]
    ends = [json.loads(store.read_bytes(attempt_path(n, "end"))) for n in (1, 2)]
    killed, resumed = (e["progress"] for e in ends)
    assert killed["last_step"] == KILLED_AT  # not the checkpoint's 4: the step it reached
    assert killed["restored_step"] is None and killed["restore_s"] is None  # a fresh start
    assert resumed["restored_step"] == EVERY and resumed["restore_s"] > 0
    assert resumed["last_step"] == STEPS
    for end, p in zip(ends, (killed, resumed), strict=True):
        assert end["started_s"] <= p["entered_s"] <= p["first_step_s"] <= p["last_step_s"]
        assert p["last_step_s"] <= end["ended_s"]
    for n in (1, 2):  # each attempt had a board of its own, deleted after it
        log = store.read_bytes(f"logs/attempt-{n:06d}.log").decode()
        (board,) = re.findall(r"^board (.+)$", log, re.M)
        assert not Path(board).exists()


if __name__ == "__main__":
    if sys.argv[1:] == ["guarded"]:
        guarded()
    else:
        raise SystemExit(f"unknown mode {sys.argv[1:]!r}")
