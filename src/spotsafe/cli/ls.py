"""``spotsafe ls STORE``: the checkpoints in a store, from one listing (no data downloaded)."""

from __future__ import annotations

import click

from spotsafe.cli._format import human_bytes, table, when


@click.command("ls")
@click.argument("store")
def command(store: str) -> None:
    """List the checkpoints in STORE with step, time, size and state.

    States: valid (manifest and sizes check out; `spotsafe verify` checks every byte),
    partial (never committed), corrupt, quarantined, foreign (another job), shared
    (pruned, but its data is still used by kept checkpoints).
    """
    from spotsafe.checkpoint import Checkpointer

    listing = Checkpointer(store, read_only=True).checkpoints()
    if not listing:
        click.echo(f"no checkpoints in {store}")
        return
    rows = [
        [str(c.step), when(c.created_at), human_bytes(c.size), c.status.value, c.reason, c.path]
        for c in listing
    ]
    click.echo(table(["STEP", "TIME", "SIZE", "STATE", "NOTE", "PATH"], rows))
