"""`spotsafe advise`: the job's measured numbers in, an interval near theory, the lost-work
budget that allows it, and the best pool out; a store without a job is one line, exit 2;
``--fleet`` gives every job under a prefix its own advice, from the fleet report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from spotsafe.cli import cli
from spotsafe.policy import PRESETS
from spotsafe.policy.interval import daly_interval_s
from spotsafe.report import account_job
from spotsafe.simulate.advise import advise, measure
from spotsafe.storage import Store, open_store
from spotsafe.supervisor.job import JobRecord
from tests.report.scripted import Plan, write_attempt

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


def scripted_job(store: Store, job_id: str, *, pool: str, kills: int) -> None:
    """A job of `kills` SIGKILLed attempts (10 steps of 1 s each, a save every 10th step) and a
    last attempt that succeeds, written by spotsafe's own writers (tests/report/scripted)."""
    record = JobRecord.open(store, job_id=job_id)
    prices = {"spot": 1.0, "on_demand": 3.0, "instances": 1, "pool": pool}
    start, step = 0.0, 0
    for n in range(1, kills + 2):
        last = n == kills + 1
        plan = Plan(n=n, start=start, boot_s=5.0, restored=step or None,
                    restore_s=None if not step else 1.0, last=step + 12,
                    how="success" if last else "kill", tail_s=0.0,
                    end_step=step + 12 if last else step + 10, progress=True)  # fmt: skip
        times = write_attempt(store, record, plan, prices=prices)
        start, step = times["end"] + 2.0, step + 10


def test_a_fleet_is_each_jobs_own_advice(tmp_path: Path) -> None:
    scripted_job(open_store(str(tmp_path / "a" / "one")), "one", pool="critical", kills=0)
    scripted_job(open_store(str(tmp_path / "b" / "two")), "two", pool="experiment", kills=2)
    (tmp_path / "c" / "job").mkdir(parents=True)
    (tmp_path / "c" / "job" / "job.json").write_text("garbled")
    runner = CliRunner()
    result = runner.invoke(cli, ["advise", "--fleet", str(tmp_path), "--trials", "50", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [j["job_id"] for j in doc["jobs"]] == ["one", "two"]
    # The numbers are those of `spotsafe advise STORE` on each job: the fleet report's
    # accounting, not a second one.
    for job in doc["jobs"]:
        alone = advise(account_job(job["store"]).to_json(), PRESETS, trials=50).to_json()
        assert {k: v for k, v in job.items() if k not in ("job_id", "store")} == alone
    assert len(doc["skipped"]) == 1 and "garbled" in doc["skipped"][0]["reason"]
    tables = runner.invoke(cli, ["advise", "--fleet", str(tmp_path), "--trials", "50"])
    assert tables.exit_code == 0
    assert "one" in tables.stdout and "experiment" in tables.stdout
    assert "left out" in tables.stdout and "of 2 jobs would finish sooner" in tables.stdout


def test_store_and_fleet_are_one_or_the_other(tmp_path: Path) -> None:
    for args in ([], [str(tmp_path), "--fleet", str(tmp_path)]):
        result = CliRunner().invoke(cli, ["advise", *args])
        assert result.exit_code == 2 and "give a job's STORE, or --fleet PREFIX" in result.stderr
