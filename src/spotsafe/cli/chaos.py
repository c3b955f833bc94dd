"""``spotsafe chaos -- CMD``: interrupt a job at random and check it ends bit for bit alike."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from spotsafe.cli._params import Number
from spotsafe.policy.pools import MAX_GRACE_S
from spotsafe.supervisor.chaos import MAX_DELAY_S, MAX_KILLS


@click.command(
    "chaos", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option(
    "--kills",
    default=10,
    show_default=True,
    type=Number(int, 1, MAX_KILLS),
    help=f"Interruptions to land (1 to {MAX_KILLS:,}).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=Number(int, 0, 2**32 - 1),
    help="Seed of the interruption plan (0 to 2^32 - 1).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Scratch directory for the two stores (default: a new temporary one).",
)
@click.option(
    "--max-delay-s",
    default=5.0,
    show_default=True,
    type=Number(float, 0, MAX_DELAY_S),
    help=f"Longest wait after an attempt starts before interrupting it (0 to {MAX_DELAY_S:g} s).",
)
@click.option(
    "--grace-s",
    default=10.0,
    show_default=True,
    type=Number(float, 0, MAX_GRACE_S, low_open=True),
    help=f"Seconds between SIGTERM and SIGKILL (> 0, at most {MAX_GRACE_S:g}).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def command(
    ctx: click.Context,
    kills: int,
    seed: int,
    workdir: str | None,
    max_delay_s: float,
    grace_s: float,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND under the supervisor, interrupt it KILLS times, run it again without
    interruptions, and compare the final checkpoints bit for bit. Exit 0 only if identical.

    COMMAND finds its store in $SPOTSAFE_STORE.
    """
    import os

    from spotsafe.supervisor.chaos import run_chaos

    # Both stores are scratch by definition: let the Checkpointer write them under /tmp.
    os.environ["SPOTSAFE_ALLOW_EPHEMERAL"] = "1"
    os.environ.setdefault("SPOTSAFE_CLOUD", "none")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="spotsafe-chaos-"))
    click.echo(f"spotsafe chaos: {kills} interruptions, seed {seed}, scratch in {root}")
    report = run_chaos(
        list(command),
        kills=kills,
        seed=seed,
        workdir=root,
        max_delay_s=max_delay_s,
        grace_s=grace_s,
        progress=click.echo,
    )
    click.echo(report.format())
    ctx.exit(0 if report.ok else 1)
