"""Each framework integration under 2-rank DDP on CPU (gloo): a SIGTERM delivered to rank 1
alone, inside a gradient-accumulation window, stops both ranks after that optimizer step
with exit 75 and one checkpoint at that step; the same command again, in fresh processes,
ends bit for bit where an uninterrupted 2-rank run ends, on each rank (weights and optimizer
state); and with the stop step's checkpoint corrupted, both ranks skip it (quarantined),
fall back to the one before, and still end exactly.

Why these are faithful DDP jobs, though no torchrun starts them: each rank is its own
process (forked by the session's integrations child, which imported the frameworks once;
tests/support/integrations_common.py ``run_ranks``) with the environment torchrun gives its
workers (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, a fresh MASTER_PORT
per run, TORCHELASTIC_RUN_ID, ...). Nothing in the scenario initializes torch.distributed:
each framework finds that environment and does it as under torchrun (Lightning's
TorchElasticEnvironment with ``strategy="ddp"``, the Trainer's and Accelerate's
PartialState), so gloo, the DDP wrapper, the distributed samplers and the collectives are
the frameworks' own. The SIGTERM is a real signal that rank 1 sends to its own pid at the
chosen point of the window; rank 0 only learns of it through spotsafe's per-step all-reduce.
Workloads: those of the single-process tests (tests/support/integrations_{hf,lightning,
accelerate}.py) with twice the samples, so each rank trains the same number of steps.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import integrations_runs

FRAMEWORKS = ["transformers_ddp", "lightning_ddp", "accelerate_ddp"]


@pytest.fixture(scope="module", params=FRAMEWORKS)
def runs(request: pytest.FixtureRequest) -> dict[str, Any]:
    found = integrations_runs.results(request, request.param)
    return {**found, "part": request.param}


def why(runs: dict[str, Any], name: str) -> str:
    tails = "\n".join(f"rank {r}:\n{rank['tail']}" for r, rank in enumerate(runs[name]))
    return f"{runs['part']}, stop step {runs['stop_step']}; {name}:\n{tails}"


def test_sigterm_to_one_rank_stops_both_at_that_step_with_exit_75(runs: dict[str, Any]) -> None:
    stop = runs["stop_step"]
    term = runs["term"]
    assert [rank["status"] for rank in term] == [75, 75], why(runs, "term")
    # Both ranks finished the window the signal came in and trained no step more.
    assert [rank["steps"][-1] for rank in term] == [stop, stop], why(runs, "term")
    assert "peer-rank" in term[0]["tail"], why(runs, "term")  # rank 0 was told, not signalled
    assert runs["term_ckpts"][0] == [stop, "valid"], runs["term_ckpts"]


def test_resume_in_fresh_processes_is_bitwise_exact_on_each_rank(runs: dict[str, Any]) -> None:
    reference, resume = runs["reference"], runs["resume"]
    assert [rank["status"] for rank in reference] == [0, 0], why(runs, "reference")
    assert all(rank["final"] for rank in reference), why(runs, "reference")
    assert [rank["status"] for rank in resume] == [0, 0], why(runs, "resume")
    for rank in resume:
        assert rank["steps"][0] == runs["stop_step"] + 1, why(runs, "resume")
        assert rank["steps"][-1] == runs["steps"], why(runs, "resume")
    assert [r["final"] for r in resume] == [r["final"] for r in reference], why(runs, "resume")


def test_corrupt_newest_is_skipped_and_resume_stays_exact(runs: dict[str, Any]) -> None:
    # The stop step's checkpoint had a byte flipped: both ranks pass it (one verdict for
    # all ranks), quarantine it, and resume from the checkpoint before.
    assert [runs["stop_step"], "quarantined"] in runs["corrupt_ckpts"], runs["corrupt_ckpts"]
    fallback = runs["fallbacks"][0]
    corrupt = runs["corrupt_resume"]
    assert [rank["status"] for rank in corrupt] == [0, 0], why(runs, "corrupt_resume")
    assert [rank["steps"][0] for rank in corrupt] == [fallback + 1] * 2, why(runs, "corrupt_resume")
    finals = [rank["final"] for rank in runs["reference"]]
    assert [rank["final"] for rank in corrupt] == finals, why(runs, "corrupt_resume")
