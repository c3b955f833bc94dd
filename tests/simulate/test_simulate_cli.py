"""`spotsafe simulate` on the command line: stable JSON keys, tables for people, traces in
both formats, prices from a pool, the same numbers for the same seed, and one-line errors
(exit 2) that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spotsafe.cli import cli

FAST = ["--work-h", "20", "--checkpoint-s", "30", "--trials", "200"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["simulate", *args])
    return result.exit_code, result.stdout, result.stderr


def as_json(*args: str) -> dict[str, Any]:
    code, out, err = run(*FAST, "--json", *args)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_the_documented_keys_are_there() -> None:
    doc = as_json("--mtbi-h", "2", "--sweep", "--sweep-points", "7")
    assert doc["schema"] == 1 and doc["trials"] == 200
    for key in ("mean", "p50", "p95", "max"):
        assert doc["makespan_h"][key] >= 20.0
    assert 0 < doc["goodput"] < 1
    assert set(doc["waste_h"]) == {
        "checkpoint", "replayed", "restore", "restart", "notice", "capacity_wait"
    }  # fmt: skip
    assert doc["optimum"]["interval_s"] == doc["interval_s"]
    assert doc["optimum"]["makespan_h"] == doc["makespan_h"]["mean"]
    assert len(doc["sweep"]) == 7
    assert doc["cost"]["total"] is None  # no price known
    assert doc["theory"]["daly_interval_s"] > 0


def test_the_same_seed_gives_the_same_numbers() -> None:
    a, b = as_json("--mtbi-h", "3", "--seed", "7"), as_json("--mtbi-h", "3", "--seed", "7")
    c = as_json("--mtbi-h", "3", "--seed", "8")
    assert a == b
    assert a["makespan_h"] != c["makespan_h"]


def test_auto_is_the_pools_policy_and_prices_come_from_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spotsafe.toml").write_text(
        "[pools.gpu]\nspot_price_per_hour = 2.0\non_demand_price_per_hour = 6.0\n"
        "instances = 2\nmax_lost_work_s = 300\n"
    )
    monkeypatch.chdir(tmp_path)
    doc = as_json("--mtbi-h", "4", "--pool", "gpu")
    assert doc["policy"] == {
        "kind": "auto", "pool": "gpu", "max_lost_work_s": 300.0, "min_interval_s": 30.0
    }  # fmt: skip
    assert doc["interval_s"] <= 300 - 30  # the lost-work cap: T + C <= 300 s
    assert doc["cost"]["total"] == pytest.approx(doc["makespan_h"]["mean"] * 2.0 * 2)
    assert doc["cost"]["saved"] > 0


def test_a_band_takes_its_documented_rate() -> None:
    doc = as_json("--band", "5-10%", "--interval-s", "1800")
    assert doc["process"]["kind"] == "band"
    assert doc["process"]["mtbi_h"] == pytest.approx(-720 / __import__("math").log(0.9))


def test_both_trace_formats_load(tmp_path: Path) -> None:
    csv = tmp_path / "kills.csv"
    csv.write_text("hours\n1.5\n4\n6.5\n")
    doc = as_json("--trace", str(csv), "--interval-s", "900")
    assert doc["process"] == {
        "kind": "trace",
        "name": "kills.csv",
        "mtbi_h": pytest.approx(6.5 / 3),
    }
    assert doc["interruptions"] > 0
    spot = tmp_path / "spot.json"
    spot.write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [0] * 20 + [1] * 4}))
    doc = as_json("--trace", str(spot), "--interval-s", "900")
    assert doc["process"]["mtbi_h"] == pytest.approx(20 * 600 / 3600)
    assert doc["waste_h"]["capacity_wait"] > 0  # 40 min without capacity every 4 h


def test_people_get_tables() -> None:
    code, out, _ = run(*FAST, "--mtbi-h", "2", "--interval-s", "1200")
    assert code == 0
    assert "fixed interval: save every 1,200 s" in out
    assert "where the time goes" in out and "replayed" in out


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "trace file not found"),
        ("1\n2\nabc\n", "line 3: 'abc' is not a number"),
        ("1\n-2\n", "line 2: -2: an interruption time must be"),
        ("3\n2\n", "line 2: 2 h is not after the time before it"),
        ('{"metadata": {}, "data": [0, 1]}', "metadata.gap_seconds = None"),
        ('{"metadata": {"gap_seconds": 60}, "data": [0, 1, 2]}', "data[2] = 2"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, 1]}', "never available"),
    ],
)
def test_a_bad_trace_is_one_line(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "t.txt"
    if content is not None:
        path.write_text(content)
    code, out, err = run(*FAST, "--trace", str(path))
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and says in err, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--checkpoint-s", "-5"], "--checkpoint-s = -5"),
        (["--persist-s", "600", "--interval-s", "300"], "below the persist time"),
        (["--interval-s", "1e6"], "--interval-s = 1e+06: longer than the job"),
        (["--interval-s", "20"], "longer than the blocking time"),
        (["--mtbi-h", "2", "--band", "<5%"], "give one interruption process"),
        (["--band", "7%"], "not a Spot Instance Advisor band"),
        (["--auto", "--sweep"], "give one policy"),
        (["--pool", "gpus"], "unknown pool 'gpus'"),
        (["--sweep", "--sweep-range", "9:3"], "--sweep-range = 9:3"),
    ],
)
def test_impossible_inputs_are_one_line(args: list[str], says: str) -> None:
    code, out, err = run(*FAST, *args)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and says in err, err
