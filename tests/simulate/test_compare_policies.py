"""`spotsafe simulate --compare`: capacity policies on the same interruptions. A run that falls
back is the spot run up to its switch; the deadline-aware rule never misses a deadline that
on-demand capacity can meet, costs less than falling back after N interruptions, and is
offered as the pool's ``deadline_h``, which the comparison then reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spotsafe.cli import cli
from spotsafe.simulate import WASTE_KINDS, Job, Poisson, Trace, run_trials
from spotsafe.simulate.compare import compare
from spotsafe.simulate.engine import Switch

H = 3600.0
JOB = Job(work_s=20 * H, checkpoint_s=30.0, restore_s=60.0, restart_s=300.0)
PROCESS = Poisson(2 * H)


def test_a_fallback_is_the_spot_run_until_its_nth_interruption() -> None:
    spot = run_trials(JOB, PROCESS, 900.0, trials=300, seed=4)
    back = run_trials(
        JOB, PROCESS, 900.0, trials=300, seed=4, switch=Switch(after_interruptions=10)
    )
    few = spot.interruptions < 10
    assert few.any() and (~few).any()
    # Fewer than 10 interruptions: nothing changes. Otherwise it stops at the 10th, and from
    # there on-demand capacity finishes the job without the spot run's later losses.
    assert np.array_equal(back.makespan_s[few], spot.makespan_s[few])
    assert (back.on_demand_s[few] == 0).all()
    assert (back.interruptions[~few] == 10).all()
    assert (back.on_demand_s[~few] > 0).all()
    assert (back.makespan_s[~few] <= spot.makespan_s[~few] + 1e-6).all()
    total = sum(back.waste_s[k] for k in WASTE_KINDS) + JOB.work_s
    assert np.allclose(total, back.makespan_s)


@pytest.mark.parametrize("deadline_h", [22.0, 24.0])
def test_the_deadline_rule_meets_the_deadline_for_less(deadline_h: float) -> None:
    c = compare(JOB, PROCESS, 900.0, trials=400, seed=1, deadline_s=deadline_h * H,
                on_demand_after=2, spot_per_hour=1.0, on_demand_per_hour=3.0)  # fmt: skip
    r = c.results
    assert r["on_demand"].misses == 0.0 and r["spot"].misses is not None
    assert r["spot"].misses > 0.1  # spot alone is late in many runs
    assert r["deadline"].misses == 0.0  # on Poisson interruptions, never
    cost = {name: p.summary.cost["total"] for name, p in r.items()}
    assert cost["deadline"] < cost["fallback"] < cost["on_demand"]  # type: ignore[operator]
    assert 0 < r["deadline"].on_demand_h < r["fallback"].on_demand_h
    assert c.best == "deadline"


def test_the_deadline_rule_stops_waiting_for_spot_in_time() -> None:
    """A trace without spot for an hour after every 3 h 20 min of capacity: runs that wait for
    spot miss a tight deadline; the rule takes on-demand capacity while waiting, in time."""
    outages = Trace.from_slots(([0] * 20 + [1] * 6) * 3, 600.0)
    job = Job(work_s=10 * H, checkpoint_s=30.0, restore_s=60.0, restart_s=300.0)
    c = compare(job, outages, 900.0, trials=300, seed=2, deadline_s=14 * H, on_demand_after=1,
                spot_per_hour=1.0, on_demand_per_hour=3.0)  # fmt: skip
    r = c.results
    assert r["spot"].misses is not None and r["spot"].misses > 0.5
    assert r["deadline"].misses == 0.0
    assert r["deadline"].summary.waste_h["capacity_wait"] > 0  # it did wait, while it could
    cost = {name: p.summary.cost["total"] for name, p in r.items()}
    assert cost["deadline"] < cost["fallback"]  # type: ignore[operator]


def test_a_loose_deadline_stays_on_spot_and_an_impossible_one_starts_on_demand() -> None:
    loose = compare(JOB, PROCESS, 900.0, trials=200, seed=1, deadline_s=40 * H)
    assert loose.results["deadline"].on_demand_h == 0.0
    assert loose.results["deadline"].summary == loose.results["spot"].summary
    tight = compare(JOB, PROCESS, 900.0, trials=200, seed=1, deadline_s=20.8 * H)
    assert tight.results["deadline"].summary == tight.results["on_demand"].summary
    assert tight.best is None  # no prices, no ranking


def simulate(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["simulate", "--work-h", "20", "--mtbi-h", "2", "--trials", "200", *args]
    )
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_reads_the_pools_deadline_and_offers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spotsafe.toml").write_text(
        "[pools.nightly]\ndeadline_h = 24\non_demand_after = 1\n"
        "spot_price_per_hour = 1.0\non_demand_price_per_hour = 3.0\nmax_lost_work_s = 3600\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = simulate("--compare", "--pool", "nightly", "--json")
    assert code == 0, err
    doc = json.loads(out)["compare"]
    assert doc["deadline_h"] == 24.0 and doc["on_demand_after"] == 1
    assert list(doc["policies"]) == ["spot", "on_demand", "fallback", "deadline"]
    for p in doc["policies"].values():
        assert {"makespan_h", "cost", "on_demand_h", "deadline_misses", "goodput"} <= set(p)
    assert doc["best"] == "deadline"
    code, out, _ = simulate("--compare", "--pool", "nightly", "--deadline-h", "23.5")
    assert code == 0
    words = " ".join(out.split())
    assert "deadline-aware *" in words and "set deadline_h = 23.5 in [pools.nightly]" in words


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--deadline-h", "30"], "--deadline-h: only with --compare"),
        (["--compare", "--sweep"], "--compare, --sweep"),
        (["--compare", "--deadline-h", "0"], "--deadline-h = 0"),
    ],
)
def test_bad_compare_flags_are_one_line(args: list[str], says: str) -> None:
    code, out, err = simulate(*args)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and says in err, err
