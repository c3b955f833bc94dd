"""SpotsafeTrainer: SIGTERM inside a gradient-accumulation window stops at that optimizer step
with a verified checkpoint and exit 75; running the same command again resumes by itself and
ends bit for bit where an uninterrupted plain Trainer ends; a SIGKILL mid-save and a corrupt
newest checkpoint fall back to the previous one, still exact. Next to it, the Trainer's own
path: killed by the same SIGTERM, and resumed silently from a corrupt checkpoint-N.

One child process (tests/support/integrations_hf.py) imports transformers once and forks a
real process per run; the stop step is random (printed on failure), between 4 and 11 of 12.
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
STEPS = 12
EVERY = 3  # the child's SpotsafeCallback saves every 3 steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    stop = random.Random().randint(4, STEPS - 1)
    work = tmp_path_factory.mktemp("hf")
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        SPOTSAFE_CLOUD="none",
        SPOTSAFE_ALLOW_EPHEMERAL="1",
    )
    for name in ("SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.integrations_hf", str(work), str(stop)],
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


def test_sigterm_mid_window_stops_at_that_step_with_exit_75(runs: dict[str, Any]) -> None:
    stop = runs["stop_step"]
    term = runs["term"]
    assert term["status"] == 75, why(runs, "term")
    assert term["steps"][-1] == stop, why(runs, "term")  # the window finished, no step more
    assert runs["term_ckpts"][0] == [stop, "valid"], runs["term_ckpts"]


def test_same_command_resumes_bitwise_exact(runs: dict[str, Any]) -> None:
    plain = runs["plain"]
    assert plain["status"] == 0 and plain["final"], why(runs, "plain")
    resume = runs["resume"]
    assert resume["status"] == 0, why(runs, "resume")
    assert resume["final"] == plain["final"], why(runs, "resume")


def test_sigkill_mid_save_falls_back_to_the_previous_checkpoint(runs: dict[str, Any]) -> None:
    stop, kill_at = runs["stop_step"], runs["kill_at"]
    assert runs["resume_killed"]["status"] == -9, why(runs, "resume_killed")
    assert runs["resume_killed"]["steps"][0] == stop + 1, why(runs, "resume_killed")
    assert runs["killed_ckpts"][0] == [kill_at, "partial"], runs["killed_ckpts"]
    assert runs["resume"]["steps"][0] == stop + 1, why(runs, "resume")


def test_corrupt_newest_is_skipped_and_resume_stays_exact(runs: dict[str, Any]) -> None:
    stop = runs["stop_step"]
    states = dict((step, state) for step, state in runs["corrupt_ckpts"])
    assert states[stop] == "quarantined", runs["corrupt_ckpts"]
    previous = (stop - 1) // EVERY * EVERY  # the newest periodic save before the stop
    corrupt = runs["corrupt_resume"]
    assert corrupt["steps"][0] == previous + 1, why(runs, "corrupt_resume")
    assert corrupt["final"] == runs["plain"]["final"], why(runs, "corrupt_resume")


def test_the_trainers_own_path_dies_and_resumes_from_corrupt_bytes(runs: dict[str, Any]) -> None:
    # What spotsafe adds: a plain Trainer dies of the SIGTERM (no handler, no save at the
    # stop step) and resume_from_checkpoint=True takes the corrupt newest checkpoint-N.
    assert runs["native_term"]["status"] == -15, why(runs, "native_term")
    native = runs["native_corrupt_resume"]
    assert native["status"] == 0 and native["steps"][0] == 7, why(runs, "native_corrupt_resume")
    assert native["final"] != runs["plain"]["final"]
