"""``spotsafe simulate``: predict makespan, waste and cost of a checkpoint policy.

The library does the work (`spotsafe.simulate`); this module parses flags, builds the job,
the interruption process and the policy, shows progress on a terminal, and prints rich
tables or ``--json`` (schema in `spotsafe.simulate`).

Example:
    >>> parse_range("60:3600")
    (60.0, 3600.0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from spotsafe.cli._params import Number
from spotsafe.errors import ConfigError

if TYPE_CHECKING:
    from spotsafe.policy.pools import Pool
    from spotsafe.simulate.compare import Comparison
    from spotsafe.simulate.processes import Process
    from spotsafe.simulate.study import PolicyMode, Study

H = 3600.0
SECONDS = Number(float, 0, 365 * 86400.0)
HOURS = Number(float, 0, 100 * 8760.0, low_open=True)
PRICE = Number(float, 0, 1e6)


def parse_range(text: str) -> tuple[float, float]:
    """``MIN:MAX`` seconds for ``--sweep-range``, or a one-line ConfigError."""
    parts = text.split(":")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"--sweep-range = {text}: must be MIN:MAX in seconds, e.g. 60:3600"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise ConfigError(f"--sweep-range = {text}: need 0 < MIN < MAX (seconds)")
    return low, high


@click.command("simulate")
@click.option("--work-h", type=HOURS, required=True, help="Useful compute the job needs (hours).")
@click.option(
    "--step-s",
    type=SECONDS,
    default=0.0,
    show_default=True,
    help="One training step (s); saves start at step boundaries (0: continuous).",
)
@click.option(
    "--checkpoint-s",
    type=SECONDS,
    default=30.0,
    show_default=True,
    help="Seconds a save blocks training (C).",
)
@click.option(
    "--persist-s",
    type=SECONDS,
    default=0.0,
    show_default=True,
    help="Seconds after the block until a save is durable (P, background).",
)
@click.option(
    "--restore-s",
    type=SECONDS,
    default=60.0,
    show_default=True,
    help="Seconds to restore after a restart.",
)
@click.option(
    "--restart-s",
    type=SECONDS,
    default=300.0,
    show_default=True,
    help="Seconds from an interruption to training code running (new VM, start-up).",
)
@click.option(
    "--notice-s",
    type=SECONDS,
    default=0.0,
    show_default=True,
    help="Warning before an interruption (0: none).",
)
@click.option(
    "--mtbi-h", type=HOURS, default=None, help="Poisson interruptions: mean hours between them."
)
@click.option(
    "--band",
    default=None,
    metavar="BAND",
    help="AWS Spot Advisor band: '<5%', '5-10%', '10-15%', '15-20%' or '>20%'.",
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Interruption trace: CSV of times in hours, or spot-traces JSON.",
)
@click.option(
    "--interval-s",
    type=Number(float, 0, 1e9, low_open=True),
    default=None,
    help="Save every this many seconds (between save starts).",
)
@click.option(
    "--auto", "auto", is_flag=True, help="The Guard's Auto policy of the pool (the default)."
)
@click.option(
    "--sweep", "do_sweep", is_flag=True, help="Try a range of intervals; report the best."
)
@click.option(
    "--sweep-range",
    default=None,
    metavar="MIN:MAX",
    help="Intervals (s) a sweep tries (default: a quarter to 4x theory).",
)
@click.option(
    "--sweep-points",
    type=Number(int, 3, 200),
    default=25,
    show_default=True,
    help="Intervals a sweep tries.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Compare spot only, on-demand only, on-demand after N interruptions and the "
    "deadline-aware rule on the same interruptions.",
)
@click.option(
    "--deadline-h",
    type=HOURS,
    default=None,
    help="With --compare: hours from the start by which the job must finish (default: the "
    "pool's deadline_h).",
)
@click.option(
    "--on-demand-after",
    type=Number(int, 0, 1_000_000),
    default=None,
    help="With --compare: interruptions before the fallback to on-demand (default: the pool's "
    "on_demand_after, else 2).",
)
@click.option(
    "--pool",
    "pool_name",
    default=None,
    help="Pool for prices, instances, the Auto policy and the MTBI prior.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default ./spotsafe.toml or ./pyproject.toml).",
)
@click.option("--spot-price", type=PRICE, default=None, help="Spot price per instance-hour.")
@click.option(
    "--on-demand-price", type=PRICE, default=None, help="On-demand price per instance-hour."
)
@click.option(
    "--instances",
    type=Number(int, 1, 100_000),
    default=None,
    help="Instances one attempt runs on (default: the pool's).",
)
@click.option(
    "--trials",
    type=Number(int, 1, 10_000_000),
    default=2000,
    show_default=True,
    help="Independent runs simulated per interval.",
)
@click.option(
    "--seed",
    type=Number(int, 0, 2**63 - 1),
    default=0,
    show_default=True,
    help="Random seed: the same seed gives the same numbers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema 1).")
def command(**opts: Any) -> None:  # fmt: skip
    """Simulate a job under interruptions: makespan, waste, goodput and cost of a checkpoint
    interval, of the Guard's Auto policy, or of a sweep that finds the best interval.

    Interruptions: --mtbi-h, --band or --trace (default: the pool's MTBI prior).
    Policy: --interval-s, --auto (default) or --sweep; --compare runs the interval under four
    capacity policies (spot, on-demand, fallback, deadline-aware).
    """
    from spotsafe.policy import get_pool, load_pools

    pool_name = opts["pool_name"]
    pool = get_pool(pool_name or "standard", load_pools(opts["config"]))
    job = _job(opts)
    process = _process(opts, pool)
    mode = _mode(opts, pool, pool_name or "standard")
    trials = int(opts["trials"])
    points = len(mode.intervals or ()) if hasattr(mode, "intervals") else 0
    total = trials * (max(points, int(opts["sweep_points"])) + 1 if opts["do_sweep"] else 1)
    from spotsafe.simulate.study import run_study

    spot = opts["spot_price"] if opts["spot_price"] is not None else pool.spot_price_per_hour
    od = opts["on_demand_price"]
    od = od if od is not None else pool.on_demand_price_per_hour
    with _progress(total, enabled=not opts["as_json"]) as tick:
        study = run_study(
            job,
            process,
            mode,
            trials=trials,
            seed=int(opts["seed"]),
            spot_per_hour=spot,
            on_demand_per_hour=od,
            instances=int(opts["instances"] or pool.instances),
            progress=tick,
        )
    comparison = None
    if opts["compare"]:
        from spotsafe.simulate.compare import compare_pool

        comparison = compare_pool(
            job,
            process,
            study.best.interval_s,
            pool,
            trials=trials,
            seed=int(opts["seed"]),
            deadline_h=opts["deadline_h"],
            on_demand_after=opts["on_demand_after"],
            spot_per_hour=opts["spot_price"],
            on_demand_per_hour=opts["on_demand_price"],
            instances=opts["instances"],
        )
    if opts["as_json"]:
        doc = study.to_json()
        if comparison is not None:
            doc["compare"] = comparison.to_json()
        click.echo(json.dumps(doc, indent=2))
    else:
        show(study)
        if comparison is not None:
            show_comparison(comparison, pool_name or "standard")


def _job(opts: dict[str, Any]) -> Any:
    from spotsafe.simulate.model import Job

    return Job(
        work_s=opts["work_h"] * H,
        step_s=opts["step_s"],
        checkpoint_s=opts["checkpoint_s"],
        persist_s=opts["persist_s"],
        restore_s=opts["restore_s"],
        restart_s=opts["restart_s"],
        notice_s=opts["notice_s"],
    )


def _process(opts: dict[str, Any], pool: Pool) -> Process:
    from spotsafe.simulate.processes import Poisson, band_process, read_trace

    given = [n for n in ("mtbi_h", "band", "trace_file") if opts[n] is not None]
    if len(given) > 1:
        flags = ", ".join("--" + n.replace("_file", "").replace("_", "-") for n in given)
        raise ConfigError(f"{flags}: give one interruption process, not several")
    if opts["mtbi_h"] is not None:
        return Poisson(opts["mtbi_h"] * H)
    if opts["band"] is not None:
        return band_process(opts["band"])
    if opts["trace_file"] is not None:
        return read_trace(opts["trace_file"])
    return Poisson(pool.mtbi_prior_s, name="poisson")


def _mode(opts: dict[str, Any], pool: Pool, pool_name: str) -> PolicyMode:
    from spotsafe.policy.interval import Auto
    from spotsafe.simulate.study import AutoPolicy, Fixed, Sweep

    chosen = [
        flag
        for flag, on in (
            ("--interval-s", opts["interval_s"] is not None),
            ("--auto", opts["auto"]),
            ("--sweep", opts["do_sweep"]),
        )
        if on
    ]
    if len(chosen) > 1:
        raise ConfigError(f"{', '.join(chosen)}: give one policy, not several")
    if opts["sweep_range"] is not None and not opts["do_sweep"]:
        raise ConfigError("--sweep-range: only with --sweep")
    if opts["compare"] and opts["do_sweep"]:
        raise ConfigError("--compare, --sweep: compare at one interval (--interval-s or --auto)")
    for flag in ("deadline_h", "on_demand_after"):
        if opts[flag] is not None and not opts["compare"]:
            raise ConfigError(f"--{flag.replace('_', '-')}: only with --compare")
    if opts["interval_s"] is not None:
        if opts["interval_s"] > opts["work_h"] * H + opts["checkpoint_s"]:
            raise ConfigError(
                f"--interval-s = {opts['interval_s']:g}: longer than the job "
                f"({opts['work_h']:g} h of work)"
            )
        return Fixed(interval_s=float(opts["interval_s"]))
    if opts["do_sweep"]:
        points = int(opts["sweep_points"])
        if opts["sweep_range"] is None:
            return Sweep(points=points)
        import numpy as np

        low, high = parse_range(opts["sweep_range"])
        grid = tuple(float(x) for x in np.geomspace(low, high, points))
        return Sweep(intervals=grid, points=points)
    return AutoPolicy(policy=Auto.from_pool(pool), pool=pool_name)


@contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr when it is a terminal and the run is long enough to
    watch; otherwise nothing."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal or total < 20_000:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} trials"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("simulate", total=total)
        yield lambda n: bar.advance(task, n)


def _h(hours: float) -> str:
    return f"{hours:,.2f} h" if hours >= 1 else f"{hours * 60:,.1f} min"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def show_comparison(comparison: Comparison, pool_name: str) -> None:
    """Print the policies side by side, and which is best."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    deadline = comparison.deadline_s
    title = f"capacity policies, saving every {comparison.interval_s:,.0f} s (same interruptions)"
    table = Table(title=title)
    for col in ("policy", "makespan", "p95", "on-demand", "cost", "late"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, r in comparison.results.items():
        m = r.summary.makespan_h
        table.add_row(
            comparison.label(name) + (" *" if name == comparison.best else ""),
            _h(m["mean"]),
            _h(m["p95"]),
            _h(r.on_demand_h),
            _money(r.summary.cost["total"]),
            "-" if r.misses is None else f"{r.misses:.1%}",
        )
    console.print(table)
    if deadline is None:
        console.print("No deadline (--deadline-h or the pool's deadline_h): misses not counted.")
    best = comparison.best
    if best is None:
        console.print(
            "Give --spot-price and --on-demand-price (or the pool's prices) to rank by cost."
        )
        return
    misses = [r.misses for r in comparison.results.values() if r.misses is not None]
    if deadline is not None and min(misses) > 0.5:
        console.print(
            f"No policy meets a deadline of {_h(deadline / H)} in most runs: even on-demand "
            "capacity needs longer. Allow more time or reduce the work."
        )
        return
    line = f"* cheapest {'that meets the deadline ' if deadline else ''}is {comparison.label(best)}"
    if best == "deadline" and deadline is not None:
        line += (
            f". To keep it, set deadline_h = {deadline / H:g} in [pools.{pool_name}]; "
            "`spotsafe simulate --compare --pool` reads it"
        )
    console.print(line + ".", markup=False)


def show(study: Study) -> None:
    """Print the study as rich tables."""
    from rich.console import Console
    from rich.table import Table

    doc = study.to_json()
    console = Console()
    proc, job = doc["process"], doc["job"]
    console.print(
        f"[bold]{job['work_h']:g} h of work[/], interrupted by {proc['name']} "
        f"(mean {_h(proc['mtbi_h'])} between interruptions), {doc['trials']:,} trials, "
        f"seed {doc['seed']}"
    )
    if doc.get("sweep"):
        grid = Table(title="intervals tried (same interruptions for each)")
        for col in ("interval", "makespan mean", "p95", "goodput", "cost"):
            grid.add_column(col, justify="right")
        for row in doc["sweep"]:
            grid.add_row(
                f"{row['interval_s']:,.0f} s",
                _h(row["makespan_h"]["mean"]),
                _h(row["makespan_h"]["p95"]),
                f"{row['goodput']:.1%}",
                _money(row["cost"]["total"]),
            )
        console.print(grid)
        opt = doc["optimum"]
        console.print(
            f"optimum: save every [bold]{opt['interval_s']:,.0f} s[/] "
            f"({opt['work_s']:,.0f} s of training between saves; {opt['method']}), "
            f"mean makespan {_h(opt['makespan_h'])}"
        )
    policy = doc["policy"]
    label = {
        "interval": "fixed interval",
        "auto": f"Auto policy of pool {policy.get('pool')}",
        "sweep": "optimum",
    }[policy["kind"]]
    result = Table(title=f"{label}: save every {doc['interval_s']:,.0f} s")
    result.add_column("", justify="left")
    result.add_column("value", justify="right")
    m = doc["makespan_h"]
    result.add_row(
        "makespan mean / p50 / p95", f"{_h(m['mean'])} / {_h(m['p50'])} / {_h(m['p95'])}"
    )
    result.add_row("goodput", f"{doc['goodput']:.1%}")
    result.add_row("interruptions per run", f"{doc['interruptions']:.1f}")
    cost = doc["cost"]
    result.add_row("cost per run (spot)", _money(cost["total"]))
    result.add_row("on-demand, never interrupted", _money(cost["on_demand_equivalent"]))
    result.add_row("saved", _money(cost["saved"]))
    if doc["unfinished"]:
        result.add_row("unfinished runs (left out)", str(doc["unfinished"]))
    console.print(result)
    waste = Table(title="where the time goes (mean per run)")
    waste.add_column("kind")
    waste.add_column("hours", justify="right")
    waste.add_column("share of makespan", justify="right")
    for kind, hours in doc["waste_h"].items():
        if hours > 0 or kind in ("checkpoint", "replayed", "restore", "restart"):
            waste.add_row(kind.replace("_", " "), _h(hours), f"{hours / m['mean']:.1%}")
    console.print(waste)
    theory = doc["theory"]
    if theory and theory["daly_interval_s"] is not None:
        line = f"theory (Poisson): Daly interval {theory['daly_interval_s']:,.0f} s"
        if theory["daly_makespan_h"] is not None:
            line += f"; Daly's mean makespan at this interval {_h(theory['daly_makespan_h'])}"
        if job["persist_s"] > 0:
            line += f"; asynchronous optimum ≈ {theory['async_interval_s']:,.0f} s"
        console.print(line)
