"""The dashboard of a real interrupted job renders offline in headless Chromium.

One real supervised run (a tiny torch model under a Guard, killed by SIGKILL after step 5,
resumed from step 4, stopped by SIGTERM: the job of tests/test_metrics.py, run once per
session) gives the job; ``spotsafe dashboard`` writes its page; the
page is opened from disk in Debian's chromium (``make browser``) through playwright, with
every network request recorded: the page must draw every figure from what it carries, with
no console error, and match the report it was drawn from. Screenshots are kept in
``test-artifacts/`` (ignored by git) for a person to look at.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spotsafe.cli import cli
from spotsafe.report import account_fleet, account_job
from tests.supervisor.conftest import REPO
from tests.test_metrics import interrupted_run

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
# Per plotly figure: its traces (name, type, points), the trace layers drawn in the SVG, how
# many painted paths they hold, and the figure's size on the page.
DRAWN = """() => Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')].map(el => {
    const box = el.getBoundingClientRect();
    const drawn = [...el.querySelectorAll('g.trace path')]
        .filter(p => (p.getAttribute('d') || '').length > 4).length;
    const data = el.data.map(t => ({name: t.name, type: t.type,
                                    n: (t.x || []).filter(v => v !== null).length}));
    return [el.id, {data: data, traces: el.querySelectorAll('g.trace').length, drawn: drawn,
                    width: box.width, height: box.height}];
}))"""
JOB_FIGURES = {"timeline", "progress", "checkpoint-times", "goodput", "per-interruption", "cost"}


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prefix holding one real job (the metrics test's, run once per session): attempt 1
    killed after step 5 (checkpoint at 4), attempt 2 resumed and stopped by SIGTERM."""
    run, _ = interrupted_run(tmp_path_factory)
    return run.store.parent


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def render(browser: Any, page_file: Path, screenshot: str) -> dict[str, Any]:
    """Open `page_file` offline; what the console said, what was requested, what was drawn."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_file.as_uri(), wait_until="load")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0")
    figures = page.evaluate(DRAWN)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    return {"errors": errors, "requests": requests, "figures": figures, "screenshot": shot}


def assert_drawn(seen: dict[str, Any], page_file: Path, expected: set[str]) -> None:
    assert seen["errors"] == []
    assert seen["requests"] == [page_file.as_uri()]  # the file itself, nothing else
    figures = seen["figures"]
    assert set(figures) == expected
    for name, fig in figures.items():
        assert fig["data"], name
        assert fig["traces"] >= len(fig["data"]) > 0, name  # every trace has its layer
        assert fig["drawn"] > 0, name  # and something was painted in it
        assert fig["width"] > 100 and fig["height"] > 100, name
    png = seen["screenshot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def trace(fig: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in fig["data"] if t["name"] == name)


def test_the_job_dashboard_renders_offline_and_shows_the_report(
    fleet_dir: Path, browser: Any, tmp_path: Path
) -> None:
    from plotly.offline import get_plotlyjs

    store = fleet_dir / "live"
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["dashboard", str(store), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count("Plotly.newPlot") == len(JOB_FIGURES)
    assert "<script src" not in page  # nothing loaded from elsewhere: plotly.js inlined,
    assert page.count(get_plotlyjs()[:2000]) == 1  # once for every figure

    seen = render(browser, out, "dashboard-job.png")
    assert_drawn(seen, out, JOB_FIGURES)
    report = account_job(str(store)).to_json()
    figs = seen["figures"]
    # What the page draws is the report: one bar per attempt and its class, one marker per
    # checkpoint and per interruption, the lost and replayed segment of the one kill.
    classes = {t["name"] for t in figs["timeline"]["data"] if t["type"] == "scatter"}
    assert {a["exit_class"] for a in report["attempts"]} == {"unclean", "preempted"} <= classes
    assert trace(figs["timeline"], "checkpoint")["n"] == len(report["saves"]) > 0
    assert trace(figs["timeline"], "interruption")["n"] == report["interruptions"]["total"] == 2
    replays = [p for p in report["replayed"]["per_interruption"]
               if p["from_step"] is not None and p["to_step"] is not None
               and p["to_step"] > p["from_step"]]  # fmt: skip
    progress = {t["name"] for t in figs["progress"]["data"]}
    assert {"attempt 1", "attempt 2"} <= progress
    assert len(replays) == 1  # step 5 lost (the kill), step 4 restored: one segment each
    assert {"lost at the interruption", "replayed"} <= progress
    assert report["cost"] is not None and figs["cost"]["data"][0]["n"] == 3
    assert len(figs["goodput"]["data"]) == 1 + len(report["goodput"]["badput_s"])


def test_the_fleet_dashboard_renders_per_pool_bars(
    fleet_dir: Path, browser: Any, tmp_path: Path
) -> None:
    out = tmp_path / "fleet.html"
    result = CliRunner().invoke(cli, ["dashboard", "--fleet", str(fleet_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    seen = render(browser, out, "dashboard-fleet.png")
    assert_drawn(seen, out, {"pools", "jobs-goodput"})
    fleet = account_fleet(str(fleet_dir)).to_json()
    panels = seen["figures"]["pools"]["data"]
    assert len(panels) == 5 and all(p["n"] == len(fleet["pools"]) == 1 for p in panels)
    assert "fast" in out.read_text()


def test_without_plotly_the_command_names_the_extra(
    fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)  # `import plotly` raises ImportError
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["dashboard", str(fleet_dir / "live"), "-o", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "spotsafe: the dashboard needs plotly, which is not installed: "
        "pip install 'spotsafe[dashboard]'"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.html"], "give a STORE or --fleet PREFIX"),
        (["STORE", "--fleet", "p", "-o", "x.html"], "give a STORE or --fleet PREFIX"),
        (["EMPTY", "-o", "x.html"], "no job here"),
        (["STORE", "-o", "missing/x.html"], "does not exist; create it"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    swap = {"STORE": str(fleet_dir / "live"), "EMPTY": str(tmp_path / "empty")}
    argv = ["dashboard", *(swap.get(a, a) for a in args)]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
