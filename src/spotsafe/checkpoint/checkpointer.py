"""The Checkpointer: commit, discover, verify, restore and prune checkpoints in a store.

It orchestrates named parts, in the order of a save and a restore:

- spotsafe.checkpoint.snapshot: the state as a tree and tensors; host buffers for async saves
- spotsafe.checkpoint.writer: data files (shards, incremental reuse), then the manifest
- spotsafe.checkpoint.ranks: the same under torch.distributed, one checkpoint for all ranks
- spotsafe.checkpoint.discovery: what the store holds, from one listing
- spotsafe.checkpoint.reader (over .fetch): tensors read back, every byte checked
- spotsafe.checkpoint.view: the torch-free full check behind :meth:`Checkpointer.verify`
- spotsafe.checkpoint.retention: what to delete, decided, then carried out
- spotsafe.checkpoint.claim and .quarantine: one writer per store; bad checkpoints marked

Invariants (each has a test that tries to break it):

- A checkpoint exists only once its manifest is written, last, after every data file is
  durable. A reader never sees a partial checkpoint as valid.
- Discovery lists the store once and lets errors propagate: an unreadable store is an error,
  never "no checkpoint".
- Restore verifies sizes and checksums before loading, quarantines what fails and falls back
  to the next newest.
- Retention runs only after a newer checkpoint has committed, never fails that commit, and
  never deletes the newest checkpoints, the one this run resumed from, or a file a kept
  checkpoint refers to.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from spotsafe.checkpoint import (
    claim,
    distributed,
    layout,
    quarantine,
    ranks,
    reader,
    retention,
    sharded,
)
from spotsafe.checkpoint import snapshot as snap
from spotsafe.checkpoint import writer as data
from spotsafe.checkpoint.discovery import (
    CheckpointListing,
    Discovery,
    Status,
    discover,
    short,
    still_committed,
    with_commit,
)
from spotsafe.checkpoint.manifest import Manifest, checkpoint_dir
from spotsafe.checkpoint.view import verify_checkpoints
from spotsafe.env import ChildEnv
from spotsafe.errors import (
    CheckpointCorrupt,
    CheckpointMismatch,
    CheckpointNotFound,
    CheckpointTooNew,
    ConfigError,
    LeaseHeld,
    NoValidCheckpoint,
    StorageError,
)
from spotsafe.events import EventLog
from spotsafe.policy.pools import pool_from_env
from spotsafe.state import TrainState
from spotsafe.storage import StagedStore, Store, store_from_env
from spotsafe.storage.ephemeral import check_store_durable

__all__ = ["Checkpointer", "Commit", "PendingSave", "RestoreInfo", "SaveInfo", "Status"]

log = logging.getLogger("spotsafe")

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024  # one data file per 256 MiB: parallel writes, bounded reads
DEFAULT_IO_THREADS = 4
# The background persist runs at the lowest CPU priority. Measured on 2 cores (bench/README.md):
# at normal priority it slowed the training steps it overlapped by 150-400% (hashing and copy
# threads against torch's threads); at nice 19 by -10..+18%, noise, with the persist 2-3x
# longer, which the interval policy absorbs (it never saves more often than a persist takes).
BACKGROUND_NICE = 19
# Upper bounds of the settings: far above any real use, low enough that a typo (an extra
# zero, a value in the wrong unit) is an error rather than a runaway.
MAX_KEEP_LAST = 10_000
MAX_SHARD_BYTES = 1 << 40
MAX_IO_THREADS = 256
MAX_HOST_BUFFER_BYTES = 1 << 50
# A restore that finds every checkpoint it tried pruned under it lists again, this often.
RESTORE_RACE_RETRIES = 5
PRUNED_WHILE_READ = "pruned while read"


class _PrunedWhileRead:
    """What one restore pass returns when every candidate vanished under a live writer."""


_PRUNED = _PrunedWhileRead()


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    """A committed checkpoint: the state at ``step`` and ``epoch`` is stored at ``path``
    (durable; with ``staging``, durable once :meth:`Checkpointer.flush` returns)."""

    step: int
    epoch: int
    path: str  #: the checkpoint directory's URL


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveInfo:
    """What one committed save did."""

    step: int
    path: str
    bytes_written: int  #: new bytes this save wrote (the rest is shared with earlier saves)
    bytes_total: int  #: bytes of every file the checkpoint needs
    blocking_s: float  #: time the training thread was held
    persist_s: float  #: time from the call until the manifest was durable
    epoch: int = 0  #: the epoch of the saved state


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreInfo:
    """What :meth:`Checkpointer.restore` loaded."""

    step: int
    epoch: int
    path: str
    manifest: Manifest
    skipped: list[tuple[str, str]] = field(default_factory=list)  #: (path, why) passed over
    load_s: float = 0.0

    @property
    def fell_back(self) -> bool:
        """Whether a newer checkpoint was passed over as invalid."""
        return bool(self.skipped)


class PendingSave:
    """A save running in the background; ``wait()`` for it or ask ``done()``.

    A failure is raised by ``wait()``; if nobody waits, by the checkpointer's next save.
    """

    def __init__(
        self, future: cf.Future[SaveInfo], step: int, on_waited: Callable[[], None] | None = None
    ) -> None:
        self._future = future
        self.step = step
        self._on_waited = on_waited

    def done(self) -> bool:
        """Whether the save has finished (committed or failed)."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> SaveInfo:
        """Block until the checkpoint is committed; re-raise the error if it failed."""
        error = self._future.exception(timeout)  # waits; raises only on timeout
        on_waited, self._on_waited = self._on_waited, None  # it refers to the Checkpointer
        if on_waited is not None:
            on_waited()  # the outcome is now reported: the next save need not repeat it
        if error is not None:
            raise error
        return self._future.result()


class Checkpointer:
    """Saves and restores :class:`~spotsafe.TrainState` in a durable store.

    Args:
        store: a local path, an fsspec URL (``s3://bucket/run``) or a Store; None means
            ``$SPOTSAFE_STORE``.
        keep_last: how many committed checkpoints to keep (2 to 10,000; at least 2, so that a
            checkpoint that turns out corrupt always has a predecessor). None: the pool's
            ``keep_last`` (``$SPOTSAFE_POOL``; 3 in the standard pool); a value given wins.
        job_id: the job the checkpoints belong to; default ``$SPOTSAFE_JOB_ID``. A
            checkpoint of another job is never loaded.
        allow_ephemeral: allow a store that vanishes with the machine (tmpfs, /tmp on a
            cloud VM, memory://); default ``$SPOTSAFE_ALLOW_EPHEMERAL``.
        incremental: do not rewrite tensors whose bytes did not change since the last save.
        shard_bytes: target size of one data file (64 B to 1 TiB).
        io_threads: files written or read at once (1 to 256).
        host_buffer_bytes: the most host memory ``save_async`` may hold for its snapshot
            (at most 1 PiB);
            a larger state is saved synchronously instead (with a warning). None: no limit.
        events: record saves, restores and quarantines in the store's event log (True), in
            a given :class:`~spotsafe.events.EventLog`, or not at all (False).
        staging: a fast local directory to write to first; uploads to ``store`` follow in
            the background, manifest last (see spotsafe.storage.staged). ``save`` then
            returns once staged, and :meth:`flush` (called on a stop request) makes it durable.
        read_only: only look (restoring elsewhere): no durability check, no events, nothing
            quarantined; saving or pruning is an error. To look without torch (``spotsafe
            ls`` / ``verify``), use :class:`spotsafe.checkpoint.view.StoreView`.
        elastic: resume a sharded (FSDP2 / DTensor) checkpoint on another world size,
            resharded (see spotsafe.checkpoint.sharded for the data and RNG policy); False
            refuses it (CheckpointMismatch).

    Example:
        >>> import tempfile, torch, spotsafe
        >>> model = torch.nn.Linear(2, 1)
        >>> state = spotsafe.TrainState(model=model)
        >>> ckpt = spotsafe.Checkpointer(tempfile.mkdtemp(), allow_ephemeral=True)
        >>> ckpt.restore(state) is None
        True
        >>> state.step = 10
        >>> ckpt.save(state).step
        10
        >>> ckpt.restore(state).step
        10
        >>> ckpt.last_commit.step
        10
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        *,
        keep_last: int | None = None,
        job_id: str | None = None,
        allow_ephemeral: bool | None = None,
        incremental: bool = True,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        io_threads: int = DEFAULT_IO_THREADS,
        host_buffer_bytes: int | None = None,
        events: bool | EventLog = True,
        staging: str | os.PathLike[str] | None = None,
        read_only: bool = False,
        elastic: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        child = ChildEnv.from_environ()  # the supervisor->child contract (spotsafe.env)
        if keep_last is None:
            keep_last = pool_from_env(child).keep_last
        why_two = "so that a corrupt newest checkpoint always has a valid predecessor"
        _check_int("keep_last", keep_last, 2, MAX_KEEP_LAST, why_two)
        _check_int("shard_bytes", shard_bytes, layout.ALIGN, MAX_SHARD_BYTES, "one data file")
        _check_int("io_threads", io_threads, 1, MAX_IO_THREADS, "files written or read at once")
        if host_buffer_bytes is not None:
            _check_int("host_buffer_bytes", host_buffer_bytes, 0, MAX_HOST_BUFFER_BYTES, "or None")
        self.store = store_from_env(store)
        if staging is not None:
            self.store = StagedStore(self.store, staging)
        self.read_only = read_only
        self.elastic = elastic
        if read_only:
            events = False
        else:
            check_store_durable(self.store.url, allow_ephemeral=allow_ephemeral)
        self.keep_last = keep_last
        self.job_id = job_id if job_id is not None else child.job_id
        self.attempt = child.attempt
        self.generation: int | None = self.attempt
        self.incremental = incremental
        self.shard_bytes = shard_bytes
        self.io_threads = io_threads
        self.host_buffer_bytes = host_buffer_bytes
        if isinstance(events, EventLog):
            self.events: EventLog | None = events
        elif events:
            self.events = EventLog(self.store, job_id=self.job_id, attempt=self.attempt)
        else:
            self.events = None
        self.clock = clock
        self.wall_clock = wall_clock
        self.writer = secrets.token_hex(8)  # os.urandom: never touches the training RNGs
        self.last_restore: RestoreInfo | None = None  #: what the last restore loaded

        self._lock = threading.Lock()
        self._manifests: dict[str, Manifest] = {}  # path -> manifest; manifests are immutable
        self._base: tuple[str, Manifest] | None = None  # what the next save builds on
        self._last_commit: Commit | None = None
        self._resumed_from: str | None = None
        self._writing_now: set[str] = set()
        self._pending: PendingSave | None = None
        self._executor: cf.ThreadPoolExecutor | None = None
        # Retention's side work, in order: the listing taken while a manifest commits, then
        # the removal of pruned checkpoints' files, after the save has returned.
        self._side: cf.ThreadPoolExecutor | None = None
        self._side_last: cf.Future[Any] | None = None
        self._host_buffers = snap.HostBuffers()
        self._claimed = False  # holds the store's lease (spotsafe.checkpoint.claim)
        if not read_only:
            with _OPEN_LOCK:
                _OPEN.add(self)

    @property
    def last_commit(self) -> Commit | None:
        """The newest checkpoint this Checkpointer committed or restored: the state at its
        step and epoch is already stored. None before the first save or restore."""
        return self._last_commit

    def save(self, state: TrainState) -> SaveInfo:
        """Commit a checkpoint of ``state`` at ``state.step``; durable when this returns.

        Under torch.distributed every rank must call it at the same step: each writes its
        own part, rank 0 commits, and all return once the checkpoint is committed.
        """
        t0 = self.clock()
        self.wait()  # one save at a time; raises the previous one's error, if unreported
        self._claim_store()
        if sharded.is_sharded(state):  # FSDP2 / DTensor: through torch.distributed.checkpoint
            return sharded.save(self, state, t0)
        if distributed.active():
            return self._save_all_ranks(state, t0)
        shot = snap.capture(state, job_id=self.job_id)
        return self._persist(shot, snap.cpu_bytes(shot.tensors), t0, blocked_until=None)

    def save_async(self, state: TrainState) -> PendingSave:
        """Snapshot ``state`` now and commit it in the background.

        The training thread is held only to copy tensors into reusable host buffers; the
        checkpoint holds the values of this moment even if training changes them right
        after. One save is in flight at a time: a second call waits for the first (the
        back-pressure), and the snapshot buffers are bounded by ``host_buffer_bytes``.
        Under torch.distributed, sharded (FSDP2 / DTensor) state is saved in the background
        too (see spotsafe.checkpoint.sharded); replicated (DDP) state synchronously.
        """
        if sharded.is_sharded(state):  # FSDP2 / DTensor: DCP writes in the background
            return sharded.save_async(self, state)
        if distributed.active():
            # DDP: its collectives stay on the training thread, so its saves are synchronous.
            return _already_done(self.save(state))
        t0 = self.clock()
        self.wait()  # the back-pressure; raises the previous save's error, if unreported
        self._claim_store()
        shot = snap.capture(state, job_id=self.job_id)
        if self.host_buffer_bytes is not None and shot.nbytes > self.host_buffer_bytes:
            log.warning(
                "the state (%d bytes) exceeds host_buffer_bytes=%d: saving synchronously",
                shot.nbytes,
                self.host_buffer_bytes,
            )
            self._host_buffers.release()
            parts = snap.cpu_bytes(shot.tensors)
            return _already_done(self._persist(shot, parts, t0, blocked_until=None))
        parts = self._host_buffers.copy(shot.tensors)
        blocked_until = self.clock()
        return self._in_background(self._persist, shot.step, shot, parts, t0, blocked_until)

    def _in_background(self, fn: Callable[..., SaveInfo], step: int, *args: Any) -> PendingSave:
        """Run the save ``fn(*args)`` of ``step`` on the save thread, as the one in flight."""
        if self._executor is None:
            self._executor = cf.ThreadPoolExecutor(
                1, thread_name_prefix="spotsafe-save", initializer=_lower_priority
            )
        future = self._executor.submit(fn, *args)
        pending = PendingSave(future, step, on_waited=lambda: self._forget(pending))
        self._pending = pending
        return pending

    def wait(self) -> SaveInfo | None:
        """Wait for the save in flight, if any; re-raise its error."""
        pending = self._pending
        if pending is None:
            return None
        return pending.wait()

    def flush(self) -> SaveInfo | None:
        """Wait for the save in flight and for everything written to reach durable storage
        (with ``staging``: the uploads). Returns the save that was in flight, if any."""
        info = self.wait()
        self._settle()
        self.store.flush()
        return info

    def close(self) -> None:
        """Flush, stop the background thread, write pending events."""
        try:
            self.flush()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._side is not None:
                self._side.shutdown(wait=True)  # its events are recorded before the log closes
                self._side = None
            if self.events is not None:
                self.events.close()
            if isinstance(self.store, StagedStore):
                self.store.close()
            if self._claimed and distributed.rank_and_world()[0] == 0:
                self._claimed = False
                claim.unclaim(self.store)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoints(self, *, verify_sizes: bool = True) -> list[CheckpointListing]:
        """Every checkpoint directory in the store, newest first, from one listing.

        Cheap: reads manifests (small) and compares sizes, never the data files.
        """
        return self._discover(verify_sizes=verify_sizes).checkpoints

    def restore(
        self,
        state: TrainState,
        *,
        step: int | None = None,
        fresh_start_ok: bool = False,
        allow_config_change: bool = False,
    ) -> RestoreInfo | None:
        """Load the newest valid checkpoint into ``state``.

        Checkpoints that fail verification are skipped with a warning, quarantined so they
        are never picked again, and restore falls back to the next newest.

        Args:
            state: the state to load into.
            step: load this step instead of the newest.
            fresh_start_ok: return None instead of raising when checkpoints exist but none
                is valid.
            allow_config_change: load a checkpoint written under another config fingerprint.

        Returns:
            What was loaded, or None when the store holds no checkpoint.

        Raises:
            StorageError: the store could not be read (never mistaken for "no checkpoint").
            NoValidCheckpoint: checkpoints exist, none is valid.
            CheckpointMismatch: the newest valid checkpoint has another config fingerprint.
        """
        t0 = self.clock()
        self.wait()
        for _ in range(RESTORE_RACE_RETRIES):
            outcome = self._restore_once(state, step, fresh_start_ok, allow_config_change, t0)
            if not isinstance(outcome, _PrunedWhileRead):
                return outcome
        raise StorageError(
            f"{self.store.url}: every checkpoint was pruned while it was read, "
            f"{RESTORE_RACE_RETRIES} times: another process writes to this store; stop it"
        )

    def verify(self, step: int | None = None) -> list[CheckpointListing]:
        """Fully check checkpoints (every byte against its checksum) without loading them.

        Read-only: nothing is quarantined. Returns the listing with each committed
        checkpoint's status set to VALID or CORRUPT.

        Raises:
            CheckpointNotFound: ``step`` is given and no checkpoint has it.
        """
        found = self._discover(verify_sizes=False)
        return verify_checkpoints(self.store, found, step=step, threads=self.io_threads)

    def prune(self) -> list[str]:
        """Delete old checkpoints beyond ``keep_last`` and leftovers of dead writes.

        Never deletes a file that a checkpoint which stays committed refers to, whoever wrote
        it (see spotsafe.checkpoint.retention). Returns the store paths deleted.

        Raises:
            StorageError: listing the store failed, or deleting a checkpoint did (the others
                were still deleted). After a save, this is only logged and recorded.
        """
        self._check_writable()
        plan = self._plan(self._discover(verify_sizes=False))
        if isinstance(plan, retention.Hold):
            log.warning("not pruning %s: %s", self.store.url, plan.reason)
            return []
        done = retention.carry_out(self.store, plan)
        self._uncache(plan)
        if done.deleted:
            self._emit("prune", paths=done.deleted)
        if done.failed:
            raise _prune_error(done)
        return done.deleted

    def _plan(self, found: Discovery) -> retention.Prune | retention.Hold:
        """What retention deletes from the store that ``found`` shows."""
        with self._lock:
            writing = frozenset(self._writing_now)
        base = self._base
        return retention.plan_retention(
            retention.RetentionState(
                listing=found.checkpoints,
                sizes=found.sizes,
                keep_last=self.keep_last,
                held=frozenset(_in_use_here(self.store.url)),
                writing=writing,
                newest_ours=None if base is None else base[1].step,
            )
        )

    def _uncache(self, plan: retention.Prune) -> None:
        with self._lock:
            for d in plan.deletes:
                self._manifests.pop(d.path, None)

    def _save_all_ranks(self, state: TrainState, t0: float) -> SaveInfo:
        directory = checkpoint_dir(state.step, distributed.broadcast(secrets.token_hex(4)))

        def write_part(
            prefix: str, parts: list[torch.Tensor], layouts: list[tuple[str, list[int]]]
        ) -> data.Written:
            with self._writing(directory):
                return self._write(prefix, parts, layouts)

        def commit_all(tree: Any, written: data.Written, meta: dict[str, Any]) -> None:
            shot = snap.Snapshot(
                step=state.step, epoch=state.epoch, tree=tree, tensors=[], meta=meta
            )
            with self._writing(directory):
                self._commit(directory, shot, written, t0, blocked_until=None)

        total = ranks.save(
            state, directory, job_id=self.job_id, write_part=write_part, commit_all=commit_all
        )
        return self._committed_by_all_ranks(state.step, state.epoch, directory, total, t0)

    def _committed_by_all_ranks(
        self,
        step: int,
        epoch: int,
        directory: str,
        bytes_written: int,
        t0: float,
        *,
        blocked_until: float | None = None,
    ) -> SaveInfo:
        """Record a checkpoint every rank wrote part of, durable now; ``blocked_until``:
        when the training thread went on, for a save that ended in the background."""
        done = self.clock()
        path = f"{self.store.url}/{directory}"
        self._last_commit = Commit(step=step, epoch=epoch, path=path)
        return SaveInfo(
            step=step,
            epoch=epoch,
            path=path,
            bytes_written=bytes_written,
            bytes_total=0,
            blocking_s=(done if blocked_until is None else blocked_until) - t0,
            persist_s=done - t0,
        )

    def _persist(
        self, shot: snap.Snapshot, parts: list[torch.Tensor], t0: float, blocked_until: float | None
    ) -> SaveInfo:
        directory = checkpoint_dir(shot.step, secrets.token_hex(4))
        with self._writing(directory):
            written = self._write(directory, parts, shot.layouts)
            return self._commit(directory, shot, written, t0, blocked_until)

    def _write(
        self, directory: str, parts: list[torch.Tensor], layouts: list[tuple[str, list[int]]]
    ) -> data.Written:
        self._check_writable()
        base = self._base if self.incremental else None
        return data.write_data(
            self.store,
            directory,
            parts,
            layouts,
            reuse=None if base is None else base[1],
            shard_bytes=self.shard_bytes,
            threads=self.io_threads,
        )

    def _commit(
        self,
        directory: str,
        shot: snap.Snapshot,
        written: data.Written,
        t0: float,
        blocked_until: float | None,
    ) -> SaveInfo:
        """Write the manifest, last: from now on the checkpoint exists. Then prune."""
        manifest = data.new_manifest(
            step=shot.step,
            epoch=shot.epoch,
            tree=shot.tree,
            written=written,
            meta=shot.meta,
            writer=self.writer,
            generation=self.generation,
            created_at=self.wall_clock(),
        )
        # Retention's listing goes out now, beside the fence check and the manifest: it need
        # not wait for them (see _prune_after_commit), and the save need not wait for it.
        listing = self._side_submit(self._list_for_retention)
        size = data.commit(self.store, directory, manifest, generation=self.generation)
        path = f"{self.store.url}/{directory}"
        with self._lock:
            self._manifests[directory] = manifest
            self._base = (directory, manifest)
            self._last_commit = Commit(step=shot.step, epoch=shot.epoch, path=path)
        done = self.clock()
        info = SaveInfo(
            step=shot.step,
            epoch=shot.epoch,
            path=path,
            bytes_written=written.bytes_written,
            bytes_total=manifest.total_bytes,
            blocking_s=(done if blocked_until is None else blocked_until) - t0,
            persist_s=done - t0,
        )
        log.info(
            "checkpoint step %d committed: %s (%d bytes new)", shot.step, path, info.bytes_written
        )
        self._emit(
            "save",
            step=shot.step,
            path=directory,
            bytes_written=info.bytes_written,
            bytes_total=info.bytes_total,
            blocking_s=info.blocking_s,
            persist_s=info.persist_s,
        )
        self._prune_after_commit(listing, directory, manifest, size)
        return info

    def _list_for_retention(self) -> Discovery:
        """The store as retention sees it (on the side thread: never waits for side work)."""
        return discover(self.store, job_id=self.job_id, cache=self._manifests, verify_sizes=False)

    def _prune_after_commit(
        self, listing: cf.Future[Discovery], directory: str, manifest: Manifest, size: int
    ) -> None:
        """Retention after ``directory`` committed; never raises.

        The listing was taken while the manifest was being written, so it may miss that
        manifest: :func:`with_commit` adds it (unless the store is staged). Old manifests are
        deleted before this returns (from then on at most ``keep_last`` checkpoints, plus
        those kept for a reason, are committed); the files they used go on the side thread,
        after the save has returned.
        """
        try:
            found = listing.result()
            if not isinstance(self.store, StagedStore):
                # Durable on return: count it. A staged manifest is not durable yet, and
                # until it is, the checkpoints it would push out must stay.
                found = with_commit(found, directory, manifest, size)
            plan = self._plan(found)
            if isinstance(plan, retention.Hold):
                log.warning("not pruning %s: %s", self.store.url, plan.reason)
                return
            first, rest = retention.unpublish(self.store, plan)
            self._uncache(plan)
        except Exception as e:
            self._prune_failed(e)
            return
        if rest:
            self._side_submit(self._remove_files, first, rest)
        else:
            self._report_prune(first)

    def _remove_files(self, first: retention.Pruned, rest: tuple[retention.Delete, ...]) -> None:
        try:
            then = retention.remove_files(self.store, rest)
        except Exception as e:
            self._prune_failed(e)  # a bug: report it here, a side task's error is never read
            return
        deleted, failed = first.deleted + then.deleted, first.failed + then.failed
        self._report_prune(retention.Pruned(deleted=deleted, failed=failed))

    def _report_prune(self, done: retention.Pruned) -> None:
        if done.deleted:
            self._emit("prune", paths=done.deleted)
        if done.failed:
            self._prune_failed(_prune_error(done))

    def _prune_failed(self, e: Exception) -> None:
        # The checkpoint is committed: a failed prune (a listing or a delete refused, or a
        # bug) only leaves old files for the next save's prune, and must never turn a
        # committed save into a failed one (three failed saves stop training).
        log.warning("pruning old checkpoints in %s failed: %s", self.store.url, e,
                    exc_info=not isinstance(e, StorageError))  # fmt: skip
        self._emit("prune_failed", error=str(e), error_type=type(e).__name__)

    def _side_submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        with self._lock:
            if self._side is None:
                self._side = cf.ThreadPoolExecutor(1, thread_name_prefix="spotsafe-prune")
            try:
                future = self._side.submit(fn, *args)
            except RuntimeError:
                future = None  # the interpreter is exiting (a save from an atexit hook)
            else:
                self._side_last = future
        if future is None:  # run it here, as a save did before it had a side thread
            future = cf.Future()
            try:
                future.set_result(fn(*args))
            except Exception as e:
                future.set_exception(e)
        return future

    def _settle(self) -> None:
        """Wait for retention's side work (one thread, in order: the last task ends last)."""
        future = self._side_last
        if future is not None:
            cf.wait([future])

    def _claim_store(self) -> None:
        """Outside the supervisor, hold the store's lease before the first write: a second
        writer is refused (see spotsafe.checkpoint.claim). Under ``spotsafe run`` the
        supervisor holds it and the attempt fence guards each commit."""
        self._check_writable()
        if self._claimed or self.generation is not None:
            return
        error = None
        if distributed.rank_and_world()[0] == 0:  # one writer per job: rank 0 speaks for all
            try:
                claim.claim(self.store)
            except LeaseHeld as e:
                error = str(e)
        if distributed.active():
            error = distributed.broadcast(error)
        if error is not None:
            raise LeaseHeld(error)
        self._claimed = True

    def _forget(self, pending: PendingSave) -> None:
        if self._pending is pending:
            self._pending = None

    @contextlib.contextmanager
    def _writing(self, directory: str) -> Iterator[None]:
        """Mark ``directory`` as being written: retention leaves it alone meanwhile."""
        with self._lock:
            self._writing_now.add(directory)
        try:
            yield
        finally:
            with self._lock:
                self._writing_now.discard(directory)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ConfigError(f"{self.store.url} was opened read_only: it cannot be written")

    def _discover(self, *, verify_sizes: bool) -> Discovery:
        self._settle()  # a listing shows no checkpoint half pruned by our own side thread
        return discover(
            self.store, job_id=self.job_id, cache=self._manifests, verify_sizes=verify_sizes
        )

    def _restore_once(
        self,
        state: TrainState,
        step: int | None,
        fresh_start_ok: bool,
        allow_config_change: bool,
        t0: float,
    ) -> RestoreInfo | _PrunedWhileRead | None:
        """One pass of :meth:`restore` over one listing; ``_PRUNED`` when every candidate it
        tried vanished under a live writer's retention (list again)."""
        found = self._discover(verify_sizes=False)
        loadable = (Status.VALID, Status.CORRUPT, Status.NEWER)
        candidates = [c for c in found.checkpoints if c.status in loadable]
        if step is not None:
            candidates = [c for c in candidates if c.step == step]
            if not candidates:
                raise CheckpointNotFound(f"{self.store.url}: no checkpoint at step {step}")
        skipped: list[tuple[str, str]] = []
        for c in found.checkpoints:
            if c.status is Status.FOREIGN:
                log.warning("skipping %s/%s: %s", self.store.url, c.path, c.reason)
                skipped.append((c.path, c.reason))
        for c in candidates:
            if c.status is Status.NEWER:
                # Not corrupt: falling back past it would silently resume from older state.
                raise CheckpointTooNew(f"{self.store.url}/{c.path}: {c.reason}")
            loaded, problem = self._read_checked(c, state, found.sizes, allow_config_change)
            # Under torch.distributed every rank must load the same step, or none does.
            if not distributed.all_true(problem is None):
                skipped.append((c.path, problem or "invalid on another rank"))
                continue
            return self._adopt(state, c, loaded, skipped, t0)
        if any(why == PRUNED_WHILE_READ for _, why in skipped):
            return _PRUNED
        self._nothing_loaded(found, candidates, skipped, step, fresh_start_ok)
        return None

    def _read_checked(
        self,
        c: CheckpointListing,
        state: TrainState,
        sizes: dict[str, int],
        allow_config_change: bool,
    ) -> tuple[Any, str | None]:
        """(the state read from ``c``, None), or (None, why it cannot be loaded): corrupt
        (then quarantined) or pruned while read."""
        where = f"{self.store.url}/{c.path}"
        try:
            if c.manifest is None:
                raise CheckpointCorrupt(c.reason)
            _check_fingerprint(c.manifest, state, where, allow_config_change)
            if sharded.is_sharded(state) or sharded.sharded_info(c.manifest) is not None:
                loaded = sharded.read(self.store, c.manifest, c.path, sizes, state,
                                      threads=self.io_threads, elastic=self.elastic)  # fmt: skip
            else:
                loaded = reader.load_state(
                    self.store, c.manifest, c.path, sizes, threads=self.io_threads, into=state
                )
        except CheckpointCorrupt as e:
            # A file that vanished under a live writer's retention is not corruption.
            if not still_committed(self.store, c.path):
                return None, PRUNED_WHILE_READ
            problem = short(e, where)
            self._quarantine(c.path, problem)
            return None, problem
        return loaded, None

    def _adopt(
        self,
        state: TrainState,
        c: CheckpointListing,
        loaded: Any,
        skipped: list[tuple[str, str]],
        t0: float,
    ) -> RestoreInfo:
        """Load the verified state ``loaded`` of checkpoint ``c`` into ``state``."""
        assert c.manifest is not None
        where = f"{self.store.url}/{c.path}"
        try:
            if isinstance(loaded, sharded.Loaded):
                loaded.apply(state, self._emit)
            else:
                state.load_state_dict(loaded)
        except Exception as e:
            # The bytes are verified, so this is not corruption: the checkpoint holds a
            # state this run's objects refuse (other code, a hand-edited manifest).
            # Quarantining would condemn every older checkpoint of the same job too.
            raise CheckpointMismatch(
                f"{where} does not fit this run's state ({type(e).__name__}: {e}); resume"
                " with the code that wrote it, or give this run its own store"
            ) from e
        manifest = c.manifest
        with self._lock:
            self._resumed_from = c.path
            self._base = (c.path, manifest)
            self._last_commit = Commit(step=manifest.step, epoch=manifest.epoch, path=where)
        info = RestoreInfo(
            step=manifest.step,
            epoch=manifest.epoch,
            path=where,
            manifest=manifest,
            skipped=skipped,
            load_s=self.clock() - t0,
        )
        self.last_restore = info
        log.info("resumed from %s (step %d)", info.path, info.step)
        self._emit(
            "restore",
            step=info.step,
            path=c.path,
            skipped=[p for p, _ in skipped],
            load_s=info.load_s,
        )
        return info

    def _nothing_loaded(
        self,
        found: Discovery,
        candidates: list[CheckpointListing],
        skipped: list[tuple[str, str]],
        step: int | None,
        fresh_start_ok: bool,
    ) -> None:
        """Return (a fresh start) when that is right, else raise the error that says why not."""
        invalid = [c for c in found.checkpoints if c.status in (Status.CORRUPT, Status.QUARANTINED)]
        foreign = [c for c in found.checkpoints if c.status is Status.FOREIGN]
        if step is None and not candidates and not invalid and not foreign:
            log.info("no checkpoint in %s: starting fresh", self.store.url)
            self._emit("restore", step=None, path=None, skipped=[p for p, _ in skipped])
            return
        if fresh_start_ok:
            log.warning("no valid checkpoint in %s: starting fresh as asked", self.store.url)
            self._emit("restore", step=None, path=None, skipped=[p for p, _ in skipped])
            return
        if foreign and not invalid and not candidates:
            owners = sorted({str(c.manifest.job_id) for c in foreign if c.manifest})
            raise CheckpointMismatch(
                f"{self.store.url} holds checkpoints of job {', '.join(owners)}, and this run is"
                f" job {self.job_id!r}: starting fresh here would mix two jobs in one store."
                " Resume with the same SPOTSAFE_JOB_ID, give this job its own store, or pass"
                " fresh_start_ok=True"
            )
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped) or "all quarantined earlier"
        raise NoValidCheckpoint(
            f"{self.store.url} holds {len(candidates) + len(invalid)} checkpoint(s) but none"
            f" is valid ({reasons}). Inspect them with `spotsafe ls`, lift a quarantine with"
            " `spotsafe verify --release STEP`, or pass fresh_start_ok=True to start over"
        )

    def _quarantine(self, directory: str, reason: str) -> None:
        if self.read_only:
            log.warning("checkpoint %s/%s is invalid: %s", self.store.url, directory, reason)
            return
        log.warning(
            "checkpoint %s/%s is invalid and is quarantined: %s", self.store.url, directory, reason
        )
        self._emit("quarantine", path=directory, reason=reason)
        try:
            quarantine.mark(
                self.store, directory, reason=reason, at=self.wall_clock(), by=self.writer
            )
        except StorageError as e:
            # Quarantine is bookkeeping: without it the next restore verifies (and skips)
            # this checkpoint again, which costs time but never loads it.
            log.warning("could not quarantine %s: %s", directory, e)

    def _emit(self, kind: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.record(kind, **fields)


# The writable Checkpointers of this process. They share its claim on a store (see
# spotsafe.checkpoint.claim), so retention by one keeps what the others build on.
_OPEN: weakref.WeakSet[Checkpointer] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def _in_use_here(url: str) -> set[str]:
    """The checkpoints that this process's Checkpointers on ``url`` resumed from or build
    on: the next incremental save of each refers to the latter's files."""
    with _OPEN_LOCK:
        peers = [c for c in _OPEN if c.store.url == url]
    out: set[str] = set()
    for c in peers:
        base = c._base
        out.update(p for p in (c._resumed_from, base[0] if base else None) if p is not None)
    return out


def _check_fingerprint(
    manifest: Manifest, state: TrainState, where: str, allow_config_change: bool
) -> None:
    """Raise CheckpointMismatch when ``manifest`` was written under another run config."""
    if (
        manifest.config_fingerprint
        and state.config_fingerprint
        and manifest.config_fingerprint != state.config_fingerprint
        and not allow_config_change
    ):
        raise CheckpointMismatch(
            f"{where} was written with config fingerprint {manifest.config_fingerprint}, this"
            f" run has {state.config_fingerprint}; resume with the same config, or pass"
            " allow_config_change=True to load it anyway"
        )


def _prune_error(done: retention.Pruned) -> StorageError:
    path, error = done.failed[0]
    more = f" (and {len(done.failed) - 1} more)" if len(done.failed) > 1 else ""
    out = StorageError(f"could not delete {path}{more}: {error}")
    out.__cause__ = error
    return out


def _check_int(name: str, value: object, low: int, high: int, why: str) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"{name}={value!r}: must be an int from {low} to {high} ({why})")


def _already_done(info: SaveInfo) -> PendingSave:
    """A PendingSave for a save that committed before it was returned."""
    future: cf.Future[SaveInfo] = cf.Future()
    future.set_result(info)
    return PendingSave(future, info.step)


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: nice is per thread and inherited by
    the threads it starts, so the hashing pool of a background save runs low too)."""
    if hasattr(os, "setpriority"):
        # Raising one's own nice value is always allowed; a sandbox that forbids it only
        # costs training speed, never the save.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
