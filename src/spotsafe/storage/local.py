"""A store on this machine's filesystem, with fsync for durability."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from spotsafe.errors import ObjectMissing, StorageError
from spotsafe.storage.base import Buffer, Store

# Errors that trying again cannot fix: permissions, a read-only or full disk, and a path
# that cannot be one (a file where a directory should be, a loop of links, a name too long).
_FATAL_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                 errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG}  # fmt: skip


def _storage_error(what: str, path: Path, e: OSError) -> StorageError:
    if isinstance(e, FileNotFoundError):
        return ObjectMissing(f"{what} {path}: no such file")
    hint = ""
    if e.errno in (errno.EACCES, errno.EPERM):
        hint = " (check the permissions of the store directory)"
    elif e.errno == errno.EROFS:
        hint = " (the store is on a read-only filesystem; choose a writable store)"
    elif e.errno == errno.ENOSPC:
        hint = " (the disk is full; free space or lower keep_last)"
    return StorageError(
        f"could not {what} {path}: {e.strerror or e}{hint}",
        retryable=e.errno not in _FATAL_ERRNOS,
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    """Objects as files below a directory (a persistent volume, NFS, a local disk).

    Example:
        >>> import tempfile
        >>> store = LocalStore(tempfile.mkdtemp())
        >>> store.write("ckpt/data.bin", [b"ab", bytearray(b"cd")])
        4
        >>> store.read_range("ckpt/data.bin", 1, 3), store.is_local
        (b'bc', True)
    """

    is_local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    def _path(self, path: str) -> Path:
        full = (self.root / path).absolute()
        if self.root not in full.parents:
            raise StorageError(f"path {path!r} escapes the store {self.root}", retryable=False)
        return full

    def _makedirs(self, directory: Path) -> None:
        """Create ``directory`` and make each new entry durable in its parent."""
        missing = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(d.parent)

    def write(self, path: str, chunks: Iterable[Buffer]) -> int:
        size = self._create(path, chunks)
        if size is None:
            raise StorageError(
                f"refusing to overwrite {self._path(path)}: objects are written once",
                retryable=False,
            )
        return size

    def create_exclusive(self, path: str, data: Buffer) -> bool:
        return self._create(path, [data]) is not None

    def _create(self, path: str, chunks: Iterable[Buffer]) -> int | None:
        """Write a hidden temporary file, fsync it, then hard-link it into place.

        Objects appear whole, as on an object store: a process killed mid-write leaves only
        a hidden ``.*.tmp`` file, never a truncated object (a truncated manifest would look
        committed). ``link`` also fails with EEXIST atomically, so an object is never
        overwritten. Returns the size, or None when ``path`` already exists.
        """
        full = self._path(path)
        tmp = full.with_name(f".{full.name}.{secrets.token_hex(6)}.tmp")
        try:
            self._makedirs(full.parent)
            size = 0
            with open(tmp, "xb") as f:
                for chunk in chunks:
                    size += f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, full)
            except FileExistsError:
                return None
            _fsync_dir(full.parent)
        except OSError as e:
            raise _storage_error("write", full, e) from e
        finally:
            # Linked, refused, or failed: the name goes either way. Where it never existed
            # (no such directory, or a file in its way) there is nothing to remove, and the
            # write's own error is the one to report.
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                tmp.unlink()
        return size

    def read_bytes(self, path: str) -> bytes:
        full = self._path(path)
        try:
            return full.read_bytes()
        except OSError as e:
            raise _storage_error("read", full, e) from e

    def read_range(self, path: str, start: int, end: int) -> bytes:
        full = self._path(path)
        try:
            with open(full, "rb") as f:
                f.seek(start)
                return f.read(end - start)
        except OSError as e:
            raise _storage_error("read", full, e) from e

    def read_into(self, path: str, out: memoryview) -> None:
        full = self._path(path)
        try:
            with open(full, "rb", buffering=0) as f:
                got = f.readinto(out)
        except OSError as e:
            raise _storage_error("read", full, e) from e
        if got != len(out):
            raise StorageError(f"{full}: expected {len(out)} bytes, read {got}", retryable=False)

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self._path(prefix) if prefix else self.root
        out: dict[str, int] = {}

        def onerror(e: OSError) -> None:
            # os.walk reports a missing top as an error too: an absent prefix is empty. A
            # directory that vanishes below it while we walk (a writer pruning a checkpoint)
            # is gone, not an error; anything else (permission, I/O) is.
            if isinstance(e, FileNotFoundError):
                return
            raise _storage_error("list", Path(e.filename or base), e) from e

        for dirpath, _dirs, files in os.walk(base, onerror=onerror):
            for name in files:
                full = Path(dirpath) / name
                try:
                    size = full.stat().st_size
                except FileNotFoundError:
                    continue  # deleted while we listed
                except OSError as e:
                    raise _storage_error("stat", full, e) from e
                out[full.relative_to(self.root).as_posix()] = size
        return out

    def delete(self, paths: Iterable[str]) -> None:
        parents = set()
        for path in paths:
            full = self._path(path)
            try:
                full.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise _storage_error("delete", full, e) from e
            parents.add(full.parent)
        for d in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while d != self.root:
                try:
                    d.rmdir()  # only an empty directory goes
                except FileNotFoundError:
                    pass  # removed by someone else meanwhile: go on with its parent
                except OSError:
                    break  # not empty, or in use: the next prune tries again
                d = d.parent
