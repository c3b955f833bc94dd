"""The findings doctor reads from a job's history: ``interval`` (a job that saves far more
often than its save cost and interruption rate call for) and ``one-policy`` (a fleet whose
jobs all run under one pool). The jobs are scripted records with known arithmetic: saves
every 10.5 s that block 0.5 s and persist 2 s, no interruptions, so the pool's MTBI prior
stands and the advised interval is far longer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from spotsafe.cli import cli
from spotsafe.doctor import history
from spotsafe.policy import load_pools
from spotsafe.report import account_job
from spotsafe.storage import open_store
from spotsafe.supervisor.job import JobRecord
from tests.report.scripted import Plan, write_attempt


def scripted_job(path: Path, job_id: str, *, pool: str) -> None:
    """One attempt of 40 one-second steps, a save at every 10th, then success."""
    store = open_store(str(path))
    record = JobRecord.open(store, job_id=job_id)
    plan = Plan(n=1, start=0.0, boot_s=5.0, restored=None, restore_s=None, last=40,
                how="success", tail_s=0.0, end_step=40, progress=True)  # fmt: skip
    write_attempt(store, record, plan,
                  prices={"spot": 1.0, "on_demand": 3.0, "instances": 1, "pool": pool})  # fmt: skip


def findings(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["doctor", *args, "--json"])
    assert result.exit_code in (0, 1), result.output
    found: list[dict[str, Any]] = json.loads(result.output)["findings"]
    return found


def test_a_job_that_saves_far_too_often_gets_the_interval_finding(tmp_path: Path) -> None:
    scripted_job(tmp_path / "job", "often", pool="standard")
    facts = history.interval_facts(account_job(str(tmp_path / "job")), load_pools(None))
    assert facts is not None and facts.saves == 4
    assert facts.interval_s == 10.5  # 10 steps of 1 s and a 0.5 s blocking save
    assert facts.advised_s > 3 * facts.interval_s
    (finding,) = [f for f in findings("--store", str(tmp_path / "job")) if f["id"] == "interval"]
    assert finding["severity"] == "warning"
    assert finding["evidence"]["interval_s"] == 10.5
    assert finding["evidence"]["advised_interval_s"] == round(facts.advised_s, 3)


def test_a_fleet_under_one_pool_gets_the_one_policy_finding(tmp_path: Path) -> None:
    scripted_job(tmp_path / "fleet" / "a", "a", pool="standard")
    scripted_job(tmp_path / "fleet" / "b", "b", pool="standard")
    (finding,) = [
        f for f in findings("--fleet", str(tmp_path / "fleet")) if f["id"] == "one-policy"
    ]
    assert finding["evidence"]["pools"] == ["standard"]
    assert finding["evidence"]["jobs"] == 2
    assert len(finding["evidence"]["intervals_off"]) == 2


def test_a_fleet_of_two_pools_is_still_told_its_intervals_are_off(tmp_path: Path) -> None:
    scripted_job(tmp_path / "fleet" / "a", "a", pool="standard")
    scripted_job(tmp_path / "fleet" / "b", "b", pool="critical")
    (finding,) = [
        f for f in findings("--fleet", str(tmp_path / "fleet")) if f["id"] == "one-policy"
    ]
    assert finding["evidence"]["pools"] == ["critical", "standard"]
    assert "run under pool" not in finding["what"]
    assert "2 job(s) save far from the interval" in finding["what"]
