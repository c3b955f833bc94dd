"""Accelerate with ``train_state`` and ``AcceleratedGuard``: SIGTERM inside a
gradient-accumulation window stops at that optimizer step (the window finishes; gradients
synced) with a verified checkpoint and exit 75; the same command again resumes mid-epoch and
ends bit for bit where the plain loop without spotsafe ends (a prepared loader with workers
and shuffling, dropout, noise from torch, numpy and python, two epochs). A SIGKILL mid-save
leaves no valid partial, and a corrupt newest checkpoint is skipped, still exact. Next to it,
Accelerate's own documented way (``save_state`` / ``load_state`` + ``skip_first_batches``):
the process dies of the SIGTERM, and the resume differs from the uninterrupted run.

The runs are forked by the session's one integrations child (tests/support/
integrations_runs.py, scenarios in tests/support/integrations_accelerate.py); the stop step is
random (printed on failure).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import integrations_runs


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> dict[str, Any]:
    return integrations_runs.results(request, "accelerate")


def why(runs: dict[str, Any], name: str) -> str:
    return f"stop step {runs['stop_step']}; {name}:\n{runs[name]['tail']}"


def test_sigterm_mid_window_stops_at_that_step_with_exit_75(runs: dict[str, Any]) -> None:
    stop = runs["stop_step"]
    term = runs["term"]
    assert term["status"] == 75, why(runs, "term")
    assert term["steps"][-1] == stop, why(runs, "term")  # the window finished, no step more
    assert runs["term_ckpts"][0] == [stop, "valid"], runs["term_ckpts"]


def test_same_command_resumes_bitwise_exact(runs: dict[str, Any]) -> None:
    reference = runs["reference"]  # the plain loop, no spotsafe
    assert reference["status"] == 0 and reference["final"], why(runs, "reference")
    resume = runs["resume_killed"]  # killed only in its final save, after its last step
    assert resume["steps"][0] == runs["stop_step"] + 1, why(runs, "resume_killed")
    assert resume["steps"][-1] == runs["steps"], why(runs, "resume_killed")
    assert resume["final"] == reference["final"], why(runs, "resume_killed")


def test_sigkill_mid_save_leaves_no_valid_partial(runs: dict[str, Any]) -> None:
    assert runs["resume_killed"]["status"] == -9, why(runs, "resume_killed")
    assert runs["killed_ckpts"][0] == [runs["steps"], "partial"], runs["killed_ckpts"]


def test_corrupt_newest_is_skipped_and_resume_stays_exact(runs: dict[str, Any]) -> None:
    # The store after the kill: a partial final checkpoint, and the newest valid one had a
    # byte flipped; resume passes both and falls back to the one before.
    corrupted, fallback = runs["killed_ckpts"][1][0], runs["fallbacks"][0]
    assert [corrupted, "quarantined"] in runs["corrupt_ckpts"], runs["corrupt_ckpts"]
    corrupt = runs["corrupt_resume"]
    assert corrupt["status"] == 0, why(runs, "corrupt_resume")
    assert corrupt["steps"][0] == fallback + 1, why(runs, "corrupt_resume")
    assert corrupt["final"] == runs["reference"]["final"], why(runs, "corrupt_resume")


def test_accelerates_own_path_dies_and_resumes_inexactly(runs: dict[str, Any]) -> None:
    # What spotsafe adds: with save_state every 3 steps, the SIGTERM at step 7 kills the
    # process (no handler, nothing saved at the stop step), and load_state +
    # skip_first_batches from step 6 does not end where the uninterrupted run ends.
    assert runs["native_term"]["status"] == -15, why(runs, "native_term")
    native = runs["native_resume"]
    assert native["status"] == 0 and native["steps"][0] == 7, why(runs, "native_resume")
    assert native["final"] != runs["reference"]["final"], why(runs, "native_resume")
