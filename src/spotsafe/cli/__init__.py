"""The ``spotsafe`` command line: one small module per subcommand.

Each subcommand parses, calls the library, and maps errors to exit codes: a
:class:`~spotsafe.errors.SpotsafeError` prints one line — what, where, how to fix — and exits
75 (EX_TEMPFAIL: "try again later") when it is retryable (a network error, another
supervisor's lease that may expire) and 2 otherwise (a user error: a bad flag, path or
setting; 1 for a bad checkpoint found by ``verify``); a bug still shows its traceback.
Log lines and error lines are redacted (`spotsafe.redact`); third-party loggers stay at
WARNING unless named with ``--debug-logger`` (`spotsafe.cli._logging`).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from spotsafe._version import __version__
from spotsafe.cli import _logging
from spotsafe.errors import SpotsafeError
from spotsafe.redact import redact_text

EXIT_USER_ERROR = 2
EXIT_RETRYABLE = 75  # EX_TEMPFAIL (sysexits.h): the same command may succeed later


def exit_code_for(error: SpotsafeError) -> int:
    """The exit status for `error`: 75 when it is retryable, 2 when it is the user's to fix.

    Example:
        >>> from spotsafe.errors import ConfigError, StorageError
        >>> exit_code_for(StorageError("timeout")), exit_code_for(ConfigError("bad flag"))
        (75, 2)
    """
    return EXIT_RETRYABLE if error.retryable else EXIT_USER_ERROR


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpotsafeError as e:
            click.echo(f"spotsafe: {redact_text(str(e))}", err=True)
            sys.exit(exit_code_for(e))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spotsafe")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--debug-logger",
    "debug_logger",
    multiple=True,
    metavar="NAME",
    help=f"Show a third-party logger's debug output (e.g. botocore); repeatable. Also "
    f"${_logging.ENV_DEBUG_LOGGERS}=botocore,s3fs. Credentials are redacted either way.",
)
def cli(verbose: int, debug_logger: tuple[str, ...]) -> None:
    """Safe, cheap PyTorch training on spot and preemptible capacity."""
    _logging.configure(verbose, _logging.debug_loggers(debug_logger))


def _register() -> None:
    from spotsafe.cli import (
        advise,
        chaos,
        dashboard,
        deploy,
        doctor,
        ls,
        pools,
        report,
        run,
        simulate,
        verify,
    )

    commands = (advise, chaos, dashboard, deploy, doctor, ls, pools, report, run, simulate, verify)
    for module in commands:
        cli.add_command(module.command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="spotsafe")
