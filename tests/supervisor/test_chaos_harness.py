"""`spotsafe chaos` at a small N: random SIGTERMs and SIGKILLs of the child and of the
supervisor itself, then the same final state as an uninterrupted run, bit for bit."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from spotsafe.supervisor.chaos import plan
from tests.supervisor.conftest import REPO, child_env

SEED = 9  # term-supervisor, kill-child (during start-up), kill-supervisor, kill-mid-save
TRAIN = ["sh", "-c", 'exec "$0" -m tests.support.guarded_train "$SPOTSAFE_STORE" "$@"',
         sys.executable, "--epochs", "20", "--every", "3", "--step-s", "0.01"]  # fmt: skip


def test_plans_are_seeded() -> None:
    a = plan(50, rng=random.Random(SEED), min_delay_s=0.0, max_delay_s=1.0)
    assert a == plan(50, rng=random.Random(SEED), min_delay_s=0.0, max_delay_s=1.0)
    assert {i.kind for i in a} == {
        "term-child", "kill-child", "kill-mid-save", "term-supervisor", "kill-supervisor"
    }  # fmt: skip
    assert all(0.0 <= i.delay_s <= 1.0 for i in a)


def test_chaos_with_four_interruptions_ends_identical(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "spotsafe.cli", "chaos", "--kills", "4", "--seed", str(SEED),
            "--max-delay-s", "1.5", "--workdir", str(tmp_path), "--", *TRAIN]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=child_env(),
                          timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interruptions: 4 of 4" in done.stdout
    assert "kill-supervisor 1" in done.stdout and "term-supervisor 1" in done.stdout
    assert "final state: IDENTICAL" in done.stdout
    # The supervisor was started once, plus once after each supervisor interruption.
    assert "supervisors started: 3" in done.stdout


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue  # ended while we looked
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_stopping_the_harness_leaves_no_supervisor_or_job_behind(tmp_path: Path) -> None:
    import signal
    import time

    long_run = [*TRAIN[:4], "--epochs", "1000", "--every", "3", "--step-s", "0.05"]
    argv = [sys.executable, "-m", "spotsafe.cli", "chaos", "--kills", "50", "--seed", "1",
            "--max-delay-s", "30", "--workdir", str(tmp_path), "--", *long_run]  # fmt: skip
    harness = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL)
    store = str(tmp_path / "chaos-store")
    deadline = time.monotonic() + 60
    while len(_processes_mentioning(store)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # wait until the supervisor and its child both run
    assert len(_processes_mentioning(store)) >= 2, "the job never started"
    harness.send_signal(signal.SIGTERM)
    harness.wait(timeout=60)
    deadline = time.monotonic() + 20
    while _processes_mentioning(store) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(store) == []
