"""The report as tables on a terminal (`rich`), for ``spotsafe report``.

`rich` is imported here, not by the accounting: the JSON, the dashboard and the metrics do
without it.

Example:
    >>> hours(5400.0), seconds(0.0123), seconds(None), ratio(0.5)
    ('1.50 h', '12.3 ms', '-', '50.0%')
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from spotsafe.report.accounting import Dist, JobReport
from spotsafe.report.fleet import FleetReport

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["hours", "print_fleet", "print_job", "ratio", "seconds"]


def seconds(value: float | None) -> str:
    """A duration for people: ms under a second, s under ten minutes, then min and h."""
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.1f} ms"
    if value < 600:
        return f"{value:.1f} s"
    if value < 3 * 3600:
        return f"{value / 60:.1f} min"
    return hours(value)


def hours(value: float) -> str:
    return f"{value / 3600:.2f} h"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _dist(d: Dist | None) -> str:
    if d is None:
        return "-"
    return f"p50 {seconds(d.p50)}  p95 {seconds(d.p95)}  max {seconds(d.max)}"


def _step(value: int | None) -> str:
    return "-" if value is None else str(value)


def print_job(report: JobReport, console: Console) -> None:
    """Print `report` as a header and three tables: attempts, where time went, cost."""
    from rich.table import Table

    start = report.attempts[0].started_s if report.attempts else None
    began = "-" if start is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))
    console.print(
        f"[bold]job {report.job_id}[/bold]  pool {report.pool or '-'}  [bold]{report.state}"
        f"[/bold]  {len(report.attempts)} attempts since {began}  ({report.store})"
    )

    attempts = Table(title="Attempts", title_justify="left")
    for name in ("#", "capacity", "start", "ran", "ended as", "source", "from step",
                 "reached", "restore", "1st step after"):  # fmt: skip
        attempts.add_column(name, justify="right" if name not in ("ended as", "source") else "left")
    for a in report.attempts:
        reached = _step(a.furthest_step) + ("~" if a.furthest_estimated else "")
        to_first = None if a.first_step_s is None else a.first_step_s - a.started_s
        attempts.add_row(
            str(a.attempt), a.capacity,
            "-" if start is None else f"+{a.started_s - start:.1f} s",
            seconds(a.wall_s(report.now_s)), a.exit_class or "running",
            a.interruption_source or "", _step(a.restored_step), reached,
            seconds(a.restore_s), seconds(to_first),
        )  # fmt: skip
    console.print(attempts)
    if any(a.furthest_estimated for a in report.attempts):
        console.print("  ~ estimated: the attempt's progress died with it (last sign of life "
                      "+ step time)")  # fmt: skip

    summary = Table(title="Interruptions and wasted work", title_justify="left")
    summary.add_column("measure")
    summary.add_column("value")
    by = ", ".join(f"{k} {v}" for k, v in sorted(report.interruptions_by_source.items()))
    summary.add_row("interruptions", f"{report.interruptions}" + (f"  ({by})" if by else ""))
    summary.add_row(
        "resume",
        f"{ratio(report.resume_rate)} of {report.resume_attempts} restored the newest checkpoint"
        f"  (fell back {report.resume_fell_back}, fresh {report.resume_fresh})",
    )
    per = ", ".join(f"#{r.attempt}: {r.steps}{'~' if r.estimated else ''}" for r in report.replayed)
    summary.add_row(
        "replayed work",
        f"{report.replayed_steps} steps, {seconds(report.replayed_s)}"
        + (f"  ({per})" if per else ""),
    )
    summary.add_row("checkpoints", f"{len(report.saves)} saves")
    summary.add_row("  blocking", _dist(report.blocking))
    summary.add_row("  persist", _dist(report.persist))
    summary.add_row("  restore", _dist(report.restore))
    retry_total = sum(r.seconds for r in report.retries)
    backoff = sum(r.backoff_s for r in report.retries)
    startup = sum(r.startup_s for r in report.retries)
    restore = sum(r.restore_s for r in report.retries)
    summary.add_row(
        "retry (to 1st step)",
        f"{seconds(retry_total)}  (backoff {seconds(backoff)}, start-up {seconds(startup)},"
        f" restore {seconds(restore)})",
    )
    summary.add_row(
        "goodput",
        f"{ratio(report.goodput)}  ({seconds(report.useful_s)} useful of"
        f" {seconds(report.total_s)})",
    )
    for name, value in report.badput_s.items():
        share = value / report.total_s if report.total_s > 0 else None
        summary.add_row(f"  {name.replace('_', ' ')}", f"{seconds(value)}  {ratio(share)}")
    console.print(summary)

    cost = report.cost
    if cost is None:
        console.print("cost: no prices recorded (set spot_price_per_hour and "
                      "on_demand_price_per_hour in the pool)")  # fmt: skip
        return
    table = Table(title="Cost", title_justify="left")
    for name in ("paid", "on-demand equivalent", "saved", "saved %", "SageMaker-style %"):
        table.add_column(name, justify="right")
    table.add_row(_money(cost["spot"]), _money(cost["on_demand_equivalent"]),
                  _money(cost["saved"]), ratio(cost["saved_ratio"]),
                  ratio(cost["sagemaker_ratio"]))  # fmt: skip
    console.print(table)
    console.print("  saved is net of replayed work and restarts; SageMaker's ratio is not")


def print_fleet(report: FleetReport, console: Console) -> None:
    """Print the pools, then one line per job."""
    from rich.table import Table

    pools = Table(title=f"Fleet under {report.prefix}: per pool", title_justify="left")
    for name in ("pool", "jobs", "interruptions", "goodput", "replayed", "saved"):
        pools.add_column(name, justify="left" if name == "pool" else "right")
    for name, p in sorted(report.pools.items()):
        pools.add_row(name, str(p.jobs), str(p.interruptions), ratio(p.goodput),
                      f"{p.replayed_hours:.2f} h", _money(p.cost_saved))  # fmt: skip
    console.print(pools)
    jobs = Table(title="Jobs", title_justify="left")
    for name in ("job", "pool", "state", "attempts", "interruptions", "goodput", "replayed",
                 "saved"):  # fmt: skip
        jobs.add_column(name, justify="left" if name in ("job", "pool", "state") else "right")
    for j in report.jobs:
        jobs.add_row(j.job_id, j.pool or "-", j.state, str(len(j.attempts)),
                     str(j.interruptions), ratio(j.goodput), seconds(j.replayed_s),
                     _money(None if j.cost is None else j.cost["saved"]))  # fmt: skip
    console.print(jobs)
    for store, error in report.errors:
        console.print(f"[red]not accounted[/red] {store}: {error}")
