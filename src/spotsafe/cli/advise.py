"""``spotsafe advise STORE``: better checkpoint settings and pool, from a job's own numbers.

It reads the job's report (`spotsafe.report.account_job`), simulates what the job does now,
sweeps intervals, compares every pool's Auto policy on the same interruptions
(`spotsafe.simulate.advise`), and says what to change, in words and one table.

Example:
    >>> hours(0.5), hours(2.0)
    ('30.0 min', '2.00 h')
"""

from __future__ import annotations

import json

import click

from spotsafe.cli._params import Number


def hours(h: float) -> str:
    """Hours for people: minutes below one hour."""
    return f"{h:,.2f} h" if h >= 1 else f"{h * 60:,.1f} min"


@click.command("advise")
@click.argument("store")
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
def command(store: str, config: str | None, trials: int, seed: int, as_json: bool) -> None:
    """Recommend a checkpoint interval, max_lost_work_s and a pool for the job in STORE,
    from its measured save, persist, restore and restart times and its interruptions."""
    from rich.console import Console
    from rich.table import Table

    from spotsafe.policy import load_pools
    from spotsafe.report import account_job
    from spotsafe.simulate.advise import advise

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
