"""``spotsafe verify STORE [--step N]``: check every byte; exit 1 on a bad checkpoint."""

from __future__ import annotations

import sys

import click

from spotsafe.cli._format import human_bytes, table

EXIT_BAD_CHECKPOINT = 1


@click.command("verify")
@click.argument("store")
@click.option("--step", type=int, default=None, help="Verify only the checkpoint at this step.")
def command(store: str, step: int | None) -> None:
    """Fully verify the checkpoints in STORE (sizes and checksums of every byte).

    Read-only: nothing is quarantined or deleted. Exits 1 if a committed checkpoint is
    corrupt, 0 if every one checked is valid.
    """
    from spotsafe.checkpoint import Checkpointer, Status

    results = Checkpointer(store, read_only=True).verify(step)
    committed = [c for c in results if c.status in (Status.VALID, Status.CORRUPT)]
    rows = [[str(c.step), human_bytes(c.size), c.status.value, c.reason] for c in results]
    click.echo(table(["STEP", "SIZE", "STATE", "NOTE"], rows) if rows else "no checkpoints")
    bad = [c for c in committed if c.status is Status.CORRUPT]
    if bad:
        click.echo(f"{len(bad)} of {len(committed)} checkpoint(s) are corrupt", err=True)
        sys.exit(EXIT_BAD_CHECKPOINT)
    click.echo(f"{len(committed)} checkpoint(s) verified")
