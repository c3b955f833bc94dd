"""``spotsafe dashboard STORE -o FILE`` (or ``--fleet PREFIX``): the report as one HTML file."""

from __future__ import annotations

from pathlib import Path

import click

from spotsafe.errors import ConfigError


@click.command("dashboard")
@click.argument("store", required=False)
@click.option(
    "--fleet",
    metavar="PREFIX",
    default=None,
    help="Every job under PREFIX (a path or s3://bucket/prefix), grouped by pool, instead of "
    "one job's STORE.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The HTML file to write (replaced whole).",
)
def command(store: str | None, fleet: str | None, output: str) -> None:
    """Write the report of the job in STORE as a self-contained HTML page that opens offline:
    attempts on a timeline with interruptions and checkpoints, step progress with replayed
    work marked, checkpoint times, goodput and its badput, cost. Needs plotly
    (pip install 'spotsafe[dashboard]').
    """
    from spotsafe.report.dashboard import require_plotly

    if (store is None) == (fleet is None):
        raise ConfigError("dashboard: give a STORE or --fleet PREFIX (one of them), and -o FILE")
    target = output_path(output)
    require_plotly()  # before reading the store: say what to install first
    from spotsafe.report import account_fleet, account_job
    from spotsafe.report.dashboard import fleet_dashboard, job_dashboard, write_html

    if fleet is not None:
        page = fleet_dashboard(account_fleet(fleet).to_json())
    else:
        assert store is not None
        page = job_dashboard(account_job(store).to_json())
    try:
        write_html(target, page)
    except OSError as e:
        raise ConfigError(f"-o {output}: cannot write it ({e.strerror or e})") from e
    click.echo(f"wrote {target}")


def output_path(output: str) -> Path:
    """The file ``-o`` names, refused before any work when its directory does not exist.

    Example:
        >>> output_path("report.html").name
        'report.html'
        >>> output_path("/no/such/dir/report.html")
        Traceback (most recent call last):
        ...
        spotsafe.errors.ConfigError: -o /no/such/dir/report.html: the directory /no/such/dir does not exist; create it or write elsewhere
    """  # noqa: E501
    target = Path(output)
    parent = target.absolute().parent
    if not parent.is_dir():
        raise ConfigError(
            f"-o {output}: the directory {parent} does not exist; create it or write elsewhere"
        )
    return target
