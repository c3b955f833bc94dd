"""``spotsafe advise STORE``: better checkpoint settings and pool, from a job's own numbers.

It reads the job's report (`spotsafe.report.account_job`), simulates what the job does now,
sweeps intervals, compares every pool's Auto policy on the same interruptions
(`spotsafe.simulate.advise`), and says what to change, in words and one table.
``--fleet PREFIX`` does the same for every job under a prefix (the fleet report's jobs,
`spotsafe.report.account_fleet`), one row per job.

Example:
    >>> hours(0.5), hours(2.0)
    ('30.0 min', '2.00 h')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import click

from spotsafe.cli._params import Number
from spotsafe.errors import ConfigError

if TYPE_CHECKING:
    from spotsafe.policy.pools import Pool

WIDTH = 132  # columns when the output is not a terminal, as `spotsafe report`


def hours(h: float) -> str:
    """Hours for people: minutes below one hour."""
    return f"{h:,.2f} h" if h >= 1 else f"{h * 60:,.1f} min"


@click.command("advise")
@click.argument("store", required=False)
@click.option(
    "--fleet",
    metavar="PREFIX",
    default=None,
    help="Advise every job under PREFIX (a directory or s3://...), one row per job.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file with the pools to compare (default ./spotsafe.toml).",
)
@click.option(
    "--trials",
    type=Number(int, 10, 1_000_000),
    default=1000,
    show_default=True,
    help="Trials per simulated interval.",
)
@click.option(
    "--seed", type=Number(int, 0, 2**63 - 1), default=0, show_default=True, help="Random seed."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(
    store: str | None, fleet: str | None, config: str | None, trials: int, seed: int,
    as_json: bool,
) -> None:  # fmt: skip
    """Recommend a checkpoint interval, max_lost_work_s and a pool for the job in STORE (or
    every job under --fleet PREFIX), from its measured save, persist, restore and restart
    times and its interruptions."""
    from rich.console import Console
    from rich.table import Table

    from spotsafe.policy import load_pools
    from spotsafe.report import account_job
    from spotsafe.simulate.advise import advise

    if (store is None) == (fleet is None):
        raise ConfigError(
            "spotsafe advise: give a job's STORE, or --fleet PREFIX for every job under it"
        )
    if fleet is not None:
        _fleet(fleet, load_pools(config), trials=int(trials), seed=int(seed), as_json=as_json)
        return
    assert store is not None
    report = account_job(store).to_json()
    advice = advise(report, load_pools(config), trials=int(trials), seed=int(seed))
    doc = advice.to_json()
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    m, now, rec = doc["measured"], doc["now"], doc["recommended"]
    console = Console(highlight=False)
    console.print(
        f"job {report['job_id']}: {hours(m['work_h'])} of useful work; saves block "
        f"{m['checkpoint_s']:.3g} s and persist {m['persist_s']:.3g} s; restarts take "
        f"{m['restart_s']:.3g} s and restores {m['restore_s']:.3g} s; {m['interruptions']} "
        f"interruptions in {hours(m['held_h'])} on capacity, so one every "
        f"{hours(m['mtbi_h'])} (with the pool's prior)."
    )
    what = "its saves, as observed" if now["source"] == "observed" else "its pool's Auto policy"
    table = Table(title="now and recommended (simulated, same interruptions)")
    for col in ("", "save every", "makespan mean", "p95", "goodput", "cost"):
        table.add_column(col, justify="right" if col else "left")
    for label, row in ((f"now ({what})", now), ("recommended", rec)):
        interval = row["interval_s"] if "interval_s" in row else rec["interval_s"]
        cost = row["cost"]["total"]
        table.add_row(
            label,
            f"{interval:,.3g} s",
            hours(row["makespan_h"]["mean"]),
            hours(row["makespan_h"]["p95"]),
            f"{row['goodput']:.1%}",
            "-" if cost is None else f"{cost:,.2f}",
        )
    console.print(table)
    gain = now["makespan_h"]["mean"] - rec["makespan_h"]["mean"]
    console.print(
        f"Recommendation: save every {rec['interval_s']:,.3g} s (set max_lost_work_s = "
        f"{rec['max_lost_work_s']:g} so the Guard may save that rarely) and run in pool "
        f"'{rec['pool']}', whose Auto policy did best of {len(doc['pools'])} pools. "
        + (
            f"That saves {hours(gain)} of makespan per run on average."
            if gain > 0.005 * now["makespan_h"]["mean"]
            else "The job's current setting is already as good, within the simulation's noise."
        )
    )


def _fleet(prefix: str, pools: Mapping[str, Pool], *, trials: int, seed: int,
           as_json: bool) -> None:  # fmt: skip
    """Advise every job under `prefix`: one row per job, then the jobs left out and why."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from spotsafe.report import account_fleet
    from spotsafe.simulate.advise import advise_fleet

    advice = advise_fleet(account_fleet(prefix), pools, trials=trials, seed=seed)
    doc = advice.to_json()
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = WIDTH  # piped into a file or a log: wide enough for every column
    table = Table(title=f"advice for the jobs under {escape(doc['prefix'])} (simulated)")
    for col in ("job", "pool", "MTBI", "saves now", "recommended", "max_lost_work_s",
                "best pool", "makespan now", "saved"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("job", "pool", "best pool") else "right")
    better = 0
    for job in doc["jobs"]:
        m, now, rec = job["measured"], job["now"], job["recommended"]
        gain = now["makespan_h"]["mean"] - rec["makespan_h"]["mean"]
        if gain > 0.005 * now["makespan_h"]["mean"]:
            better += 1
        table.add_row(
            escape(job["job_id"]),
            escape(m["pool"] or "-"),
            hours(m["mtbi_h"]),
            f"{now['interval_s']:,.3g} s" + ("" if now["source"] == "observed" else " (auto)"),
            f"{rec['interval_s']:,.3g} s",
            f"{rec['max_lost_work_s']:g}",
            escape(rec["pool"]),
            hours(now["makespan_h"]["mean"]),
            f"{gain / now['makespan_h']['mean']:.1%}" if gain > 0 else "-",
        )
    console.print(table)
    for skip in doc["skipped"]:
        console.print(f"left out {skip['job']}: {skip['reason']}", markup=False)
    console.print(
        f"{better} of {len(doc['jobs'])} jobs would finish sooner with the recommended "
        "interval (saved: mean makespan, on the same interruptions). Set max_lost_work_s "
        "per pool, or give the jobs that differ a pool of their own."
    )
