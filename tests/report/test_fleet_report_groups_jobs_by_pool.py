"""``spotsafe report --fleet PREFIX``: every job under a prefix (a directory tree or an
``s3://`` prefix on the loopback S3 server), summed up per pool; and the command's errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spotsafe.cli import cli
from spotsafe.report import account_fleet, account_job
from spotsafe.storage import Store, open_store
from spotsafe.supervisor.job import JobRecord
from tests.report.scripted import Plan, write_attempt


def scripted_job(store: Store, job_id: str, *, pool: str, kills: int, priced: bool = True) -> None:
    """A job of `kills` SIGKILLed attempts (each 10 steps of 1 s, 5 s start-up, a save at
    every 10th step) and a last attempt that succeeds."""
    record = JobRecord.open(store, job_id=job_id)
    prices: dict[str, Any] = {"spot": 1.0 if priced else None, "on_demand": 3.0,
                              "instances": 1, "pool": pool}  # fmt: skip
    start, step = 0.0, 0
    for n in range(1, kills + 2):
        last = n == kills + 1
        plan = Plan(n=n, start=start, boot_s=5.0, restored=step or None,
                    restore_s=None if not step else 1.0, last=step + 12,
                    how="success" if last else "kill", tail_s=0.0,
                    end_step=step + 12 if last else step + 10, progress=True)  # fmt: skip
        times = write_attempt(store, record, plan, prices=prices)
        start, step = times["end"] + 2.0, step + 10


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet")
    scripted_job(open_store(str(root / "team-a" / "one")), "one", pool="critical", kills=0)
    scripted_job(open_store(str(root / "team-a" / "two")), "two", pool="critical", kills=2)
    scripted_job(open_store(str(root / "team-b" / "deep" / "three")), "three",
                 pool="experiments", kills=1, priced=False)  # fmt: skip
    (root / "not-a-job").mkdir()
    return root


def test_every_job_is_found_and_pools_add_up(fleet: Path) -> None:
    doc = account_fleet(str(fleet), now_s=10_000.0).to_json()
    assert doc["schema"] == 1
    assert [j["job_id"] for j in doc["jobs"]] == ["one", "two", "three"]
    assert all("attempts" not in j and "saves" not in j for j in doc["jobs"])
    jobs = {j: account_job(str(fleet / p), now_s=10_000.0)
            for j, p in (("one", "team-a/one"), ("two", "team-a/two"),
                         ("three", "team-b/deep/three"))}  # fmt: skip
    critical = doc["pools"]["critical"]
    assert (critical["jobs"], critical["interruptions"]) == (2, 2)
    useful = jobs["one"].useful_s + jobs["two"].useful_s
    total = jobs["one"].total_s + jobs["two"].total_s
    assert critical["goodput"] == pytest.approx(useful / total)
    assert critical["replayed_hours"] == pytest.approx(2 * 2.0 / 3600)  # 2 kills, 2 steps each
    saved = [j.cost["saved"] for j in (jobs["one"], jobs["two"]) if j.cost]
    assert critical["cost_saved"] == pytest.approx(sum(s for s in saved if s is not None))
    experiments = doc["pools"]["experiments"]
    assert (experiments["jobs"], experiments["interruptions"]) == (1, 1)
    assert experiments["cost_saved"] is None  # no spot price recorded: never guessed


def test_the_command_prints_the_fleet(fleet: Path) -> None:
    runner = CliRunner()
    as_json = runner.invoke(cli, ["report", "--fleet", str(fleet), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert sorted(json.loads(as_json.output)["pools"]) == ["critical", "experiments"]
    tables = runner.invoke(cli, ["report", "--fleet", str(fleet)])
    assert tables.exit_code == 0, tables.output
    for part in ("critical", "experiments", "one", "two", "three"):
        assert part in tables.output


def test_an_s3_prefix_is_a_fleet_too(s3_bucket: str) -> None:
    prefix = f"s3://{s3_bucket}/runs"
    scripted_job(open_store(f"{prefix}/a"), "a", pool="standard", kills=1)
    scripted_job(open_store(f"{prefix}/nested/b"), "b", pool="standard", kills=0)
    doc = account_fleet(prefix, now_s=10_000.0).to_json()
    assert [j["job_id"] for j in doc["jobs"]] == ["a", "b"]
    assert doc["pools"]["standard"]["interruptions"] == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give a job's STORE"),
        (["x", "--fleet", "y"], "give a job's STORE"),
        (["{empty}"], "no job here"),
        (["{missing}"], "no job here"),
        (["--fleet", "{missing}"], "no such directory"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    argv = [a.format(empty=tmp_path / "empty", missing=tmp_path / "missing") for a in args]
    result = CliRunner().invoke(cli, ["report", *argv])
    assert result.exit_code == 2
    assert says in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
