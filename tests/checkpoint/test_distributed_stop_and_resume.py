"""A 2-rank torchrun job (DDP, gloo) stops both ranks at one step when one rank is signalled,
commits one consistent checkpoint, and resumes exactly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import spotsafe
from spotsafe.checkpoint import Status
from spotsafe.events import read_events
from spotsafe.storage import open_store

REPO = Path(__file__).resolve().parents[2]


def torchrun(store: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), SPOTSAFE_CLOUD="none", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "tests.support.ddp_train", str(store), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )  # fmt: skip


def final_digest(store: Path) -> tuple[int, str]:
    listing = spotsafe.Checkpointer(str(store), events=False).checkpoints()
    newest = next(c for c in listing if c.status is Status.VALID)
    assert newest.manifest is not None and newest.manifest.world_size == 2
    return newest.step, newest.manifest.content_digest()


@pytest.mark.slow
def test_one_rank_signalled_both_stop_at_one_step_and_resume_exactly(tmp_path) -> None:
    # The reference runs beside the interrupted job, which mostly sleeps between its steps.
    ref = torchrun(tmp_path / "reference")
    try:
        store = tmp_path / "interrupted"
        job = torchrun(store, "--step-s", "0.05")
        assert job.stdout is not None
        pids = {}
        for line in job.stdout:
            # Both ranks write to one pipe: a line may hold another rank's output too.
            for rank, pid in re.findall(r"pid (\d+) (\d+)", line):
                pids[int(rank)] = int(pid)
            if any(int(step) >= 7 for step in re.findall(r"step (\d+)", line)) and 1 in pids:
                break
        os.kill(pids[1], signal.SIGTERM)  # only rank 1 hears it, as when one node is reclaimed
        _, err = job.communicate(timeout=180)
        # torchrun reports its workers' 75 as a failure (exit 1): the store says what happened.
        assert job.returncode != 0
        stops = [e for e in read_events(open_store(str(store))) if e.kind == "stop"]
        assert len(stops) == 2, err[-3000:]
        assert {e.get("clean") for e in stops} == {True}
        (step,) = {e.get("step") for e in stops}
        assert final_digest(store)[0] == step
    except BaseException:
        ref.kill()  # the test failed: leave no job behind
        raise

    _, err = ref.communicate(timeout=180)
    assert ref.returncode == 0, err[-3000:]
    resumed = torchrun(store)
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-3000:]
    assert final_digest(store) == final_digest(tmp_path / "reference")
