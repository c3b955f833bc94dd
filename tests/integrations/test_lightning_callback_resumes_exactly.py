"""Lightning with SpotsafeCallback: SIGTERM inside a gradient-accumulation window stops after
that optimizer step (after an epoch's last batch or before a validation, one step later) with
a verified checkpoint and exit 75; ``fit`` again resumes by itself (no ckpt_path) and ends bit
for bit where the uninterrupted run ends, with loader workers, a shuffling sampler, dropout,
noise from torch, numpy and python, validation twice an epoch and an epoch-interval LR
scheduler. A SIGKILL mid-save leaves no valid partial, and a corrupt newest checkpoint is
skipped, still exact. Next to it, Lightning's own documented way (``ModelCheckpoint`` +
``fit(ckpt_path=...)``): exit 0 on SIGTERM, and a resume that differs from its uninterrupted
run.

The runs are forked by the session's one integrations child (tests/support/
integrations_runs.py, scenarios in tests/support/integrations_lightning.py); the stop step is
random (printed on failure).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import integrations_runs

PER_EPOCH = 6


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> dict[str, Any]:
    return integrations_runs.results(request, "lightning")


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
    resume = runs["resume_killed"]  # killed only in its final save, after its last step
    assert resume["steps"][0] == stopped_at(runs) + 1, why(runs, "resume_killed")
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


def test_lightnings_own_path_exits_0_and_resumes_inexactly(runs: dict[str, Any]) -> None:
    # What spotsafe adds: Lightning's own SIGTERM handling ends the run with exit 0 (it
    # reads as success), and fit(ckpt_path=last.ckpt) does not end where the
    # uninterrupted run ends (no RNG state, the loader starts its epoch over).
    assert runs["native_term"]["status"] == 0, why(runs, "native_term")
    assert runs["native_term"]["steps"][-1] < runs["steps"], why(runs, "native_term")
    native = runs["native_resume"]
    assert native["status"] == 0, why(runs, "native_resume")
    assert native["final"] != runs["native_reference"]["final"], why(runs, "native_resume")
