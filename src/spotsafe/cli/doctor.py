"""``spotsafe doctor [--store URL] [--fleet PREFIX] [--checkpoint PATH] [-- CMD ...]``: the
common mistakes of training on spot capacity, found in a real job.

Prints one block per finding (severity, id, what, evidence, fix) or, with ``--json``,
``{"findings": [...], "checked": [...], "facts": {...}}``; exits 1 when a finding is an
error, 0 otherwise, 2 for a usage error.

Example:
    >>> from click.testing import CliRunner
    >>> from spotsafe.cli import cli
    >>> result = CliRunner().invoke(cli, ["doctor"])
    >>> result.exit_code, "nothing to examine" in result.output
    (2, True)
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from spotsafe.cli._params import Number
from spotsafe.redact import redact_text

EXIT_ERROR_FINDING = 1
MAX_TIMEOUT_S = 86400.0  # a day: a first checkpoint later than that is not a check to wait for


@click.command(
    "doctor", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--store", default=None, help="The job's real store: only read, never written.")
@click.option("--fleet", metavar="PREFIX", default=None, help="Every job under PREFIX.")
@click.option(
    "--checkpoint",
    "checkpoint",
    metavar="PATH",
    default=None,
    help="Inspect one checkpoint file or folder (torch.save, Lightning .ckpt, Hugging Face "
    "checkpoint-N, DCP, spotsafe).",
)
@click.option("--pool", default=None, help="The job's pool (default $SPOTSAFE_POOL, standard).")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default ./spotsafe.toml, or [tool.spotsafe] in ./pyproject.toml).",
)
@click.option(
    "--grace-s",
    type=Number(float, 0, 3600, low_open=True),
    default=None,
    help="The orchestrator's grace between SIGTERM and SIGKILL (default: the pool's grace_s).",
)
@click.option(
    "--timeout-s",
    type=Number(float, 0, MAX_TIMEOUT_S, low_open=True),
    default=600.0,
    show_default=True,
    help="Most seconds CMD may take to write its first checkpoint.",
)
@click.option(
    "--stop-code",
    type=Number(int, 1, 255),
    default=75,
    show_default=True,
    help="The exit code that means 'stopped on request, state saved'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def command(
    store: str | None,
    fleet: str | None,
    checkpoint: str | None,
    pool: str | None,
    config: str | None,
    grace_s: float | None,
    timeout_s: float,
    stop_code: int,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Find weights-only checkpoints, ephemeral storage, restarts from scratch, ignored
    termination signals, one policy for every workload, loaders that cannot resume exactly,
    intervals far from optimal and a grace shorter than the flush.

    CMD runs twice in a scratch store ($SPOTSAFE_STORE; "{store}" in its arguments is
    replaced by the scratch path): once until its first checkpoint, then SIGTERM; then
    again, to see whether it resumes. Exit 1 when a finding is an error.
    """
    from spotsafe.doctor import Request, diagnose

    request = Request(
        command=tuple(command),
        store=store,
        fleet=fleet,
        checkpoint=checkpoint,
        pool=pool,
        config=config,
        grace_s=grace_s,
        timeout_s=timeout_s,
        stop_code=stop_code,
    )
    result = diagnose(request).to_json()
    if as_json:
        click.echo(redact_text(json.dumps(result, indent=1)))
    else:
        click.echo(redact_text(render(result)))
    if any(f["severity"] == "error" for f in result["findings"]):
        sys.exit(EXIT_ERROR_FINDING)


def render(result: dict[str, Any]) -> str:
    """The findings as text: one block each, then a summary line."""
    lines: list[str] = []
    for f in result["findings"]:
        lines.append(f"{f['severity'].upper():<8} {f['id']}: {f['what']}")
        for key, value in f["evidence"].items():
            shown = value if isinstance(value, str) else json.dumps(value)
            if isinstance(value, str) and "\n" in value:
                shown = value.strip().replace("\n", "\n" + " " * 12)
            lines.append(f"         {key}: {shown}")
        lines.append(f"         fix: {f['fix']}")
        lines.append("")
    counts: dict[str, int] = {}
    for f in result["findings"]:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    checked = ", ".join(result["checked"])
    if counts:
        summary = ", ".join(f"{n} {s}{'s' if n > 1 else ''}" for s, n in sorted(counts.items()))
        lines.append(f"{summary} (checked: {checked})")
    else:
        lines.append(f"no findings (checked: {checked})")
    return "\n".join(lines)
