"""Fetching tensor bytes back from a store, every tensor checked against its hash.

Torch-free: the restore (spotsafe.checkpoint.reader) hands in the memory to fill and keeps
it; ``spotsafe verify`` (spotsafe.checkpoint.view) keeps nothing. Both read the same way:

- **Runs.** Tensors that lie next to each other in one data file are read by one call, up
  to ``RUN_BYTES`` (a larger tensor is a run of its own). ``io_threads`` runs are read at
  once, and the thread that read a run hashes it while the others read the next ones, so
  checking overlaps reading instead of following it.
- **Kept, scattered or streamed.** A run is read into one buffer the caller keeps, into a
  buffer per tensor (one ``preadv`` scatters a run into the tensors of a live model), or,
  when the caller only wants it checked, through a small per-thread scratch buffer: checking
  a 1 GB tensor needs ``CHUNK_BYTES``, not 1 GB. Local files are read ``WINDOW_BYTES`` at a
  time and each window is hashed at once, while its bytes are still in the CPU's cache.
- **Local files** are read with ``preadv`` straight into the given memory, one open file
  per run. Other stores read a run starting at byte 0 with ``read_into`` (S3 splits it
  into parallel ranged GETs) and any other with ``read_range``.

A missing file or a wrong hash is :class:`~spotsafe.errors.CheckpointCorrupt`; the caller
asks :func:`~spotsafe.checkpoint.discovery.still_committed` whether it was pruned instead.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import xxhash

from spotsafe.checkpoint import layout
from spotsafe.checkpoint.manifest import Manifest, TensorEntry
from spotsafe.errors import CheckpointCorrupt, ObjectMissing, StorageError
from spotsafe.storage import Store
from spotsafe.storage.local import LocalStore

# One read call per run of neighbouring tensors up to this size: large enough that a state
# of many small tensors (GPT-2: 592) costs few calls and that the kernel reads ahead in long
# sequential streams (on the benchmark VM's disk, 4 threads reading 64 MiB runs moved 1.6
# GB/s cold, 16 MiB runs 0.7-1.2 GB/s), small enough that io_threads runs are in flight
# even for a state of a few large files, so hashing keeps pace with reading.
RUN_BYTES = 64 * 1024 * 1024
# A hole this small between two tensors a manifest uses (the file also holds tensors of a
# checkpoint that is gone) is read along rather than splitting the run.
GAP_BYTES = 64 * 1024
# Local files are read and hashed this much at a time, so that each byte is hashed while it
# is still in the CPU's cache (hashing it back from memory cost as much as the read).
WINDOW_BYTES = 2 * 1024 * 1024
# Scratch per reading thread: what is only checked passes through it, and the bytes between
# the tensors of a scattered read land in it.
CHUNK_BYTES = 8 * 1024 * 1024
# Members of one scattered read: each takes up to two of the 1024 buffers one preadv may fill.
MAX_SCATTER = 500


@dataclass(frozen=True, slots=True)
class Run:
    """Bytes ``[start, end)`` of one data file: the tensors ``members``, in offset order
    (each one's data; the zero padding after the last one is not read)."""

    file: str
    start: int
    end: int
    members: tuple[int, ...]  #: indexes into the manifest's tensors

    @property
    def size(self) -> int:
        return self.end - self.start


T = TypeVar("T")


class Workers:
    """Reading threads and their scratch buffers, kept across the fetches of one restore
    (its check pass and its fill pass): the threads start once and each allocates its
    ``CHUNK_BYTES`` of scratch once, instead of once per pass.

    Use it as a context manager: leaving it waits for the threads and frees the scratch.
    With ``threads`` 1 the runs are read on the calling thread.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: cf.ThreadPoolExecutor | None = None
        self._scratch = threading.local()

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._scratch = threading.local()

    def scratch(self) -> memoryview:
        """This thread's scratch buffer, ``CHUNK_BYTES`` long."""
        if not hasattr(self._scratch, "buf"):
            self._scratch.buf = memoryview(bytearray(CHUNK_BYTES))
        buf: memoryview = self._scratch.buf
        return buf

    def run(self, fn: Callable[[T], None], items: list[T]) -> None:
        """``fn(x)`` for every item, on up to ``threads`` threads; the first error is raised
        once the calls already running have ended (none is left reading behind us)."""
        if len(items) <= 1 or self.threads <= 1:
            for x in items:
                fn(x)
            return
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.threads, thread_name_prefix="spotsafe-io")
        futures = [self._pool.submit(fn, x) for x in items]
        try:
            for f in futures:
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            cf.wait(futures)
            raise


#: Where a run goes: one writable buffer of ``run.size`` bytes that is kept; a buffer per
#: member (tensor index -> its ``nbytes``), filled by one scattered read (the bytes between
#: members go to scratch); or None: only check it, keep nothing.
BufferFor = Callable[[Run], memoryview | Mapping[int, memoryview] | None]
#: Reads a file from a byte offset into buffers, one after another; the bytes read.
ReadAt = Callable[[int, list[memoryview]], int]
#: Told that tensor ``index``'s bytes checked out; for a kept run, they are at byte
#: ``at`` of its buffer.
Verified = Callable[[Run, int, int], None]


def plan_runs(
    manifest: Manifest,
    *,
    only: Collection[int] | None = None,
    run_bytes: int = RUN_BYTES,
    whole_files: bool = False,
    max_members: int | None = None,
) -> list[Run]:
    """The reads that fetch the tensors ``only`` (default: all) of ``manifest``, in file
    and offset order.

    With ``whole_files``, the tensors of one file that lie next to each other are one run
    whatever its size (for stores that split a large read themselves); ``run_bytes=0``
    makes every tensor a run of its own; ``max_members`` bounds the tensors of a run.
    """
    by_file: dict[str, list[int]] = {}
    for i, e in enumerate(manifest.tensors):
        if only is None or i in only:
            by_file.setdefault(e.file, []).append(i)
    runs: list[Run] = []
    for file, members in by_file.items():
        members.sort(key=lambda i: manifest.tensors[i].offset)
        group: list[int] = []
        start = end = reach = 0  # reach: where the last member's span ends
        for i in members:
            e = manifest.tensors[i]
            joins = group and reach <= e.offset <= reach + GAP_BYTES
            if max_members is not None and len(group) >= max_members:
                joins = False
            if joins and (whole_files or e.offset + e.nbytes - start <= run_bytes):
                group.append(i)
            else:
                if group:
                    runs.append(Run(file, start, end, tuple(group)))
                group, start = [i], e.offset
            end, reach = max(end, e.offset + e.nbytes), max(reach, e.offset + e.span)
        if group:
            runs.append(Run(file, start, end, tuple(group)))
    return runs


class Source:
    """The data files of one checkpoint, read from ``store``.

    Local files are opened afresh for each run: the kernel's read-ahead follows one open
    file's sequential reads, and threads sharing one descriptor would defeat it.

    Raises (from the reads):
        CheckpointCorrupt: a data file is missing.
        StorageError: the store could not be read.
    """

    def __init__(self, store: Store, directory: str) -> None:
        self.store = store
        self.directory = directory
        self.local = _reads_plain_files(store)

    @contextlib.contextmanager
    def file(self, file: str) -> Iterator[ReadAt]:
        """A function that reads ``file`` from a byte offset into a buffer and returns the
        bytes read (fewer only where the file ends early), for the reads of one run."""
        try:
            if not self.local:
                yield functools.partial(self._read_store, file)
                return
            fd = os.open(self._path(file), os.O_RDONLY)
        except ObjectMissing as e:
            raise CheckpointCorrupt(f"{self.directory}: data file {file} is missing") from e
        except FileNotFoundError as e:
            raise CheckpointCorrupt(f"{self.directory}: data file {file} is missing") from e
        except OSError as e:
            raise StorageError(f"could not read {self._path(file)}: {e.strerror or e}") from e
        try:
            yield functools.partial(self._pread, fd, file)
        finally:
            os.close(fd)

    def _read_store(self, file: str, start: int, bufs: list[memoryview]) -> int:
        size = sum(b.nbytes for b in bufs)
        try:
            if start == 0 and len(bufs) == 1:
                self.store.read_into(file, bufs[0])  # S3: parallel ranged GETs
                return size
            data = memoryview(self.store.read_range(file, start, start + size))
        except ObjectMissing as e:
            raise CheckpointCorrupt(f"{self.directory}: data file {file} is missing") from e
        at = 0
        for b in bufs:
            n = min(b.nbytes, data.nbytes - at)
            b[:n] = data[at : at + n]
            at += n
        return at

    def _pread(self, fd: int, file: str, start: int, bufs: list[memoryview]) -> int:
        size = sum(b.nbytes for b in bufs)
        got = 0
        try:
            while got < size:
                n = os.preadv(fd, _after(bufs, got), start + got)
                if n == 0:
                    break  # the file ends early: the spans come out short
                got += n
        except OSError as e:
            raise StorageError(f"could not read {self._path(file)}: {e.strerror or e}") from e
        return got

    def _path(self, file: str) -> str:
        assert isinstance(self.store, LocalStore)
        # The manifest was validated (spotsafe.checkpoint.manifest): its paths stay inside.
        return str(self.store.root / file)


def fetch(
    source: Source,
    manifest: Manifest,
    runs: list[Run],
    *,
    threads: int,
    buffer_for: BufferFor,
    verified: Verified,
    workers: Workers | None = None,
) -> None:
    """Read ``runs`` (see :func:`plan_runs`) and check every member's hash, on
    ``workers`` (kept by the caller across fetches) or on ``threads`` threads of its own.

    Raises:
        CheckpointCorrupt: a data file is missing or short, or a tensor's bytes do not match.
        StorageError: the store could not be read.
    """
    if workers is None:
        with Workers(threads) as own:
            fetch(source, manifest, runs, threads=threads, buffer_for=buffer_for,
                  verified=verified, workers=own)  # fmt: skip
        return
    pool = workers

    def one(run: Run) -> None:
        into = buffer_for(run)
        with source.file(run.file) as read:
            _read_checked(source, read, manifest, run, into, pool.scratch(), verified)

    pool.run(one, runs)


def _read_checked(
    source: Source,
    read: ReadAt,
    manifest: Manifest,
    run: Run,
    into: memoryview | Mapping[int, memoryview] | None,
    scratch: memoryview,
    verified: Verified,
) -> None:
    """Read ``run`` into ``into`` (see :data:`BufferFor`) window by window, hashing each
    member's bytes as they arrive, while they are still in the CPU's cache."""
    members = [manifest.tensors[i] for i in run.members]  # in offset order, not overlapping
    if source.local:
        window = min(WINDOW_BYTES, scratch.nbytes)  # what lands outside ``into`` fits scratch
    elif into is None:
        window = scratch.nbytes  # few, large requests: each one is a round trip
    else:
        window = max(run.size, 1)  # one request: the store splits it into parallel GETs
    hasher = xxhash.xxh3_128()
    done = 0  # members before this one are checked
    pos = run.start
    while done < len(members):
        stop = min(run.end, pos + window)
        bufs = _window(run, members, done, into, scratch, pos, stop)
        got = read(pos, bufs) if stop > pos else 0
        end = pos + got
        while done < len(members):
            e = members[done]
            lo, hi = max(pos, e.offset), min(end, e.offset + e.nbytes)
            if hi > lo:
                hasher.update(_bytes_of(run, e, run.members[done], into, scratch, pos, lo, hi))
            if end < e.offset + e.nbytes:
                break  # this member goes on in the next window
            pad = layout.span_of(e.nbytes) - e.nbytes
            if pad:
                hasher.update(bytes(pad))
            if hasher.hexdigest() != e.xxh3:
                raise _mismatch(source, run, e)
            verified(run, run.members[done], e.offset - run.start)
            hasher.reset()
            done += 1
        if done < len(members) and got < max(stop - pos, 1):  # the file ends early
            raise _mismatch(source, run, members[done])
        pos = end


def _window(
    run: Run,
    members: list[TensorEntry],
    first: int,
    into: memoryview | Mapping[int, memoryview] | None,
    scratch: memoryview,
    start: int,
    stop: int,
) -> list[memoryview]:
    """The buffers that file bytes ``[start, stop)`` of ``run`` are read into."""
    if into is None:
        return [scratch[: stop - start]]
    if isinstance(into, memoryview):
        return [into[start - run.start : stop - run.start]]
    bufs: list[memoryview] = []
    pos = start
    for k in range(first, len(members)):
        e = members[k]
        if e.offset >= stop:
            break
        lo, hi = max(pos, e.offset), min(stop, e.offset + e.nbytes)
        if lo > pos:
            bufs.append(scratch[: lo - pos])  # padding, or a gap of <= GAP_BYTES: dropped
        if hi > lo:
            bufs.append(into[run.members[k]][lo - e.offset : hi - e.offset])
        pos = max(pos, hi)
    if stop > pos:
        bufs.append(scratch[: stop - pos])
    return bufs


def _bytes_of(
    run: Run,
    e: TensorEntry,
    index: int,
    into: memoryview | Mapping[int, memoryview] | None,
    scratch: memoryview,
    start: int,
    lo: int,
    hi: int,
) -> memoryview:
    """File bytes ``[lo, hi)`` of tensor ``e``, read in the window that began at ``start``."""
    if into is None:
        return scratch[lo - start : hi - start]
    if isinstance(into, memoryview):
        return into[lo - run.start : hi - run.start]
    return into[index][lo - e.offset : hi - e.offset]


def _after(bufs: list[memoryview], n: int) -> list[memoryview]:
    """``bufs`` without their first ``n`` bytes."""
    out = []
    for b in bufs:
        if n >= b.nbytes:
            n -= b.nbytes
            continue
        out.append(b[n:])
        n = 0
    return out


def _mismatch(source: Source, run: Run, e: TensorEntry) -> CheckpointCorrupt:
    where = f"{run.file} at byte {e.offset}"
    return CheckpointCorrupt(f"{source.directory}: checksum mismatch in {where}")


def _reads_plain_files(store: Store) -> bool:
    """Whether ``store`` reads plain local files as they are (not a wrapper that changes or
    watches its reads, such as a test's fault-injecting subclass): then ``preadv`` may
    read them directly."""
    cls = type(store)
    return (
        isinstance(store, LocalStore)
        and cls.read_range is LocalStore.read_range
        and cls.read_into is LocalStore.read_into
    )
