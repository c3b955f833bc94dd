"""SIGKILL at random points of real saves: a reader sees an old or a new checkpoint, never a
partial one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.checkpoint import Status
from spotsafe.errors import NoValidCheckpoint
from tests.support.save_loop import make_model

REPO = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("SPOTSAFE_TEST_KILLS", "5"))  # make chaos raises it


def start_saver(store: Path | str, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.save_loop", str(store), *extra],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "saving"
    return proc


def check_reader_view(store: Path | str, *, big: bool = False) -> int:
    """Restore and check that the weights are exactly those of the step restored."""
    model = make_model(big)
    state = spotsafe.TrainState(model=model)
    ckpt = spotsafe.Checkpointer(str(store), events=False)
    info = ckpt.restore(state)
    assert info is not None
    assert not info.fell_back, f"a committed checkpoint was damaged: {info.skipped}"
    for p in model.parameters():
        assert torch.all(p == float(info.step)), "checkpoint holds another step's weights"
    statuses = {c.status for c in ckpt.checkpoints()}
    assert statuses <= {Status.VALID, Status.PARTIAL, Status.SHARED}
    return info.step


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigkill_mid_save_never_leaves_a_valid_looking_partial(tmp_path, mode: str) -> None:
    rng = random.Random(1234)  # the test's own RNG: kill points are reproducible
    extra = ("--async",) if mode == "async" else ()
    last_step = 0
    for _ in range(KILLS):
        proc = start_saver(tmp_path, *extra)
        time.sleep(rng.uniform(0.05, 0.6))  # the kill point: wherever the saver is then
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not list(tmp_path.glob("checkpoints/*/MANIFEST.json")):
            continue  # killed during the very first save: nothing committed yet
        try:
            step = check_reader_view(tmp_path)
        except NoValidCheckpoint:
            pytest.fail("killed saves made every checkpoint invalid")
        assert step >= last_step, "resume went backwards"
        last_step = step
    assert last_step > 0, "no save ever committed: the kill points were all too early"
