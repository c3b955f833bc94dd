"""Retention: which checkpoints to delete, decided from one listing, then carried out.

:func:`plan_retention` is pure: it looks at one :class:`RetentionState` (a discovery of the
store and what this process holds) and returns a decision, :class:`Prune` (what to delete,
and why everything else stays) or :class:`Hold` (delete nothing). :func:`carry_out` deletes
in two halves, every doomed manifest first (:func:`unpublish`), then the files they used
(:func:`remove_files`), and reports each failure instead of stopping: the Checkpointer runs
retention only after a commit, never lets it fail that commit, removes the files off the
save's critical path, and the next save plans again from a fresh listing.

Invariants (each has a test):

- The newest ``keep_last`` valid checkpoints stay, and so does every checkpoint this
  process resumed from or builds on (its Checkpointers' last commits).
- Nothing being written, nothing of another job, and no unfinished directory newer than our
  own newest checkpoint (maybe another writer's save in progress) is deleted.
- Recent checkpoints that failed verification stay for inspection; older ones go.
- A data file that any surviving manifest uses stays, whoever wrote it.
- While the store holds a newer spotsafe's checkpoints, nothing is deleted: their manifests
  may use files this version cannot see them use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from spotsafe.checkpoint.discovery import CheckpointListing, Status
from spotsafe.checkpoint.manifest import MANIFEST_NAME
from spotsafe.errors import StorageError
from spotsafe.storage import Store


class Keep(str, Enum):
    """Why a checkpoint directory survives a prune."""

    NEWEST = "newest"  #: among the newest keep_last valid checkpoints
    HELD = "held"  #: resumed from, or the base of the next save, in this process
    WRITING = "writing"  #: being written by this Checkpointer
    FOREIGN = "foreign"  #: another job's checkpoint: not ours to delete
    MAYBE_WRITING = "maybe-writing"  #: unfinished and newer than ours: another save in progress?
    INSPECT = "inspect"  #: failed verification recently: kept for a human to look at


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionState:
    """What retention decides from."""

    listing: list[CheckpointListing]  #: one discovery of the store, newest first
    sizes: Mapping[str, int]  #: every file under checkpoints/ from that listing, with its size
    keep_last: int  #: valid checkpoints to keep (>= 2)
    held: frozenset[str] = frozenset()  #: directories this process resumed from or builds on
    writing: frozenset[str] = frozenset()  #: directories this Checkpointer is writing now
    newest_ours: int | None = None  #: step of our newest commit or restore; None: none yet


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    """One checkpoint directory to delete: its manifest first, so that a reader who finds
    its files missing knows it was pruned, then the files no surviving manifest uses."""

    path: str
    manifest: str | None  #: the manifest's path, if the directory has one
    files: tuple[str, ...]  #: every other file of the directory that no survivor uses


@dataclass(frozen=True, slots=True, kw_only=True)
class Prune:
    """Delete ``deletes``; every other checkpoint directory stays, for the reason in ``kept``."""

    deletes: tuple[Delete, ...]
    kept: Mapping[str, Keep] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """Delete nothing, because of ``reason``."""

    reason: str


def plan_retention(state: RetentionState) -> Prune | Hold:
    """What to delete from the store that ``state.listing`` shows.

    Example:
        >>> plan_retention(RetentionState(listing=[], sizes={}, keep_last=2))
        Prune(deletes=(), kept={})
    """
    listing = state.listing
    if any(c.status is Status.NEWER for c in listing):
        return Hold(reason="the store holds checkpoints of a newer spotsafe")
    committed = [c for c in listing if c.status is Status.VALID and c.manifest is not None]
    newest = {c.path for c in committed[: state.keep_last]}
    kept_steps = [c.step for c in committed if c.path in newest or c.path in state.held]
    oldest_kept = min(kept_steps, default=None)
    kept: dict[str, Keep] = {}
    doomed: list[CheckpointListing] = []
    for c in listing:
        why = _why_keep(c, state, newest, oldest_kept)
        if why is None:
            doomed.append(c)
        else:
            kept[c.path] = why
    gone = {c.path for c in doomed}
    # Every manifest that stays, ours or not, keeps the files it uses.
    used = {
        f
        for c in listing
        if c.manifest is not None and c.path not in gone
        for f in c.manifest.files
    }
    deletes = []
    for c in doomed:
        manifest = f"{c.path}/{MANIFEST_NAME}"
        own = [p for p in state.sizes if p.startswith(c.path + "/")]
        files = tuple(p for p in own if p != manifest and p not in used)
        deletes.append(
            Delete(path=c.path, manifest=manifest if manifest in state.sizes else None, files=files)
        )
    return Prune(deletes=tuple(deletes), kept=kept)


def _why_keep(
    c: CheckpointListing, state: RetentionState, newest: set[str], oldest_kept: int | None
) -> Keep | None:
    if c.path in newest:
        return Keep.NEWEST
    if c.path in state.held:
        return Keep.HELD
    if c.path in state.writing:
        return Keep.WRITING
    if c.status is Status.FOREIGN:
        return Keep.FOREIGN
    newer_than_ours = state.newest_ours is None or c.step > state.newest_ours
    if c.status in (Status.PARTIAL, Status.SHARED) and newer_than_ours:
        return Keep.MAYBE_WRITING
    recent = oldest_kept is None or c.step >= oldest_kept
    if c.status in (Status.QUARANTINED, Status.CORRUPT) and recent:
        return Keep.INSPECT
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pruned:
    """What carrying out a :class:`Prune` did."""

    deleted: list[str]  #: store paths deleted
    failed: list[tuple[str, StorageError]]  #: (checkpoint directory, why) left for next time


def carry_out(store: Store, plan: Prune) -> Pruned:
    """Delete what ``plan`` says: :func:`unpublish`, then :func:`remove_files`.

    A checkpoint whose deletion fails is reported and skipped; the others still go. What is
    left is found again, and deleted, by the next prune.
    """
    first, rest = unpublish(store, plan)
    then = remove_files(store, rest)
    return Pruned(deleted=first.deleted + then.deleted, failed=first.failed + then.failed)


def unpublish(store: Store, plan: Prune) -> tuple[Pruned, tuple[Delete, ...]]:
    """The first half of :func:`carry_out`: each doomed checkpoint's manifest (or, for a
    directory without one, its files), one request per directory.

    From then on no reader takes those checkpoints for committed: a file found missing later
    reads as pruned, never as corrupt. Returns what was deleted, and the deletes whose
    remaining files :func:`remove_files` takes next (the Checkpointer does that off the
    save's critical path).
    """
    deleted: list[str] = []
    failed: list[tuple[str, StorageError]] = []
    rest: list[Delete] = []
    for d in plan.deletes:
        paths = [d.manifest] if d.manifest is not None else list(d.files)
        try:
            if paths:
                store.delete(paths)
        except StorageError as e:
            failed.append((d.path, e))
            continue
        deleted.extend(paths)
        if d.manifest is not None and d.files:
            rest.append(d)
    return Pruned(deleted=deleted, failed=failed), tuple(rest)


def remove_files(store: Store, deletes: tuple[Delete, ...]) -> Pruned:
    """The second half of :func:`carry_out`: the files of checkpoints whose manifests
    :func:`unpublish` deleted, one request per directory."""
    deleted: list[str] = []
    failed: list[tuple[str, StorageError]] = []
    for d in deletes:
        try:
            store.delete(d.files)
        except StorageError as e:
            failed.append((d.path, e))
            continue
        deleted.extend(d.files)
    return Pruned(deleted=deleted, failed=failed)
