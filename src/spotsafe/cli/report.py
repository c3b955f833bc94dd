"""``spotsafe report STORE``: what interruptions cost a job (or ``--fleet PREFIX``: every job
under a prefix, grouped by pool), as tables or as JSON (schema 1, see the README).

Example:
    >>> from click.testing import CliRunner
    >>> from spotsafe.cli import cli
    >>> result = CliRunner().invoke(cli, ["report", "memory://spotsafe-cli-report-doc"])
    >>> result.exit_code, result.output.split(":")[0]
    (2, 'spotsafe')
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from spotsafe.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

WIDTH = 132  # columns when the output is not a terminal


@click.command("report")
@click.argument("store", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema 1).")
@click.option(
    "--fleet",
    metavar="PREFIX",
    default=None,
    help="Report every job under PREFIX (a directory or s3://...), grouped by pool.",
)
def command(store: str | None, as_json: bool, fleet: str | None) -> None:
    """Interruptions by source, resume success, replayed work, checkpoint and retry time,
    goodput with its badput, and cost saved net of replayed work, for the job in STORE.

    Works on running, finished and failed jobs; reads the store only. A store without a
    job is an error (exit 2).
    """
    if (store is None) == (fleet is None):
        raise ConfigError(
            "spotsafe report: give a job's STORE, or --fleet PREFIX for every job under it"
        )
    from spotsafe.report import account_fleet, account_job

    if fleet is not None:
        fleet_report = account_fleet(fleet)
        if as_json:
            click.echo(json.dumps(fleet_report.to_json(), indent=1))
            return
        from spotsafe.report.render import print_fleet

        print_fleet(fleet_report, _console())
        return
    assert store is not None
    report = account_job(store)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
        return
    from spotsafe.report.render import print_job

    print_job(report, _console())


def _console() -> Console:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = WIDTH  # piped into a file or a log: wide enough for every column
    return console
