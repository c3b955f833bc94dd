"""The report of a real job under `spotsafe run`, interrupted at chosen steps.

One supervised run for the module: a tiny torch training loop under a Guard, saving every
4 steps, that
  attempt 1: SIGTERMs itself after step 7 (the Guard stops cleanly at step 8, exit 75);
  attempt 2: resumes from 8, corrupts its newest checkpoint (step 12) after step 13, then
             SIGKILLs its supervisor and itself (the machine died); a second supervisor
             takes the job over;
  attempt 3: falls back past the corrupt checkpoint to step 8 and finishes at step 24.
A SIGKILL seen by a live supervisor, and the exact arithmetic of every figure, are scripted
in test_the_report_adds_up.py (records written directly: no process start per attempt).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spotsafe.report import account_job
from tests.supervisor.conftest import REPO, child_env, write_pool

CHILD = [sys.executable, "-m", "tests.report.interrupted_child", "--steps", "24", "--every", "4",
         "1=term@7", "2=corrupt+killsup@13"]  # fmt: skip
TIMEOUT_S = 240


def supervise(store: Path, config: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "spotsafe.cli", "run", "--store", str(store), "--config",
            str(config), "--pool", "fast", "--", *CHILD]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=child_env(),
                          timeout=TIMEOUT_S, check=False)  # fmt: skip


def report_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spotsafe.cli", "report", *args],
                          capture_output=True, text=True, cwd=REPO, env=child_env(),
                          timeout=60, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("supervised")
    config = write_pool(root / "pools.toml", spot_price_per_hour=1.0,
                        on_demand_price_per_hour=3.0, instances=2)  # fmt: skip
    store = root / "store"
    first = supervise(store, config)
    assert first.returncode == -9, first.stderr[-3000:]  # attempt 2 killed its supervisor
    second = supervise(store, config)
    assert second.returncode == 0, second.stderr[-3000:]
    return store, account_job(str(store)).to_json()


def test_each_attempt_ended_as_scripted(job: tuple[Path, dict[str, Any]]) -> None:
    _, doc = job
    assert doc["state"] == "succeeded"
    attempts = doc["attempts"]
    assert [a["exit_class"] for a in attempts] == ["preempted", "unclean", "success"]
    assert [a["restored_step"] for a in attempts] == [None, 8, 8]
    assert [a["end_step"] for a in attempts] == [8, 12, 24]
    assert doc["interruptions"] == {"total": 2, "by_source": {"sigterm": 1, "unclean": 1}}


def test_furthest_steps_are_exact_or_marked_estimated(job: tuple[Path, dict[str, Any]]) -> None:
    _, doc = job
    stopped, lost, done = doc["attempts"]
    assert (stopped["furthest_step"], stopped["furthest_estimated"]) == (8, False)
    assert (done["furthest_step"], done["furthest_estimated"]) == (24, False)
    # The machine died with its supervisor: always an estimate, at least its own checkpoint
    # (12) and less than one save interval (4) past it.
    assert lost["furthest_estimated"] is True
    assert 12 <= lost["furthest_step"] <= 15


def test_resume_fell_back_past_the_corrupt_checkpoint(job: tuple[Path, dict[str, Any]]) -> None:
    _, doc = job
    assert doc["resume"] == {"attempts": 2, "succeeded": 1, "fell_back": 1, "fresh": 0,
                             "rate": 0.5}  # fmt: skip


def test_replayed_work_per_interruption(job: tuple[Path, dict[str, Any]]) -> None:
    _, doc = job
    term, machine = doc["replayed"]["per_interruption"]
    assert (term["source"], term["from_step"], term["to_step"], term["steps"]) == (
        "sigterm", 8, 8, 0)  # fmt: skip
    # resumed from 8 (the fall-back), so everything past 8 is done again: at least 4 steps
    assert (machine["source"], machine["from_step"]) == ("unclean", 8)
    assert machine["steps"] == machine["to_step"] - 8 and machine["steps"] >= 4
    assert machine["estimated"] is True
    assert doc["replayed"]["steps_total"] == machine["steps"]


def test_saves_retry_goodput_and_cost(job: tuple[Path, dict[str, Any]]) -> None:
    _, doc = job
    saved = {(s["attempt"], s["step"]) for s in doc["saves"]}
    assert {(1, 4), (1, 8), (3, 12), (3, 16), (3, 20), (3, 24)} <= saved
    assert doc["checkpoint"]["blocking_s"]["max"] > 0
    assert doc["checkpoint"]["restore_s"]["p50"] > 0  # attempts 2 and 3 restored
    retries = doc["retry"]["per_interruption"]
    assert [r["attempt"] for r in retries] == [1, 2]
    for r in retries:
        assert r["seconds"] == pytest.approx(r["backoff_s"] + r["startup_s"] + r["restore_s"])
        assert r["seconds"] > 0
    g = doc["goodput"]
    assert 0 < g["ratio"] < 1
    assert sum(g["badput_s"].values()) + g["useful_s"] == pytest.approx(g["total_s"])
    walls = sum(a["ended_s"] - a["started_s"] for a in doc["attempts"])
    cost = doc["cost"]
    assert cost["spot"] == pytest.approx(walls / 3600 * 1.0 * 2)  # spot price x 2 instances
    assert cost["on_demand_equivalent"] == pytest.approx(g["useful_s"] / 3600 * 3.0 * 2)
    assert cost["sagemaker_ratio"] == pytest.approx(1 - 1.0 / 3.0)


def test_the_tables_name_every_part(job: tuple[Path, dict[str, Any]]) -> None:
    store, _ = job
    out = report_cli(str(store))
    assert out.returncode == 0, out.stderr
    for part in ("Attempts", "sigterm", "unclean", "fell back 1", "goodput", "Cost", "~"):
        assert part in out.stdout, part
    as_json = report_cli(str(store), "--json")
    assert json.loads(as_json.stdout)["interruptions"]["total"] == 2
