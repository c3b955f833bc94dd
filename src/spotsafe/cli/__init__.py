"""The ``spotsafe`` command line: one small module per subcommand.

Each subcommand parses, calls the library, and maps errors to exit codes: a user error
(:class:`~spotsafe.errors.SpotsafeError`) prints one line — what, where, how to fix — and
exits 2 (1 for a bad checkpoint found by ``verify``); a bug still shows its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from spotsafe._version import __version__
from spotsafe.errors import SpotsafeError

EXIT_USER_ERROR = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpotsafeError as e:
            click.echo(f"spotsafe: {e}", err=True)
            sys.exit(EXIT_USER_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spotsafe")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Safe, cheap PyTorch training on spot and preemptible capacity."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from spotsafe.cli import chaos, ls, pools, run, verify

    for module in (chaos, ls, pools, run, verify):
        cli.add_command(module.command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="spotsafe")
