"""``spotsafe verify STORE [--step N]``: check every byte; exit 1 on a bad checkpoint."""

from __future__ import annotations

import sys

import click

from spotsafe.checkpoint.discovery import CheckpointListing, Status
from spotsafe.cli._format import human_bytes, table
from spotsafe.cli._store import check_not_empty, open_to_read
from spotsafe.cli.ls import sharded_note

EXIT_BAD_CHECKPOINT = 1


@click.command("verify")
@click.argument("store")
@click.option("--step", type=int, default=None, help="Verify only the checkpoint at this step.")
@click.option(
    "--release",
    "release",
    type=int,
    default=None,
    metavar="STEP",
    help="Lift the quarantine of the checkpoint at STEP (after you looked), then verify it.",
)
def command(store: str, step: int | None, release: int | None) -> None:
    """Fully verify the checkpoints in STORE (sizes and checksums of every byte).

    Read-only unless --release is given: nothing is quarantined or deleted. Exits 1 if a
    committed checkpoint is corrupt, 0 if every one checked is valid. A path or URL with
    nothing there is an error (exit 2). A sharded (FSDP2 / DTensor) checkpoint's every
    shard, each rank's, is checked: its NOTE says how many, or names the bad one.
    """
    view = open_to_read(store)
    if release is not None:
        for c in view.release(release):
            click.echo(f"released {c.path} (was quarantined: {c.reason})")
        step = release
    results = view.verify(step)
    if not results:
        check_not_empty(view)
    committed = [c for c in results if c.status in (Status.VALID, Status.CORRUPT)]
    rows = [[str(c.step), human_bytes(c.size), c.status.value, note(c)] for c in results]
    click.echo(table(["STEP", "SIZE", "STATE", "NOTE"], rows) if rows else "no checkpoints")
    bad = [c for c in committed if c.status is Status.CORRUPT]
    if bad:
        click.echo(f"{len(bad)} of {len(committed)} checkpoint(s) are corrupt", err=True)
        sys.exit(EXIT_BAD_CHECKPOINT)
    click.echo(f"{len(committed)} checkpoint(s) verified")


def note(c: CheckpointListing) -> str:
    """The NOTE column: why a checkpoint is bad; for a sharded one, what was checked."""
    shards = sharded_note(c)
    if not shards:
        return c.reason
    if c.status is Status.VALID:
        return f"{shards}; every shard verified"
    return f"{c.reason} ({shards})" if c.reason else shards
