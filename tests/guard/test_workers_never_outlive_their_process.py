"""A process whose work is done exits promptly with its code, and no loader worker outlives it.

Real child processes (tests/support/loader_exit.py, a nanoGPT-style script whose loaders live
in module globals until the interpreter exits), real signals, every loader kind at once with
``num_workers=2``: a torch DataLoader (also with ``persistent_workers=True``) and a torchdata
StatefulDataLoader, each in a spotsafe.ResumableLoader, and both bare, as TrainState records
them itself (a bare StatefulDataLoader keeps its live iterator, and so its workers, on the
loader). The loop is left mid-epoch by
``break``, by an exception and by SIGTERM to the whole process group (Slurm,
``kill -- -PGID``), with and without a Guard, and under torchrun. With SIG_IGN as the workers'
shield, every one of these hung at interpreter exit, forever, but one: without a Guard a
SIGTERM killed the main process and left its workers behind for 5 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import spotsafe
from spotsafe.events import read_events
from spotsafe.storage import open_store

REPO = Path(__file__).resolve().parents[2]
KINDS = "dataloader,persistent,stateful-wrapped,stateful,bare"
WORKERS_PER_RANK = 2 * len(KINDS.split(","))
EXIT_S = 60  # a hang fails the test instead of hanging it
PROMPT_S = 20  # loop left -> process gone; a 5 s torch join timeout per worker would exceed it
WORKERS_GONE_S = 2  # process gone -> workers gone; torch's own orphan check waits 5 s


def start(store: Path, *args: str, ddp: bool = False) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), SPOTSAFE_CLOUD="none", OMP_NUM_THREADS="1")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [sys.executable, *(launcher if ddp else []), "-m", "tests.support.loader_exit"]
    return subprocess.Popen(
        [*cmd, str(store), "--loaders", KINDS, *args, *(["--ddp"] if ddp else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        start_new_session=True,  # its own process group, as under Slurm or a container
    )


def start_time(pid: int) -> tuple[str, int] | None:
    """(state, start time) of process ``pid``, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[19])


def still_running(procs: dict[int, int]) -> list[int]:
    """The pids among ``procs`` (pid -> start time) that still run: not gone, not a zombie,
    not a new process that reuses the pid."""
    out = []
    for pid, started in procs.items():
        now = start_time(pid)
        if now is not None and now[0] not in "ZX" and now[1] == started:
            out.append(pid)
    return out


class Run:
    """One child run, read line by line, with its workers' pids."""

    def __init__(self, store: Path, *args: str, ddp: bool = False) -> None:
        self.proc = start(store, *args, ddp=ddp)
        self.workers: dict[int, int] = {}  # pid -> start time
        self.lines: list[str] = []
        self._err: list[str] = []
        # Drained in the background: the exit is timed by wait(), not by the pipes' EOF,
        # which a worker that outlives the process would hold open.
        threading.Thread(target=self._err.extend, args=(self.proc.stderr,), daemon=True).start()

    def until_workers(self, ranks: int = 1) -> None:
        """Read until every rank printed its workers (after step 3, before leaving)."""
        assert self.proc.stdout is not None
        seen = 0
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            # Ranks share one pipe, and print writes a line's text and its newline apart:
            # one line may hold two ranks' reports.
            for _rank, listed in re.findall(r"workers (\d+)((?: \d+)*)", line):
                pids = [int(p) for p in listed.split()]
                assert len(pids) == WORKERS_PER_RANK, line
                for pid in pids:
                    found = start_time(pid)
                    if found is not None:
                        self.workers[pid] = found[1]
                seen += 1
            if seen >= ranks and seen:
                threading.Thread(target=self._read_rest, daemon=True).start()
                return
        raise AssertionError(f"no workers line: {self.lines} {self.stderr()}")

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(line.strip() for line in self.proc.stdout)

    def finish(self) -> tuple[int, float]:
        """Wait for the process to exit; its code and the seconds it took."""
        t0 = time.monotonic()
        try:
            code = self.proc.wait(timeout=EXIT_S)
        except subprocess.TimeoutExpired:
            left = still_running(self.workers)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"hung at exit (workers alive: {left})") from None
        return code, time.monotonic() - t0

    def stderr(self) -> str:
        return "".join(self._err)[-3000:]

    def assert_no_worker_left(self) -> None:
        """Every worker is gone within WORKERS_GONE_S of the process's exit."""
        deadline = time.monotonic() + WORKERS_GONE_S
        while still_running(self.workers) and time.monotonic() < deadline:
            time.sleep(0.02)
        left = still_running(self.workers)
        for pid in left:
            os.kill(pid, signal.SIGKILL)  # leave the machine clean for the next test
        assert not left, f"workers outlived their process: {left}"


def newest_valid_step(store: Path) -> int:
    listing = spotsafe.Checkpointer(str(store), events=False).checkpoints()
    return max(c.step for c in listing if c.status.value == "valid")


def stop_events(store: Path) -> list[spotsafe.events.Event]:
    return [e for e in read_events(open_store(str(store))) if e.kind == "stop"]


@pytest.mark.slow
@pytest.mark.parametrize("guard", [True, False], ids=["guard", "no-guard"])
@pytest.mark.parametrize("leave", ["break", "raise", "stop"])
def test_left_mid_epoch_the_process_exits_promptly_and_its_workers_with_it(
    tmp_path, leave: str, guard: bool
) -> None:
    run = Run(tmp_path, "--leave", leave, *(["--guard"] if guard else []))
    run.until_workers()
    assert len(run.workers) == WORKERS_PER_RANK  # all alive mid-epoch
    if leave == "stop":
        os.killpg(run.proc.pid, signal.SIGTERM)  # every process of the job, workers too
    code, took = run.finish()
    expected = {"break": 0, "raise": 1, "stop": 75 if guard else -signal.SIGTERM}[leave]
    assert code == expected, run.stderr()
    assert took < PROMPT_S, f"exit took {took:.1f} s"
    run.assert_no_worker_left()
    if leave == "break":
        assert "done 3" in run.lines
    if leave == "stop" and guard:
        (event,) = stop_events(tmp_path)
        assert event.get("clean") is True
        assert event.get("step") == newest_valid_step(tmp_path)
        assert "DataLoader worker" not in run.stderr()  # no worker died before the flush


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_exits_and_leaves_no_worker(tmp_path) -> None:
    run = Run(tmp_path, "--leave", "stop", "--guard", ddp=True)
    run.until_workers(ranks=2)
    assert len(run.workers) == 2 * WORKERS_PER_RANK
    os.killpg(run.proc.pid, signal.SIGTERM)  # torchrun, both ranks and all their workers
    code, took = run.finish()
    assert code != 0, run.stderr()  # torchrun reports its ranks' 75 as a failure
    assert took < PROMPT_S, f"exit took {took:.1f} s"
    run.assert_no_worker_left()
    stops = stop_events(tmp_path)
    assert len(stops) == 2, run.stderr()
    assert {e.get("clean") for e in stops} == {True}
    (step,) = {e.get("step") for e in stops}
    assert newest_valid_step(tmp_path) == step
