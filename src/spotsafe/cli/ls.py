"""``spotsafe ls STORE``: the checkpoints in a store, from one listing (no data downloaded)."""

from __future__ import annotations

import click

from spotsafe.checkpoint.discovery import CheckpointListing
from spotsafe.checkpoint.shards import sharded_info
from spotsafe.cli._format import human_bytes, table, when
from spotsafe.cli._store import check_not_empty, open_to_read
from spotsafe.errors import CheckpointCorrupt


@click.command("ls")
@click.argument("store")
def command(store: str) -> None:
    """List the checkpoints in STORE with step, time, size and state.

    States: valid (manifest and sizes check out; `spotsafe verify` checks every byte),
    partial (never committed), corrupt, quarantined, foreign (another job), newer (written
    by a newer spotsafe: upgrade), shared (pruned, but its data is still used by kept
    checkpoints). A checkpoint whose data loader cannot resume exactly (persistent
    workers, out-of-order loading) is noted "not exact: NAMES". A sharded (FSDP2 / DTensor)
    checkpoint is noted with the ranks that wrote it, the DCP shard files per rank and their
    bytes: "sharded: 4 ranks x 1 shard, 1.2 GiB". A path or URL with nothing there is an
    error (exit 2).
    """
    view = open_to_read(store)
    listing = view.checkpoints()
    if not listing:
        check_not_empty(view)
        click.echo(f"no checkpoints in {view.store.url}")
        return
    rows = [
        [str(c.step), when(c.created_at), human_bytes(c.size), c.status.value, note(c), c.path]
        for c in listing
    ]
    click.echo(table(["STEP", "TIME", "SIZE", "STATE", "NOTE", "PATH"], rows))


def note(c: CheckpointListing) -> str:
    """The NOTE column: why a checkpoint is not valid, and whether it resumes exactly."""
    parts = [c.reason] if c.reason else []
    shards = sharded_note(c)
    if shards:
        parts.append(shards)
    not_exact = c.manifest.extra.get("not_exact") if c.manifest is not None else None
    if isinstance(not_exact, dict) and not_exact:
        parts.append(f"not exact: {', '.join(sorted(map(str, not_exact)))}")
    return "; ".join(parts)


def sharded_note(c: CheckpointListing) -> str:
    """What a sharded checkpoint holds, from its manifest: "sharded: 4 ranks x 1 shard,
    1.2 GiB" (the ranks that wrote it, DCP shard files per rank, their bytes); "" for a
    checkpoint that is not sharded or has no manifest."""
    if c.manifest is None:
        return ""
    try:
        info = sharded_info(c.manifest)
    except CheckpointCorrupt as e:
        return f"sharded, unreadable: {e}"
    if info is None:
        return ""
    fewest, most = info.shards_per_rank()
    per = str(most) if fewest == most else f"{fewest}-{most}"
    plural = "" if most == 1 else "s"
    return f"sharded: {info.world_size} ranks x {per} shard{plural}, {human_bytes(info.bytes)}"
