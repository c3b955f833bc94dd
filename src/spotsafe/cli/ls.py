"""``spotsafe ls STORE``: the checkpoints in a store, from one listing (no data downloaded)."""

from __future__ import annotations

import click

from spotsafe.cli._format import human_bytes, table, when
from spotsafe.cli._store import check_not_empty, open_to_read


@click.command("ls")
@click.argument("store")
def command(store: str) -> None:
    """List the checkpoints in STORE with step, time, size and state.

    States: valid (manifest and sizes check out; `spotsafe verify` checks every byte),
    partial (never committed), corrupt, quarantined, foreign (another job), newer (written
    by a newer spotsafe: upgrade), shared (pruned, but its data is still used by kept
    checkpoints). A path or URL with nothing there is an error (exit 2).
    """
    ckpt = open_to_read(store)
    listing = ckpt.checkpoints()
    if not listing:
        check_not_empty(ckpt, store)
        click.echo(f"no checkpoints in {ckpt.store.url}")
        return
    rows = [
        [str(c.step), when(c.created_at), human_bytes(c.size), c.status.value, c.reason, c.path]
        for c in listing
    ]
    click.echo(table(["STEP", "TIME", "SIZE", "STATE", "NOTE", "PATH"], rows))
