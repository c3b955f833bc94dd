"""Fetching tensor bytes back from a store, every span checked against its hash before use.

Torch-free: the restore (spotsafe.checkpoint.reader) hands in the memory to fill and keeps
it; ``spotsafe verify`` (spotsafe.checkpoint.view) hands in scratch memory and keeps
nothing. Both read the same way:

- **Runs.** Tensors that lie next to each other in one data file are read by one call, up
  to ``RUN_BYTES`` (a larger tensor is a run of its own). ``io_threads`` runs are read at
  once, and the thread that read a run hashes it while the others read the next ones, so
  checking overlaps reading instead of following it.
- **Local files** are read with ``preadv`` straight into the given memory (no intermediate
  bytes object). Other stores read a fully used file with one ``read_into`` (S3 splits it
  into parallel ranged GETs) and a partly used one run by run.

A missing file or a wrong hash is :class:`~spotsafe.errors.CheckpointCorrupt`; the caller
asks :func:`~spotsafe.checkpoint.discovery.still_committed` whether it was pruned instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from spotsafe.checkpoint import layout
from spotsafe.checkpoint._threads import map_threads
from spotsafe.checkpoint.manifest import Manifest
from spotsafe.errors import CheckpointCorrupt, ObjectMissing, StorageError
from spotsafe.storage import Store
from spotsafe.storage.local import LocalStore

# One read call per run of neighbouring tensors up to this size: large enough that a state
# of many small tensors (GPT-2: 592) costs few calls, small enough that io_threads runs are
# in flight for states of a few large files and hashing keeps pace with reading.
RUN_BYTES = 16 * 1024 * 1024
# A hole this small between two tensors a manifest uses (the file also holds tensors of a
# checkpoint that is gone) is read along rather than splitting the run.
GAP_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Run:
    """Bytes ``[start, end)`` of one data file, holding the tensors ``members``."""

    file: str
    start: int
    end: int
    members: tuple[int, ...]  #: indexes into the manifest's tensors, by offset

    @property
    def size(self) -> int:
        return self.end - self.start


#: Gives the writable memory one run is read into (``run.size`` bytes).
BufferFor = Callable[[Run], memoryview]
#: Told that tensor ``index``'s bytes, at ``offset`` in its run's buffer, checked out.
Verified = Callable[[Run, int, int], None]


def plan_runs(manifest: Manifest, *, run_bytes: int, whole_files: bool) -> list[Run]:
    """The reads that fetch every tensor of ``manifest``, in file and offset order.

    With ``whole_files``, a file whose bytes all belong to the manifest's tensors is one run
    whatever its size (for stores that split a large read themselves).
    """
    by_file: dict[str, list[int]] = {}
    for i, e in enumerate(manifest.tensors):
        by_file.setdefault(e.file, []).append(i)
    runs: list[Run] = []
    for file, members in by_file.items():
        members.sort(key=lambda i: manifest.tensors[i].offset)
        entries = [manifest.tensors[i] for i in members]
        if whole_files and sum(e.span for e in entries) == manifest.files[file]:
            runs.append(Run(file, 0, manifest.files[file], tuple(members)))
            continue
        group: list[int] = []
        start = end = 0
        for i in members:
            e = manifest.tensors[i]
            joins = group and e.offset >= end and e.offset - end <= GAP_BYTES
            if joins and (whole_files or e.offset + e.span - start <= run_bytes):
                group.append(i)
                end = max(end, e.offset + e.span)
                continue
            if group:
                runs.append(Run(file, start, end, tuple(group)))
            group, start, end = [i], e.offset, e.offset + e.span
        if group:
            runs.append(Run(file, start, end, tuple(group)))
    return runs


def fetch(
    store: Store,
    manifest: Manifest,
    directory: str,
    *,
    threads: int,
    buffer_for: BufferFor,
    verified: Verified,
) -> None:
    """Read every tensor of ``manifest`` into ``buffer_for``'s memory and check its hash.

    Raises:
        CheckpointCorrupt: a data file is missing or short, or a tensor's bytes do not match.
        StorageError: the store could not be read.
    """
    local = _reads_plain_files(store)
    runs = plan_runs(manifest, run_bytes=RUN_BYTES, whole_files=not local)

    def one(run: Run) -> None:
        buf = buffer_for(run)
        got = _read(store, run, buf, directory, local=local)
        for i in run.members:
            e = manifest.tensors[i]
            at = e.offset - run.start
            if at + e.span > got or layout.hash_bytes(buf[at : at + e.nbytes]) != e.xxh3:
                raise CheckpointCorrupt(
                    f"{directory}: checksum mismatch in {run.file} at byte {e.offset}"
                )
            verified(run, i, at)

    map_threads(one, runs, threads)


def _read(store: Store, run: Run, out: memoryview, directory: str, *, local: bool) -> int:
    """Read ``run`` into ``out``; the bytes read (fewer only where the file is short)."""
    try:
        if local:
            assert isinstance(store, LocalStore)
            return _pread(store, run, out)
        if run.start == 0:
            store.read_into(run.file, out[: run.size])  # S3: parallel ranged GETs
            return run.size
        data = store.read_range(run.file, run.start, run.end)
        out[: len(data)] = data
        return len(data)
    except ObjectMissing as e:
        raise CheckpointCorrupt(f"{directory}: data file {run.file} is missing") from e


def _pread(store: LocalStore, run: Run, out: memoryview) -> int:
    # The manifest was validated (spotsafe.checkpoint.manifest): its paths stay in the store.
    path = store.root / run.file
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as e:
        raise ObjectMissing(f"read {path}: no such file") from e
    except OSError as e:
        raise StorageError(f"could not read {path}: {e.strerror or e}") from e
    try:
        got = 0
        while got < run.size:
            n = os.preadv(fd, [out[got : run.size]], run.start + got)
            if n == 0:
                break  # the file ends early: the caller finds the spans short
            got += n
        return got
    except OSError as e:
        raise StorageError(f"could not read {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)


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
