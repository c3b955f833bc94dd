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
