"""The store interface shared by every backend."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import TypeAlias

from spotsafe.redact import redact_url

__all__ = ["Buffer", "Store", "redact_url"]

# Anything the buffer protocol accepts: bytes, bytearray, memoryview, numpy arrays.
Buffer: TypeAlias = bytes | bytearray | memoryview


class Store(abc.ABC):
    """A root under which checkpoint objects live.

    Paths are relative to the root and use '/'. Implementations raise
    :class:`~spotsafe.errors.ObjectMissing` for a missing object and
    :class:`~spotsafe.errors.StorageError` for any other failure.

    Example:
        >>> from spotsafe.storage import open_store
        >>> store = open_store("memory://spotsafe-base-doc")
        >>> store.create_exclusive("job/lease.json", b"{}")
        True
        >>> store.create_exclusive("job/lease.json", b"{}")  # exactly one creator wins
        False
        >>> store.list("job")
        {'job/lease.json': 2}
    """

    #: The root URL with credentials removed; safe to print.
    url: str
    #: Whether writes go to this machine's filesystem (fsync applies).
    is_local: bool = False

    @abc.abstractmethod
    def write(self, path: str, chunks: Iterable[Buffer]) -> int:
        """Create ``path`` from ``chunks``; durable when this returns. Returns the byte count."""

    def write_bytes(self, path: str, data: Buffer) -> int:
        """Create ``path`` holding ``data``; durable when this returns."""
        return self.write(path, [data])

    def create_exclusive(self, path: str, data: Buffer) -> bool:
        """Create ``path`` holding ``data`` unless it exists; whether this call created it.

        The supervisor's lease and job record rely on it: of two writers racing for one
        path, exactly one must win. Backends override this with an atomic primitive (a hard
        link on a local filesystem, ``If-None-Match: *`` on S3). This default lists, then
        writes: correct against a writer that already finished, racy against one writing at
        the same moment.
        """
        if path in self.list(path):
            return False
        self.write_bytes(path, data)
        return True

    def flush(self) -> None:
        """Wait until everything written is in durable storage.

        A no-op for stores that are durable when ``write`` returns; a staged store (see
        spotsafe.storage.staged) uploads what is pending.
        """
        return None

    @abc.abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """The whole content of ``path``."""

    @abc.abstractmethod
    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``path``."""

    def read_into(self, path: str, out: memoryview) -> None:
        """Fill ``out`` with the first ``len(out)`` bytes of ``path``."""
        data = self.read_range(path, 0, len(out))
        if len(data) != len(out):
            from spotsafe.errors import StorageError

            raise StorageError(
                f"{self.url}/{path}: expected {len(out)} bytes, read {len(data)}", retryable=False
            )
        out[:] = data

    @abc.abstractmethod
    def list(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix`` (recursively) with its size in bytes.

        An absent prefix lists as empty; every other failure raises.
        """

    @abc.abstractmethod
    def delete(self, paths: Iterable[str]) -> None:
        """Delete ``paths``; already missing ones are fine."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
