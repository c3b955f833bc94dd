"""The HTML dashboard: one self-contained file drawn from the job report's JSON (schema 1).

``spotsafe dashboard STORE -o report.html`` renders `job_dashboard` of
``account_job(store).to_json()``; ``--fleet PREFIX`` renders `fleet_dashboard` of
``account_fleet(prefix).to_json()``. The input is the documented JSON, not the Python
objects, so a report saved with ``spotsafe report --json`` draws the same page.

One job's page: a timeline of its attempts (coloured by exit class, with the interruptions,
first training steps and checkpoints on it), step progress per attempt with the work lost at
each interruption and its replay marked, the distribution of checkpoint times (blocking,
persist, restore), goodput with its badput breakdown, the replayed and retry seconds per
interruption, and cost bars. A fleet's page: per-pool bars (jobs, interruptions, goodput,
replayed hours, cost saved), goodput per job, and a table of the jobs.

Why plotly: it writes one HTML file with plotly.js inlined (``include_plotlyjs`` once per
page), which opens offline and fetches nothing; the plots stay interactive (hover for an
attempt's exit class, a checkpoint's step and blocking time; zoom into a timeline of days);
it is well kept and widely used. matplotlib gives static images only; Altair/Vega-Lite and
Bokeh load their JavaScript from a CDN unless inlined by hand.

plotly is an extra (``pip install 'spotsafe[dashboard]'``): it is imported here only, when a
page is drawn, so ``import spotsafe`` and ``spotsafe report`` never pay for it.

Example:
    >>> points = progress_points(
    ...     {"attempt": 2, "started_s": 100.0, "first_step_s": 104.0, "ended_s": 130.0,
    ...      "restored_step": 40, "furthest_step": 70},
    ...     [{"t": 110.0, "attempt": 2, "step": 50}, {"t": 120.0, "attempt": 2, "step": 60}])
    >>> points
    [(104.0, 40), (110.0, 50), (120.0, 60), (130.0, 70)]
    >>> time_at_step(points, 55)
    115.0
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spotsafe._version import __version__
from spotsafe.errors import ConfigError

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "INSTALL_HINT",
    "fleet_dashboard",
    "job_dashboard",
    "progress_points",
    "require_plotly",
    "time_at_step",
    "write_html",
]

INSTALL_HINT = "pip install 'spotsafe[dashboard]'"

#: One colour per exit class (and "running"); unknown classes are grey.
EXIT_COLORS = {
    "success": "#2ca02c",
    "preempted": "#ff7f0e",
    "unclean": "#8c564b",
    "cut_off": "#8c564b",
    "crash": "#d62728",
    "hung": "#9467bd",
    "no_progress": "#9467bd",
    "running": "#1f77b4",
}
BADPUT_ORDER = ("startup", "restore", "checkpoint_blocking", "replayed", "retry_wait", "other")
BADPUT_COLORS = ("#9edae5", "#aec7e8", "#ffbb78", "#d62728", "#c5b0d5", "#c7c7c7")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MAX_LEGEND_ATTEMPTS = 8  # more attempts than this: the progress legend names exit classes
MAX_MARKERS = 400  # more points than this: lines without markers, smaller checkpoint marks


def require_plotly() -> None:
    """Raise a one-line ConfigError naming the extra when plotly is not installed."""
    try:
        import plotly  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"the dashboard needs plotly, which is not installed: {INSTALL_HINT}"
        ) from e


# ------------------------------------------------------------------ data, no plotly


def _when(t: float) -> str:
    """Wall-clock seconds as the UTC time plotly's date axes read.

    Example:
        >>> _when(0.25)
        '1970-01-01 00:00:00.250000'
    """
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _seconds(s: float | None) -> str:
    """A duration for people.

    Example:
        >>> _seconds(0.0123), _seconds(75), _seconds(7384), _seconds(None)
        ('12 ms', '75.0 s', '2.05 h', '-')
    """
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 3600:
        return f"{s:.1f} s"
    return f"{s / 3600:.2f} h"


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r * 100:.1f}%"


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _attempt_end(attempt: Mapping[str, Any], saves: Sequence[Mapping[str, Any]]) -> float:
    """When an attempt ended, or for a running one the last time it was seen."""
    if attempt.get("ended_s") is not None:
        return float(attempt["ended_s"])
    seen = [attempt["started_s"], attempt.get("first_step_s") or attempt["started_s"]]
    seen += [s["t"] for s in saves if s.get("attempt") == attempt["attempt"]]
    return float(max(seen))


def progress_points(
    attempt: Mapping[str, Any], saves: Sequence[Mapping[str, Any]]
) -> list[tuple[float, int]]:
    """(time, step) points of one attempt's progress: its first step (at the restored step,
    or 0), its checkpoints, and the furthest step it reached at its end; steps never go back.

    Without a recorded first step (its events died with it) the line starts at the attempt's
    start: an estimate, drawn dotted. Empty when nothing shows that it took a step.
    """
    n = attempt["attempt"]
    start_step = int(attempt.get("restored_step") or 0)
    first = attempt.get("first_step_s")
    points = [(float(s["t"]), int(s["step"])) for s in saves if s.get("attempt") == n]
    furthest = attempt.get("furthest_step")
    if furthest is None:
        furthest = attempt.get("end_step")
    if furthest is not None and attempt.get("ended_s") is not None:
        points.append((float(attempt["ended_s"]), int(furthest)))
    if first is not None:
        points.append((float(first), start_step))
    elif any(step > start_step for _, step in points):
        points.append((float(attempt["started_s"]), start_step))
    points.sort()
    out: list[tuple[float, int]] = []
    for t, step in points:
        if out and step < out[-1][1]:
            continue  # a late, older save (async) does not move progress back
        out.append((t, step))
    return out if len(out) > 1 or first is not None else []


def time_at_step(points: Sequence[tuple[float, int]], step: int) -> float | None:
    """When the progress line `points` reached `step` (linear between points), or None when
    it never did."""
    if not points or step < points[0][1] or step > points[-1][1]:
        return None
    for (t0, s0), (t1, s1) in itertools.pairwise(points):
        if s0 <= step <= s1:
            if s1 == s0:
                return t0
            return t0 + (t1 - t0) * (step - s0) / (s1 - s0)
    return points[0][0]


def _attempt_label(a: Mapping[str, Any]) -> str:
    return f"attempt {a['attempt']}" + (" (on-demand)" if a.get("capacity") == "on_demand" else "")


# ------------------------------------------------------------------ figures


def _figure(title: str, **layout: Any) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    defaults: dict[str, Any] = {
        "template": "plotly_white",
        "margin": {"l": 60, "r": 20, "t": 80, "b": 40},
        "height": 360,
        # Above the plot, right: below it, the legend would sit on the axis title.
        "legend": {
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0,
            "xanchor": "right",
            "x": 1.0,
            "traceorder": "normal",
        },
    }
    fig.update_layout(title={"text": title, "x": 0.01}, **{**defaults, **layout})
    return fig


def _time_range(report: Mapping[str, Any]) -> list[str] | None:
    """The job's span with 2% either side: the timeline and the progress share it, so an
    attempt's bar sits above its progress line."""
    attempts = report["attempts"]
    if not attempts:
        return None
    t0 = min(a["started_s"] for a in attempts)
    t1 = max(_attempt_end(a, report["saves"]) for a in attempts)
    pad = max(t1 - t0, 1.0) * 0.02
    return [_when(t0 - pad), _when(t1 + pad)]


def _timeline(report: Mapping[str, Any]) -> go.Figure:
    import plotly.graph_objects as go

    attempts = report["attempts"]
    saves = report["saves"]
    fig = _figure(
        "Attempts: exit class, interruptions, checkpoints",
        height=max(260, 90 + 32 * len(attempts)),
    )
    by_class: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
    for a in attempts:
        cls = a.get("exit_class") or ("running" if a.get("ended_s") is None else "unknown")
        end = _attempt_end(a, saves)
        row = _attempt_label(a)
        hover = (
            f"{row}: {cls}<br>exit code {a.get('returncode')}<br>"
            f"restored step {a.get('restored_step')}, furthest {a.get('furthest_step')}"
            f"{' (estimated)' if a.get('furthest_estimated') else ''}<br>"
            f"{_seconds(end - a['started_s'])}"
        )
        xs, ys, texts = by_class.setdefault(cls, ([], [], []))
        xs += [_when(a["started_s"]), _when(end), None]
        ys += [row, row, None]
        texts += [hover, hover, None]
    for cls, (xs, ys, texts) in by_class.items():
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, text=texts, mode="lines", name=cls, hoverinfo="text",
                line={"width": 18, "color": EXIT_COLORS.get(cls, "#7f7f7f")},
            )
        )  # fmt: skip
    rows = {a["attempt"]: _attempt_label(a) for a in attempts}
    firsts = [a for a in attempts if a.get("first_step_s") is not None]
    if firsts:
        fig.add_trace(
            go.Scatter(
                x=[_when(a["first_step_s"]) for a in firsts],
                y=[rows[a["attempt"]] for a in firsts],
                text=[f"first step at {a.get('restored_step') or 0}, restore "
                      f"{_seconds(a.get('restore_s'))}" for a in firsts],
                mode="markers", name="first step", hoverinfo="text",
                marker={"symbol": "triangle-right", "size": 10, "color": "#17becf"},
            )
        )  # fmt: skip
    shown = [s for s in saves if s.get("attempt") in rows]
    if shown:
        fig.add_trace(
            go.Scatter(
                x=[_when(s["t"]) for s in shown],
                y=[rows[s["attempt"]] for s in shown],
                text=[f"checkpoint at step {s['step']}<br>blocking {_seconds(s['blocking_s'])}, "
                      f"persist {_seconds(s['persist_s'])}" for s in shown],
                mode="markers", name="checkpoint", hoverinfo="text",
                marker={"symbol": "diamond", "size": 9 if len(shown) <= MAX_MARKERS else 5,
                        "color": "rgba(31,31,31,0.6)"},
            )
        )  # fmt: skip
    stops = [a for a in attempts if a.get("interruption_source") and a.get("ended_s") is not None]
    if stops:
        fig.add_trace(
            go.Scatter(
                x=[_when(a["ended_s"]) for a in stops],
                y=[rows[a["attempt"]] for a in stops],
                text=[f"interrupted: {a['interruption_source']}" for a in stops],
                mode="markers", name="interruption", hoverinfo="text",
                marker={"symbol": "x", "size": 14, "color": "#d62728",
                        "line": {"width": 1, "color": "#000"}},
            )
        )  # fmt: skip
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=list(rows.values()))
    fig.update_xaxes(title_text="time (UTC)", type="date", range=_time_range(report))
    return fig


def _progress(report: Mapping[str, Any]) -> go.Figure | None:
    import plotly.graph_objects as go

    attempts = report["attempts"]
    saves = report["saves"]
    lines = {a["attempt"]: progress_points(a, saves) for a in attempts}
    if not any(lines.values()):
        return None
    fig = _figure("Step progress per attempt; work lost at an interruption, and its replay")
    # A long job's legend names exit classes, not its many attempts (hover names each one).
    per_attempt = len(attempts) <= MAX_LEGEND_ATTEMPTS
    markers = sum(len(p) for p in lines.values()) <= MAX_MARKERS
    shown: set[str] = set()
    for a in attempts:
        points = lines[a["attempt"]]
        if not points:
            continue
        cls = a.get("exit_class") or "running"
        estimated = a.get("furthest_estimated") or a.get("first_step_s") is None
        fig.add_trace(
            go.Scatter(
                x=[_when(t) for t, _ in points], y=[s for _, s in points],
                mode="lines+markers" if markers else "lines",
                name=_attempt_label(a) if per_attempt else cls,
                legendgroup=None if per_attempt else cls,
                showlegend=per_attempt or cls not in shown,
                line={"width": 2, "color": EXIT_COLORS.get(cls, "#7f7f7f"),
                      "dash": "dot" if estimated else "solid"},
                marker={"size": 5},
                hovertemplate="%{x}<br>step %{y}<extra>" + _attempt_label(a) + "</extra>",
            )
        )  # fmt: skip
        shown.add(cls)
    numbers = sorted(lines)
    lost: list[Any] = []
    lost_y: list[Any] = []
    replay: list[Any] = []
    replay_y: list[Any] = []
    for p in report["replayed"]["per_interruption"]:
        lo, hi = p.get("from_step"), p.get("to_step")
        if lo is None or hi is None or hi <= lo:
            continue
        own = lines.get(p["attempt"], [])
        t0, t1 = time_at_step(own, lo), time_at_step(own, hi)
        if t0 is not None and t1 is not None:
            lost += [_when(t0), _when(t1), None]
            lost_y += [lo, hi, None]
        later = [n for n in numbers if n > p["attempt"] and lines[n]]
        if later:
            nxt = lines[later[0]]
            r0, r1 = time_at_step(nxt, lo), time_at_step(nxt, min(hi, nxt[-1][1]))
            if r0 is not None and r1 is not None and r1 >= r0:
                replay += [_when(r0), _when(r1), None]
                replay_y += [lo, min(hi, nxt[-1][1]), None]
    if lost:
        fig.add_trace(
            go.Scatter(
                x=lost, y=lost_y, mode="lines", name="lost at the interruption",
                line={"width": 10, "color": "rgba(214,39,40,0.35)"}, hoverinfo="y",
            )
        )  # fmt: skip
    if replay:
        fig.add_trace(
            go.Scatter(
                x=replay, y=replay_y, mode="lines", name="replayed",
                line={"width": 10, "color": "rgba(255,127,14,0.45)"}, hoverinfo="y",
            )
        )  # fmt: skip
    fig.update_xaxes(title_text="time (UTC)", type="date", range=_time_range(report))
    fig.update_yaxes(title_text="step", rangemode="tozero")
    return fig


def _checkpoint_times(report: Mapping[str, Any]) -> go.Figure | None:
    import plotly.graph_objects as go

    saves = report["saves"]
    series = {
        "blocking (per save)": [s["blocking_s"] for s in saves if s.get("blocking_s") is not None],
        "persist (per save)": [s["persist_s"] for s in saves if s.get("persist_s") is not None],
        "restore (per attempt)": [
            a["restore_s"] for a in report["attempts"] if a.get("restore_s") is not None
        ],
    }
    if not any(series.values()):
        return None
    stats = report["checkpoint"].get("blocking_s") or {}
    title = f"Checkpoint time: {report['checkpoint']['count']} saves"
    if stats:
        title += f", blocking p50 {_seconds(stats['p50'])}, p95 {_seconds(stats['p95'])}"
    fig = _figure(title)
    for (name, values), color in zip(
        series.items(), ("#ff7f0e", "#1f77b4", "#2ca02c"), strict=True
    ):
        if values:
            fig.add_trace(
                go.Box(
                    x=values, name=name, boxpoints="all", jitter=0.4, pointpos=0,
                    marker={"color": color, "size": 5}, orientation="h",
                )
            )  # fmt: skip
    fig.update_xaxes(title_text="seconds", rangemode="tozero")
    fig.update_layout(showlegend=False)
    return fig


def _goodput(report: Mapping[str, Any]) -> go.Figure:
    import plotly.graph_objects as go

    g = report["goodput"]
    fig = _figure(
        f"Goodput {_ratio(g.get('ratio'))} of {_seconds(g['total_s'])} wall time; "
        "badput by category",
        height=260,
        barmode="stack",
    )
    parts = [("useful", g["useful_s"], "#2ca02c")]
    badput = g["badput_s"]
    names = [*BADPUT_ORDER, *sorted(set(badput) - set(BADPUT_ORDER))]
    colors = [*BADPUT_COLORS, *["#7f7f7f"] * len(names)]
    parts += [(n, badput[n], c) for n, c in zip(names, colors, strict=False) if n in badput]
    for name, seconds, color in parts:
        fig.add_trace(
            go.Bar(
                y=["wall time"], x=[seconds], name=name.replace("_", " "), orientation="h",
                marker={"color": color},
                hovertemplate=f"{name}: {_seconds(seconds)}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_xaxes(title_text="seconds")
    return fig


def _per_interruption(report: Mapping[str, Any]) -> go.Figure | None:
    import plotly.graph_objects as go

    replayed = {p["attempt"]: p for p in report["replayed"]["per_interruption"]}
    retry = {r["attempt"]: r for r in report["retry"]["per_interruption"]}
    numbers = sorted(set(replayed) | set(retry))
    if not numbers:
        return None
    fig = _figure(
        f"Per interruption: replayed {_seconds(report['replayed']['seconds_total'])} "
        f"({_steps(report['replayed']['steps_total'])}), retry "
        f"{_seconds(report['retry']['seconds_total'])}",
        barmode="stack",
    )
    labels = [
        f"attempt {n}" + (f" ({replayed[n]['source']})" if n in replayed else "") for n in numbers
    ]
    columns = (
        ("replayed work", replayed, "seconds", "#d62728"),
        ("backoff wait", retry, "backoff_s", "#c5b0d5"),
        ("start-up", retry, "startup_s", "#9edae5"),
        ("restore", retry, "restore_s", "#aec7e8"),
    )
    for name, rows, key, color in columns:
        values = [rows[n][key] if n in rows else 0.0 for n in numbers]
        fig.add_trace(
            go.Bar(
                x=labels, y=values, name=name, marker={"color": color},
                hovertemplate="%{x}<br>" + name + ": %{y:.2f} s<extra></extra>",
            )
        )  # fmt: skip
    fig.update_yaxes(title_text="seconds")
    return fig


def _cost(report: Mapping[str, Any]) -> go.Figure | None:
    import plotly.graph_objects as go

    cost = report.get("cost")
    if not cost:
        return None
    fig = _figure(
        f"Cost: saved {_money(cost['saved'])} ({_ratio(cost.get('saved_ratio'))}) net of "
        f"replayed work; SageMaker's figure would say {_ratio(cost.get('sagemaker_ratio'))}",
        height=300,
    )
    names = ["spot (all attempts)", "on-demand (useful time)", "saved"]
    values = [cost["spot"], cost["on_demand_equivalent"], cost["saved"]]
    saved_color = "#2ca02c" if cost["saved"] >= 0 else "#d62728"
    fig.add_trace(
        go.Bar(
            x=names, y=values, text=[_money(v) for v in values], textposition="auto",
            marker={"color": ["#ff7f0e", "#1f77b4", saved_color]},
            hovertemplate="%{x}: %{y:,.2f}<extra></extra>", showlegend=False,
        )
    )  # fmt: skip
    fig.update_yaxes(title_text="cost (the pool's currency)")
    return fig


def _pool_bars(fleet: Mapping[str, Any]) -> go.Figure | None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pools = fleet["pools"]
    if not pools:
        return None
    names = sorted(pools)
    panels = (
        ("jobs", "jobs", 1.0),
        ("interruptions", "interruptions", 1.0),
        ("goodput (%)", "goodput", 100.0),
        ("replayed hours", "replayed_hours", 1.0),
        ("cost saved", "cost_saved", 1.0),
    )
    fig: go.Figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    for col, (title, key, scale) in enumerate(panels, 1):
        values = [pools[n].get(key) for n in names]
        fig.add_trace(
            go.Bar(
                x=names, y=[None if v is None else v * scale for v in values], name=title,
                marker={"color": "#1f77b4"}, showlegend=False,
                hovertemplate="%{x}<br>" + title + ": %{y}<extra></extra>",
            ),
            row=1, col=col,
        )  # fmt: skip
    fig.update_layout(
        title={"text": "Per pool", "x": 0.01},
        template="plotly_white",
        height=360,
        margin={"l": 50, "r": 20, "t": 70, "b": 40},
    )
    return fig


def _job_goodput(fleet: Mapping[str, Any]) -> go.Figure | None:
    import plotly.graph_objects as go

    jobs = [j for j in fleet["jobs"] if j["goodput"].get("ratio") is not None]
    if not jobs:
        return None
    fig = _figure("Goodput per job", height=max(260, 90 + 22 * len(jobs)))
    for pool in sorted({j.get("pool") or "-" for j in jobs}):
        mine = [j for j in jobs if (j.get("pool") or "-") == pool]
        fig.add_trace(
            go.Bar(
                y=[j["job_id"] for j in mine], x=[j["goodput"]["ratio"] * 100 for j in mine],
                orientation="h", name=pool,
                text=[f"{j['interruptions']['total']} interruptions" for j in mine],
                hovertemplate="%{y}: %{x:.1f}%<br>%{text}<extra>" + pool + "</extra>",
            )
        )  # fmt: skip
    fig.update_xaxes(title_text="goodput (%)", range=[0, 100])
    fig.update_yaxes(autorange="reversed")
    return fig


# ------------------------------------------------------------------ pages

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{color:#555;font-weight:600} .figure{margin:8px 0 20px;border:1px solid #eee}
.note{color:#666;font-size:13px;margin:4px 0 16px}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, subtitle: str, blocks: Sequence[str]) -> str:
    from plotly.offline import get_plotlyjs

    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        # plotly.js inlined once for every figure: the page fetches nothing.
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(title)}</h1><div class='sub'>{html.escape(subtitle)} · "
        f"spotsafe {html.escape(__version__)} · generated {generated}</div>"
        + "\n".join(blocks)
        + "</body></html>\n"
    )


def _div(fig: go.Figure, div_id: str) -> str:
    body: str = fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG
    )
    return f"<div class='figure'>{body}</div>"


def _saved(cost: Mapping[str, Any] | None) -> str:
    if not cost:
        return "no prices"
    return f"{_money(cost['saved'])} ({_ratio(cost.get('saved_ratio'))})"


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def job_dashboard(report: Mapping[str, Any]) -> str:
    """The HTML page for one job, from ``JobReport.to_json()`` (schema 1).

    Raises:
        ConfigError: plotly is not installed (the message names the extra).
    """
    require_plotly()
    r = report
    cost = r.get("cost")
    summary = _table(
        ["state", "attempts", "interruptions", "resume rate", "replayed", "retry",
         "goodput", "checkpoints", "cost saved"],
        [[
            r["state"], len(r["attempts"]),
            f"{r['interruptions']['total']} "
            + (", ".join(f"{k} {v}" for k, v in sorted(r["interruptions"]["by_source"].items()))
               if r["interruptions"]["by_source"] else ""),
            _ratio(r["resume"].get("rate")),
            f"{_steps(r['replayed']['steps_total'])}, {_seconds(r['replayed']['seconds_total'])}",
            _seconds(r["retry"]["seconds_total"]),
            _ratio(r["goodput"].get("ratio")),
            r["checkpoint"]["count"],
            _saved(cost),
        ]],
    )  # fmt: skip
    blocks = [summary, _div(_timeline(r), "timeline")]
    optional = (
        ("progress", _progress(r), "No training step was recorded: no progress to draw."),
        ("checkpoint-times", _checkpoint_times(r), "No checkpoint was saved or restored."),
        ("goodput", _goodput(r), ""),
        ("per-interruption", _per_interruption(r), "No interruptions."),
        (
            "cost",
            _cost(r),
            "No cost: the pool has no prices (set spot_price_per_hour and "
            "on_demand_price_per_hour in [pools.NAME]).",
        ),
    )
    for div_id, fig, otherwise in optional:
        blocks.append(_div(fig, div_id) if fig is not None else _note(otherwise))
    pool = r.get("pool") or "-"
    return _page(f"spotsafe job {r['job_id']}", f"store {r['store']} · pool {pool}", blocks)


def fleet_dashboard(fleet: Mapping[str, Any]) -> str:
    """The HTML page for every job under a prefix, from ``FleetReport.to_json()``.

    Raises:
        ConfigError: plotly is not installed (the message names the extra).
    """
    require_plotly()
    pools = fleet["pools"]
    pool_table = _table(
        ["pool", "jobs", "interruptions", "goodput", "replayed hours", "cost saved"],
        [[n, p["jobs"], p["interruptions"], _ratio(p.get("goodput")),
          f"{p['replayed_hours']:.3f}", _money(p.get("cost_saved"))]
         for n, p in sorted(pools.items())],
    )  # fmt: skip
    job_table = _table(
        ["job", "pool", "state", "interruptions", "replayed", "goodput", "cost saved", "store"],
        [[j["job_id"], j.get("pool") or "-", j["state"], j["interruptions"]["total"],
          _seconds(j["replayed"]["seconds_total"]), _ratio(j["goodput"].get("ratio")),
          _money((j.get("cost") or {}).get("saved")), j["store"]]
         for j in fleet["jobs"]],
    )  # fmt: skip
    blocks = [pool_table]
    bars, per_job = _pool_bars(fleet), _job_goodput(fleet)
    blocks.append(_div(bars, "pools") if bars is not None else _note("No jobs under the prefix."))
    if per_job is not None:
        blocks.append(_div(per_job, "jobs-goodput"))
    blocks.append(job_table)
    return _page(f"spotsafe fleet: {len(fleet['jobs'])} jobs", f"prefix {fleet['prefix']}", blocks)


def write_html(path: str | os.PathLike[str], page: str) -> Path:
    """Write `page` to `path` whole or not at all (a temporary file renamed over it)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
