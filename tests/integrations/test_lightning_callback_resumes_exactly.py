"""Lightning with SpotsafeCallback: SIGTERM inside a gradient-accumulation window stops after
that optimizer step (after an epoch's last batch, one step later) with a verified checkpoint
and exit 75; ``fit`` again resumes by itself (no ckpt_path) and ends bit for bit where the
uninterrupted run ends, with loader workers, a shuffling sampler, dropout, noise from torch,
numpy and python, validation twice an epoch and an epoch-interval LR scheduler. A SIGKILL
mid-save and a corrupt newest checkpoint fall back, still exact. Next to it, Lightning's own
documented way (``ModelCheckpoint`` + ``fit(ckpt_path=...)``): exit 0 on SIGTERM, and a resume
that differs from its uninterrupted run.

One child process (tests/support/integrations_lightning.py) imports lightning once and forks
a real process per run; the stop step is random (printed on failure), between 4 and 17 of 18.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 18
PER_EPOCH = 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    stop = random.Random().randint(4, STEPS - 1)
    work = tmp_path_factory.mktemp("lightning")
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        SPOTSAFE_CLOUD="none",
        SPOTSAFE_ALLOW_EPHEMERAL="1",
    )
    for name in ("SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.integrations_lightning", str(work), str(stop)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results: dict[str, Any] = json.loads((work / "results.json").read_text())
    return results


def why(runs: dict[str, Any], name: str) -> str:
    return f"stop step {runs['stop_step']}; {name}:\n{runs[name]['tail']}"


def stopped_at(runs: dict[str, Any]) -> int:
    stop: int = runs["stop_step"]
    # Not after an epoch's last batch, nor before a validation (twice an epoch).
    return stop + 1 if stop % (PER_EPOCH // 2) == 0 else stop


def test_sigterm_mid_window_stops_after_that_step_with_exit_75(runs: dict[str, Any]) -> None:
    term = runs["term"]
    assert term["status"] == 75, why(runs, "term")
    assert term["steps"][-1] == stopped_at(runs), why(runs, "term")
    assert runs["term_ckpts"][0] == [stopped_at(runs), "valid"], runs["term_ckpts"]


def test_fit_again_resumes_bitwise_exact(runs: dict[str, Any]) -> None:
    reference = runs["reference"]
    assert reference["status"] == 0 and reference["final"], why(runs, "reference")
    resume = runs["resume"]
    assert resume["status"] == 0, why(runs, "resume")
    assert resume["steps"][0] == runs["killed_ckpts"][1][0] + 1, why(runs, "resume")
    assert resume["final"] == reference["final"], why(runs, "resume")


def test_sigkill_mid_save_leaves_no_valid_partial(runs: dict[str, Any]) -> None:
    assert runs["resume_killed"]["status"] == -9, why(runs, "resume_killed")
    assert runs["killed_ckpts"][0] == [runs["kill_at"], "partial"], runs["killed_ckpts"]


def test_corrupt_newest_is_skipped_and_resume_stays_exact(runs: dict[str, Any]) -> None:
    states = dict((step, state) for step, state in runs["corrupt_ckpts"])
    assert states[stopped_at(runs)] == "quarantined", runs["corrupt_ckpts"]
    previous = runs["term_ckpts"][1][0]  # the newest checkpoint before the stop's
    corrupt = runs["corrupt_resume"]
    assert corrupt["steps"][0] == previous + 1, why(runs, "corrupt_resume")
    assert corrupt["final"] == runs["reference"]["final"], why(runs, "corrupt_resume")


def test_lightnings_own_path_exits_0_and_resumes_inexactly(runs: dict[str, Any]) -> None:
    # What spotsafe adds: Lightning's own SIGTERM handling ends the run with exit 0 (it
    # reads as success), and fit(ckpt_path=last.ckpt) does not end where the
    # uninterrupted run ends (no RNG state, the loader starts its epoch over).
    assert runs["native_term"]["status"] == 0, why(runs, "native_term")
    assert runs["native_term"]["steps"][-1] < STEPS, why(runs, "native_term")
    native = runs["native_resume"]
    assert native["status"] == 0, why(runs, "native_resume")
    assert native["final"] != runs["native_reference"]["final"], why(runs, "native_resume")
