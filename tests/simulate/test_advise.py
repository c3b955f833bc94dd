"""`spotsafe advise`: the job's measured numbers in, an interval near theory, the lost-work
budget that allows it, and the best pool out; a store without a job is one line, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from spotsafe.cli import cli
from spotsafe.policy import PRESETS
from spotsafe.policy.interval import daly_interval_s
from spotsafe.simulate.advise import advise, measure

H = 3600.0


def report(interruptions: int) -> dict[str, Any]:
    """A job report (schema 1) of 40 h of work, saves blocking 30 s every 5 min."""
    return {
        "job_id": "j",
        "pool": "standard",
        "goodput": {"useful_s": 40 * H, "total_s": 44 * H},
        "checkpoint": {
            "blocking_s": {"p50": 30.0},
            "persist_s": {"p50": 0.0},
            "restore_s": {"p50": 60.0},
        },
        "retry": {
            "seconds_total": 1 * H,
            "per_interruption": [{"seconds": 360.0, "restore_s": 60.0}] * interruptions,
        },
        "interruptions": {"total": interruptions},
        "replayed": {"per_interruption": [{"seconds": 20.0, "steps": 10}]},
        "saves": [
            {"attempt": 1, "t": 300.0 * i, "step": i, "blocking_s": 30.0, "persist_s": 0.0}
            for i in range(10)
        ],
    }


def test_measured_numbers_become_the_simulators_inputs() -> None:
    m = measure(report(20))
    assert (m.job.checkpoint_s, m.job.restore_s, m.job.restart_s, m.job.step_s) == (
        30.0, 60.0, 300.0, 2.0
    )  # fmt: skip
    # The Guard's estimator: prior 4 h worth 2 interruptions, 20 seen in 43 h on capacity.
    assert m.mtbi_s == (2 * 4 * H + 43 * H) / 22
    assert m.interval_now_s == 300.0


def test_it_recommends_an_interval_near_theory_and_the_budget_for_it() -> None:
    advice = advise(report(20), PRESETS, trials=300)
    theory = daly_interval_s(30.0, advice.measured.mtbi_s) + 30.0
    assert abs(advice.best.interval_s / theory - 1) < 0.15
    assert advice.max_lost_work_s == round(advice.best.interval_s + 30.0)
    # Saving every 5 min with 30 s blocking costs more than the recommendation.
    assert advice.best.makespan_h["mean"] < advice.now.makespan_h["mean"]
    assert advice.pool in PRESETS
    assert advice.to_json()["recommended"]["pool"] == advice.pool


def test_a_store_without_a_job_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["advise", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
