"""The Checkpointer: commit, discover, verify, restore and prune checkpoints in a store.

Invariants (each has a test that tries to break it):

- A checkpoint exists only once its manifest is written, last, after every data file is
  durable. A reader never sees a partial checkpoint as valid.
- Discovery lists the store once and lets errors propagate: an unreadable store is an error,
  never "no checkpoint".
- Restore verifies sizes and checksums before loading, quarantines what fails and falls back
  to the next newest checkpoint.
- Retention runs only after a newer checkpoint has committed, and never deletes the newest
  checkpoints, the one this run resumed from, or a file a kept checkpoint refers to.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from spotsafe.checkpoint import claim, distributed, layout, quarantine, tree
from spotsafe.checkpoint.discovery import (
    CheckpointListing,
    Discovery,
    Status,
    check_sizes,
    discover,
    short,
    still_committed,
)
from spotsafe.checkpoint.manifest import (
    MANIFEST_NAME,
    Manifest,
    TensorEntry,
    checkpoint_dir,
)
from spotsafe.errors import (
    CheckpointCorrupt,
    CheckpointMismatch,
    CheckpointNotFound,
    CheckpointTooNew,
    ConfigError,
    LeaseHeld,
    NoValidCheckpoint,
    ObjectMissing,
    StorageError,
)
from spotsafe.events import EventLog
from spotsafe.jobrecord import check_fence
from spotsafe.state import ENV_ATTEMPT, ENV_JOB_ID, TrainState, merge_parts
from spotsafe.storage import StagedStore, Store, store_from_env
from spotsafe.storage.ephemeral import check_store_durable

log = logging.getLogger("spotsafe")

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024  # one data file per 256 MiB: parallel writes, bounded reads
DEFAULT_IO_THREADS = 4
# Unchanged tensors smaller than this are written again rather than referenced: rewriting a
# few KB (RNG states, counters) is cheaper than keeping an old data file alive for them.
MIN_SHARED_BYTES = 64 * 1024
OWN_STORAGE_BYTES = 1024 * 1024  # loaded tensors below this are copied out of the file buffer
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


class _PrunedWhileRead:
    """What one restore pass returns when every candidate vanished under a live writer."""


_PRUNED_WHILE_READ = _PrunedWhileRead()


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveInfo:
    """What one committed save did."""

    step: int
    path: str
    bytes_written: int  #: new bytes this save wrote (the rest is shared with earlier saves)
    bytes_total: int  #: bytes of every file the checkpoint needs
    blocking_s: float  #: time the training thread was held
    persist_s: float  #: time from the call until the manifest was durable


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
        if self._on_waited is not None:
            self._on_waited()  # the outcome is now reported: the next save need not repeat it
        if error is not None:
            raise error
        return self._future.result()


class Checkpointer:
    """Saves and restores :class:`~spotsafe.TrainState` in a durable store.

    Args:
        store: a local path, an fsspec URL (``s3://bucket/run``) or a Store; None means
            ``$SPOTSAFE_STORE``.
        keep_last: how many committed checkpoints to keep (2 to 10,000; at least 2, so that a
            checkpoint that turns out corrupt always has a predecessor).
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
        read_only: only look (``spotsafe ls`` / ``verify``, or restoring elsewhere): no
            durability check, no events, nothing quarantined; saving or pruning is an error.

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
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        *,
        keep_last: int = 3,
        job_id: str | None = None,
        allow_ephemeral: bool | None = None,
        incremental: bool = True,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        io_threads: int = DEFAULT_IO_THREADS,
        host_buffer_bytes: int | None = None,
        events: bool | EventLog = True,
        staging: str | os.PathLike[str] | None = None,
        read_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
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
        if read_only:
            events = False
        else:
            _check_durable(self.store, allow_ephemeral)
        self.keep_last = keep_last
        self.job_id = job_id if job_id is not None else (os.environ.get(ENV_JOB_ID) or None)
        attempt = os.environ.get(ENV_ATTEMPT, "")
        self.attempt = int(attempt) if attempt.isdigit() else None
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

        self._lock = threading.Lock()
        self._manifests: dict[str, Manifest] = {}  # path -> manifest; manifests are immutable
        self._last: tuple[str, Manifest] | None = None  # newest committed by us or restored
        self._resumed_from: str | None = None
        self._inflight: set[str] = set()
        self._pending: PendingSave | None = None
        self._executor: cf.ThreadPoolExecutor | None = None
        self._buffers: list[torch.Tensor] = []
        self._claimed = False  # holds the store's lease (spotsafe.checkpoint.claim)
        if not read_only:
            with _OPEN_LOCK:
                _OPEN.add(self)

    # ------------------------------------------------------------------ saving

    def save(self, state: TrainState) -> SaveInfo:
        """Commit a checkpoint of ``state`` at ``state.step``; durable when this returns.

        Under torch.distributed every rank must call it at the same step: each writes its
        own part, rank 0 commits, and all return once the checkpoint is committed.
        """
        t0 = self.clock()
        self.wait()  # one save at a time; raises the previous one's error, if unreported
        self._claim_store()
        if distributed.active():
            return self._save_distributed(state, t0)
        encoded, tensors, meta = self._capture(state)
        parts = [_to_cpu_bytes(t) for t in tensors]
        return self._persist(state.step, state.epoch, encoded, parts, meta, t0, t0)

    def _save_distributed(self, state: TrainState, t0: float) -> SaveInfo:
        rank, world = distributed.rank_and_world()
        directory = checkpoint_dir(state.step, distributed.broadcast(secrets.token_hex(4)))
        part = {"rank": state.rank_state_dict(), "shared": None}
        if rank == 0:
            part["shared"] = state.shared_state_dict()
        tensors: list[torch.Tensor] = []
        encoded = tree.encode(part, tensors)
        layouts = [(tree.dtype_name(t.dtype), list(t.shape)) for t in tensors]
        try:
            with self._writing(directory):
                entries, files, written = self._write_data(
                    f"{directory}/rank-{rank:05d}", [_to_cpu_bytes(t) for t in tensors], layouts
                )
            mine: Any = (encoded, [dataclasses.asdict(e) for e in entries], files, written)
        except StorageError as e:
            mine = f"rank {rank}: {e}"
        gathered = distributed.gather(mine)
        error = None
        if gathered is not None:  # rank 0 commits once every rank's part is durable
            failures = [g for g in gathered if isinstance(g, str)]
            error = "; ".join(failures) or None
            if error is None:
                trees: list[Any] = []
                all_entries: list[TensorEntry] = []
                all_files: dict[str, int] = {}
                total = 0
                for enc, ents, fls, wr in gathered:
                    trees.append(distributed.offset_tensors(enc, len(all_entries)))
                    all_entries.extend(TensorEntry(**e) for e in ents)
                    all_files.update(fls)
                    total += wr
                meta = state.metadata()
                meta["world_size"] = world
                if self.job_id is not None:
                    meta["job_id"] = self.job_id
                combined = {"$dict": [["ranks", {"$list": trees}]]}
                try:
                    with self._writing(directory):
                        self._commit(
                            directory, state.step, state.epoch, combined, all_entries,
                            all_files, meta, total, t0, t0,
                        )  # fmt: skip
                except StorageError as e:
                    error = f"rank 0: {e}"
        error = distributed.broadcast(error)
        if error is not None:
            raise StorageError(f"distributed checkpoint at step {state.step} failed: {error}")
        done = self.clock()
        return SaveInfo(
            step=state.step,
            path=f"{self.store.url}/{directory}",
            bytes_written=0
            if gathered is None
            else sum(g[3] for g in gathered if not isinstance(g, str)),
            bytes_total=0,
            blocking_s=done - t0,
            persist_s=done - t0,
        )

    def save_async(self, state: TrainState) -> PendingSave:
        """Snapshot ``state`` now and commit it in the background.

        The training thread is held only to copy tensors into reusable host buffers; the
        checkpoint holds the values of this moment even if training changes them right
        after. One save is in flight at a time: a second call waits for the first (the
        back-pressure), and the snapshot buffers are bounded by ``host_buffer_bytes``.
        """
        if distributed.active():
            # Collectives must stay on the training thread: distributed saves are synchronous.
            return _already_done(self.save(state))
        t0 = self.clock()
        self.wait()  # the back-pressure; raises the previous save's error, if unreported
        self._claim_store()
        encoded, tensors, meta = self._capture(state)
        needed = sum(t.numel() * t.element_size() for t in tensors)
        if self.host_buffer_bytes is not None and needed > self.host_buffer_bytes:
            log.warning(
                "the state (%d bytes) exceeds host_buffer_bytes=%d: saving synchronously",
                needed,
                self.host_buffer_bytes,
            )
            self._buffers.clear()
            parts = [_to_cpu_bytes(t) for t in tensors]
            return _already_done(
                self._persist(state.step, state.epoch, encoded, parts, meta, t0, t0)
            )
        parts = self._snapshot(tensors)
        blocked_until = self.clock()
        if self._executor is None:
            self._executor = cf.ThreadPoolExecutor(
                1, thread_name_prefix="spotsafe-save", initializer=_lower_priority
            )
        step, epoch = state.step, state.epoch
        future = self._executor.submit(
            self._persist, step, epoch, encoded, parts, meta, t0, blocked_until
        )
        pending = PendingSave(future, step, on_waited=lambda: self._forget(pending))
        self._pending = pending
        return pending

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

    def _capture(self, state: TrainState) -> tuple[Any, list[torch.Tensor], dict[str, Any]]:
        tensors: list[torch.Tensor] = []
        encoded = tree.encode(state.state_dict(), tensors)
        meta = state.metadata()
        meta["layouts"] = [(tree.dtype_name(t.dtype), list(t.shape)) for t in tensors]
        if self.job_id is not None:
            meta["job_id"] = self.job_id
        return encoded, tensors, meta

    def _snapshot(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Copy every tensor's bytes into reusable host buffers."""
        use_pinned = torch.cuda.is_available() and any(t.is_cuda for t in tensors)
        parts: list[torch.Tensor] = []
        for i, t in enumerate(tensors):
            src = t.detach()
            nbytes = src.numel() * src.element_size()
            if i < len(self._buffers) and self._buffers[i].numel() == nbytes:
                buf = self._buffers[i]
            else:
                buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=use_pinned)
                if i < len(self._buffers):
                    self._buffers[i] = buf
                else:
                    self._buffers.append(buf)
            if nbytes:
                src = src.contiguous()
                buf.copy_(layout.byte_view(src), non_blocking=src.is_cuda)
            parts.append(buf)
        del self._buffers[len(tensors) :]
        if use_pinned:
            torch.cuda.synchronize()
        return parts

    def _persist(
        self,
        step: int,
        epoch: int,
        encoded: Any,
        parts: list[torch.Tensor],
        meta: dict[str, Any],
        t0: float,
        blocked_until: float,
    ) -> SaveInfo:
        directory = checkpoint_dir(step, secrets.token_hex(4))
        with self._writing(directory):
            entries, files, written = self._write_data(directory, parts, meta["layouts"])
            return self._commit(
                directory, step, epoch, encoded, entries, files, meta, written, t0, blocked_until
            )

    @contextlib.contextmanager
    def _writing(self, directory: str) -> Iterator[None]:
        """Mark ``directory`` as being written: retention leaves it alone meanwhile."""
        with self._lock:
            self._inflight.add(directory)
        try:
            yield
        finally:
            with self._lock:
                self._inflight.discard(directory)

    def _commit(
        self,
        directory: str,
        step: int,
        epoch: int,
        encoded: Any,
        entries: list[TensorEntry],
        files: dict[str, int],
        meta: dict[str, Any],
        written: int,
        t0: float,
        blocked_until: float,
    ) -> SaveInfo:
        """Write the manifest, last: from now on the checkpoint exists. Then prune."""
        manifest = Manifest(
            step=step,
            epoch=epoch,
            created_at=self.wall_clock(),
            writer=self.writer,
            job_id=meta["job_id"],
            attempt=meta["attempt"],
            generation=self.generation,
            world_size=meta["world_size"],
            versions=meta["versions"],
            config_fingerprint=meta["config_fingerprint"],
            files=files,
            tensors=entries,
            tree=encoded,
        )
        # A stale attempt (its supervisor lost the job to a newer one) must not commit, nor a
        # writer that lost the store's lease.
        check_fence(self.store, self.generation)
        claim.check(self.store)
        self.store.write_bytes(f"{directory}/{MANIFEST_NAME}", manifest.to_bytes())
        with self._lock:
            self._manifests[directory] = manifest
            self._last = (directory, manifest)
        done = self.clock()
        info = SaveInfo(
            step=step,
            path=f"{self.store.url}/{directory}",
            bytes_written=written,
            bytes_total=manifest.total_bytes,
            blocking_s=blocked_until - t0 if blocked_until > t0 else done - t0,
            persist_s=done - t0,
        )
        log.info("checkpoint step %d committed: %s (%d bytes new)", step, info.path, written)
        self._emit(
            "save",
            step=step,
            path=directory,
            bytes_written=written,
            bytes_total=info.bytes_total,
            blocking_s=info.blocking_s,
            persist_s=info.persist_s,
        )
        try:
            self.prune()
        except StorageError as e:
            # The checkpoint is committed: a failed prune only leaves old files for the next
            # one, and must not fail a save (three failed saves stop training).
            log.warning("pruning old checkpoints in %s failed: %s", self.store.url, e)
            self._emit("prune_failed", error=str(e))
        return info

    def _check_writable(self) -> None:
        if self.read_only:
            raise ConfigError(f"{self.store.url} was opened read_only: it cannot be written")

    def _write_data(
        self, directory: str, parts: list[torch.Tensor], layouts: list[tuple[str, list[int]]]
    ) -> tuple[list[TensorEntry], dict[str, int], int]:
        """Write the tensors not already stored; return their entries and the files used."""
        self._check_writable()
        hashes = self._map(layout.hash_span, parts)
        previous: dict[tuple[str, int], TensorEntry] = {}
        last = self._last
        if self.incremental and last is not None:
            previous = {
                (e.xxh3, e.nbytes): e for e in last[1].tensors if e.nbytes >= MIN_SHARED_BYTES
            }
        entries: list[TensorEntry | None] = [None] * len(parts)
        shards: list[list[int]] = []
        shard_size = self.shard_bytes  # force a new shard for the first new tensor
        for i, (part, digest) in enumerate(zip(parts, hashes, strict=True)):
            old = previous.get((digest, part.numel()))
            if old is not None:
                dtype, shape = layouts[i]
                entries[i] = dataclasses.replace(old, dtype=dtype, shape=shape)
                continue
            span = layout.span_of(part.numel())
            if shard_size + span > self.shard_bytes and (shard_size > 0 or not shards):
                shards.append([])
                shard_size = 0
            shards[-1].append(i)
            shard_size += span

        def write_shard(k: int) -> tuple[str, int]:
            path = f"{directory}/data-{k:03d}.bin"
            members = shards[k]
            size = self.store.write(path, layout.chunks_with_padding([parts[i] for i in members]))
            return path, size

        files: dict[str, int] = {}
        written = 0
        for k, (path, size) in enumerate(self._map(write_shard, range(len(shards)))):
            files[path] = size
            written += size
            offset = 0
            for i in shards[k]:
                n = parts[i].numel()
                dtype, shape = layouts[i]
                entries[i] = TensorEntry(
                    file=path,
                    offset=offset,
                    nbytes=n,
                    span=layout.span_of(n),
                    dtype=dtype,
                    shape=shape,
                    xxh3=hashes[i],
                )
                offset += layout.span_of(n)
        final: list[TensorEntry] = []
        for e in entries:
            assert e is not None
            if e.file not in files:
                files[e.file] = self._file_size(e.file)
            final.append(e)
        return final, files, written

    def _file_size(self, path: str) -> int:
        last = self._last
        assert last is not None
        return last[1].files[path]

    # ---------------------------------------------------------------- discovery

    def checkpoints(self, *, verify_sizes: bool = True) -> list[CheckpointListing]:
        """Every checkpoint directory in the store, newest first, from one listing.

        Cheap: reads manifests (small) and compares sizes, never the data files.
        """
        return self._discover(verify_sizes=verify_sizes).checkpoints

    def _discover(self, *, verify_sizes: bool) -> Discovery:
        return discover(
            self.store, job_id=self.job_id, cache=self._manifests, verify_sizes=verify_sizes
        )

    # ---------------------------------------------------------------- restoring

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

    def _restore_once(
        self,
        state: TrainState,
        step: int | None,
        fresh_start_ok: bool,
        allow_config_change: bool,
        t0: float,
    ) -> RestoreInfo | _PrunedWhileRead | None:
        """One pass of :meth:`restore` over one listing; ``_PRUNED_WHILE_READ`` when every
        candidate it tried vanished under a live writer's retention (list again)."""
        found = self._discover(verify_sizes=False)
        listing, all_sizes = found.checkpoints, found.sizes
        loadable = (Status.VALID, Status.CORRUPT, Status.NEWER)
        candidates = [c for c in listing if c.status in loadable]
        if step is not None:
            candidates = [c for c in candidates if c.step == step]
            if not candidates:
                raise CheckpointNotFound(f"{self.store.url}: no checkpoint at step {step}")
        skipped: list[tuple[str, str]] = []
        foreign = [c for c in listing if c.status is Status.FOREIGN]
        for c in foreign:
            log.warning("skipping %s/%s: %s", self.store.url, c.path, c.reason)
            skipped.append((c.path, c.reason))
        for c in candidates:
            where = f"{self.store.url}/{c.path}"
            if c.status is Status.NEWER:
                # Not corrupt: falling back past it would silently resume from older state.
                raise CheckpointTooNew(f"{where}: {c.reason}")
            problem, pruned = None, False
            try:
                if c.manifest is None:
                    raise CheckpointCorrupt(c.reason)
                manifest = c.manifest
                if (
                    manifest.config_fingerprint
                    and state.config_fingerprint
                    and manifest.config_fingerprint != state.config_fingerprint
                    and not allow_config_change
                ):
                    raise CheckpointMismatch(
                        f"{where} was written with config fingerprint"
                        f" {manifest.config_fingerprint}, this run has"
                        f" {state.config_fingerprint}; resume with the same config, or pass"
                        " allow_config_change=True to load it anyway"
                    )
                check_sizes(manifest, all_sizes, where)
                tensors = self._load_tensors(manifest, c.path)
                decoded = _this_ranks_state(tree.decode(manifest.tree, tensors), manifest, where)
            except CheckpointCorrupt as e:
                problem = short(e, where)
                # A file that vanished under a live writer's retention is not corruption.
                pruned = not still_committed(self.store, c.path)
                if not pruned:
                    self._quarantine(c.path, problem)
            # Under torch.distributed every rank must load the same step, or none does.
            if not distributed.all_true(problem is None):
                skipped.append((c.path, "pruned while read" if pruned else problem or
                                "invalid on another rank"))  # fmt: skip
                continue
            try:
                state.load_state_dict(decoded)
            except Exception as e:
                # The bytes are verified, so this is not corruption: the checkpoint holds a
                # state this run's objects refuse (other code, a hand-edited manifest).
                # Quarantining would condemn every older checkpoint of the same job too.
                raise CheckpointMismatch(
                    f"{where} does not fit this run's state ({type(e).__name__}: {e}); resume"
                    " with the code that wrote it, or give this run its own store"
                ) from e
            self._resumed_from = c.path
            with self._lock:
                self._last = (c.path, manifest)
            info = RestoreInfo(
                step=manifest.step,
                epoch=manifest.epoch,
                path=where,
                manifest=manifest,
                skipped=skipped,
                load_s=self.clock() - t0,
            )
            log.info("resumed from %s (step %d)", info.path, info.step)
            self._emit(
                "restore",
                step=info.step,
                path=c.path,
                skipped=[p for p, _ in skipped],
                load_s=info.load_s,
            )
            return info
        if any(why == "pruned while read" for _, why in skipped):
            return _PRUNED_WHILE_READ
        invalid = [c for c in listing if c.status in (Status.CORRUPT, Status.QUARANTINED)]
        if step is None and not candidates and not invalid and not foreign:
            log.info("no checkpoint in %s: starting fresh", self.store.url)
            self._emit("restore", step=None, path=None, skipped=[p for p, _ in skipped])
            return None
        if fresh_start_ok:
            log.warning("no valid checkpoint in %s: starting fresh as asked", self.store.url)
            self._emit("restore", step=None, path=None, skipped=[p for p, _ in skipped])
            return None
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

    def verify(self, step: int | None = None) -> list[CheckpointListing]:
        """Fully check checkpoints (every byte against its checksum) without loading them.

        Read-only: nothing is quarantined. Returns the listing with each committed
        checkpoint's status set to VALID or CORRUPT.

        Raises:
            CheckpointNotFound: ``step`` is given and no checkpoint has it.
        """
        found = self._discover(verify_sizes=False)
        listing, sizes = found.checkpoints, found.sizes
        if step is not None:
            listing = [c for c in listing if c.step == step]
            if not listing:
                raise CheckpointNotFound(f"{self.store.url}: no checkpoint at step {step}")
        out = []
        for c in listing:
            if c.status is Status.VALID and c.manifest is not None:
                where = f"{self.store.url}/{c.path}"
                try:
                    check_sizes(c.manifest, sizes, where)
                    tree.decode(c.manifest.tree, self._load_tensors(c.manifest, c.path))
                except CheckpointCorrupt as e:
                    if not still_committed(self.store, c.path):
                        continue  # pruned while we read it: gone, not corrupt
                    c = dataclasses.replace(c, status=Status.CORRUPT, reason=short(e, where))
            out.append(c)
        return out

    def _load_tensors(self, manifest: Manifest, directory: str) -> list[torch.Tensor]:
        """Read and verify every tensor of ``manifest``."""
        by_file: dict[str, list[int]] = {}
        for i, e in enumerate(manifest.tensors):
            by_file.setdefault(e.file, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(manifest.tensors)

        def load_file(path: str) -> None:
            members = by_file[path]
            size = manifest.files.get(path)
            if size is None:
                raise CheckpointCorrupt(f"{directory}: tensor file {path} is not in the manifest")
            used = sum(manifest.tensors[i].span for i in members)
            try:
                if used == size:
                    buf = torch.empty(size, dtype=torch.uint8)
                    if size:
                        self.store.read_into(path, layout.bytes_of(buf))
                    views = {i: buf[manifest.tensors[i].offset :] for i in members}
                else:
                    views = {}
                    for i in members:
                        e = manifest.tensors[i]
                        raw = self.store.read_range(path, e.offset, e.offset + e.span)
                        views[i] = (
                            torch.frombuffer(bytearray(raw), dtype=torch.uint8)
                            if raw
                            else (torch.empty(0, dtype=torch.uint8))
                        )
            except ObjectMissing as e:
                raise CheckpointCorrupt(f"{directory}: data file {path} is missing") from e
            for i in members:
                entry = manifest.tensors[i]
                span = views[i][: entry.span]
                if (
                    span.numel() != entry.span
                    or layout.hash_span(span[: entry.nbytes]) != entry.xxh3
                ):
                    raise CheckpointCorrupt(
                        f"{directory}: checksum mismatch in {path} at byte {entry.offset}"
                    )
                out[i] = _tensor_from_bytes(span[: entry.nbytes], entry, directory)

        for _ in self._map(load_file, list(by_file)):
            pass
        return [t for t in out if t is not None]

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

    # ---------------------------------------------------------------- retention

    def prune(self) -> list[str]:
        """Delete old checkpoints beyond ``keep_last`` and leftovers of dead writes.

        Never deletes a file that a checkpoint which stays committed refers to, whoever wrote
        it. Returns the store paths deleted.

        Raises:
            StorageError: listing or deleting failed (after a save, this is only logged).
        """
        self._check_writable()
        found = self._discover(verify_sizes=False)
        listing, sizes = found.checkpoints, found.sizes
        if any(c.status is Status.NEWER for c in listing):
            # A newer spotsafe's manifest may use files this version cannot see it use.
            log.warning("%s holds checkpoints of a newer spotsafe: not pruning", self.store.url)
            return []
        committed = [c for c in listing if c.status is Status.VALID and c.manifest is not None]
        keep = {c.path for c in committed[: self.keep_last]} | _in_use_here(self.store.url)
        last = self._last
        with self._lock:
            inflight = set(self._inflight)
        oldest_kept = min((c.step for c in committed if c.path in keep), default=None)
        doomed = []
        for c in listing:
            if c.path in keep or c.path in inflight or c.status is Status.FOREIGN:
                continue
            newer_than_ours = last is None or c.step > last[1].step
            if c.status in (Status.PARTIAL, Status.SHARED) and newer_than_ours:
                continue  # possibly a newer writer's save in progress: not ours to judge
            recent = oldest_kept is None or c.step >= oldest_kept
            if c.status in (Status.QUARANTINED, Status.CORRUPT) and recent:
                continue  # keep recent bad ones for inspection
            doomed.append(c)
        doomed_paths = {c.path for c in doomed}
        # Every manifest that stays committed, ours or not, keeps the files it uses.
        referenced = {
            f
            for c in listing
            if c.manifest is not None and c.path not in doomed_paths
            for f in c.manifest.files
        }
        deleted: list[str] = []
        for c in doomed:
            own = [p for p in sizes if p.startswith(c.path + "/")]
            manifest = f"{c.path}/{MANIFEST_NAME}"
            if manifest in own:
                # Manifest first: once it is gone the directory is no longer a checkpoint,
                # and readers that find its files missing know it was pruned.
                self.store.delete([manifest])
            doomed_files = [p for p in own if p not in referenced and p != manifest]
            self.store.delete(doomed_files)
            deleted.extend(([manifest] if manifest in own else []) + doomed_files)
            with self._lock:
                self._manifests.pop(c.path, None)
        if deleted:
            self._emit("prune", paths=deleted)
        return deleted

    # ------------------------------------------------------------------ helpers

    def _map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        items = list(items)
        if len(items) <= 1 or self.io_threads == 1:
            return [fn(x) for x in items]
        with cf.ThreadPoolExecutor(min(self.io_threads, len(items))) as pool:
            return list(pool.map(fn, items))

    def _emit(self, kind: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.record(kind, **fields)


# The writable Checkpointers of this process. They share its claim on a store (see
# spotsafe.checkpoint.claim), so retention by one keeps what the others build on.
_OPEN: weakref.WeakSet[Checkpointer] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def _in_use_here(url: str) -> set[str]:
    """The checkpoints that this process's Checkpointers on ``url`` resumed from or last
    committed: the next incremental save of each refers to the latter's files."""
    with _OPEN_LOCK:
        peers = [c for c in _OPEN if c.store.url == url]
    out: set[str] = set()
    for c in peers:
        last = c._last
        out.update(p for p in (c._resumed_from, last[0] if last else None) if p is not None)
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


def _this_ranks_state(decoded: Any, manifest: Manifest, where: str) -> Any:
    """The state this process loads: the whole tree, or its rank's part of a
    torch.distributed checkpoint (see spotsafe.checkpoint.distributed)."""
    rank, world = distributed.rank_and_world()
    ranks = decoded.get("ranks") if isinstance(decoded, dict) and "objects" not in decoded else None
    if manifest.world_size != world or (ranks is None) != (world == 1):
        raise CheckpointMismatch(
            f"{where} was written by {manifest.world_size} process(es), this run has {world};"
            " resume with the same world size"
        )
    if ranks is None:
        return decoded
    if len(ranks) != world:
        raise CheckpointCorrupt(f"{where}: state for {len(ranks)} ranks, manifest says {world}")
    return merge_parts(ranks[0]["shared"], ranks[rank]["rank"])


def _to_cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    src = t.detach()
    if src.device.type != "cpu":
        src = src.cpu()
    return layout.byte_view(src.contiguous())


def _tensor_from_bytes(data: torch.Tensor, entry: TensorEntry, where: str) -> torch.Tensor:
    dtype = tree.dtype_from_name(entry.dtype)
    shape = entry.shape
    try:
        if data.numel() == 0:
            return torch.empty(shape, dtype=dtype)
        t = data.view(dtype).reshape(shape)
        # Small tensors (RNG and generator states, counters) get storage of their own: some
        # consumers read a tensor's storage from its start (Generator.set_state fails on a
        # view into the file buffer). Large ones stay views; load_state_dict copies them.
        return t.clone() if data.numel() < OWN_STORAGE_BYTES else t
    except RuntimeError as e:
        raise CheckpointCorrupt(f"{where}: tensor bytes do not fit {entry.dtype}{shape}") from e


def _check_durable(store: Store, allow_ephemeral: bool | None) -> None:
    """Refuse a store that vanishes with the machine (see spotsafe.storage.ephemeral)."""
    check_store_durable(store.url, allow_ephemeral=allow_ephemeral)
