"""A store on any fsspec filesystem: memory://, s3://, gs://, az://, ...

fsspec reports a missing bucket as FileNotFoundError, the same error as a missing object
or prefix; left alone, a mistyped bucket would list as an empty store (a silent fresh start)
and read as "no such object". So where the filesystem has buckets (``split_path``: s3fs,
gcsfs, adlfs), a "not found" and an empty listing are checked against the bucket itself: a
missing bucket is a fatal StorageError, never an empty store or a missing object.

Example:
    >>> import fsspec
    >>> store = FsspecStore(fsspec.filesystem("memory"), "/spotsafe-fsspec-doc", "memory://doc")
    >>> store.write_bytes("a/b.bin", b"data")
    4
    >>> store.list("a"), store.read_range("a/b.bin", 1, 3)
    ({'a/b.bin': 4}, b'at')
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Any

from spotsafe.errors import ObjectMissing, StorageError
from spotsafe.storage.base import Buffer, Store

# Upload in parts of this size (bytes): S3 recommends 8-16 MB parts.
DEFAULT_BLOCK_SIZE = 16 * 1024 * 1024


def classify(e: BaseException, what: str) -> StorageError:
    """A StorageError for ``e`` that says whether trying again may help."""
    if isinstance(e, StorageError):
        return e
    if isinstance(e, FileNotFoundError):
        return ObjectMissing(f"{what}: not found")
    fatal = isinstance(e, PermissionError) or (
        isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    )
    reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return StorageError(f"could not {what}: {reason}", retryable=not fatal)


class FsspecStore(Store):
    """Objects under ``root`` on an fsspec filesystem (see the module docstring)."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url
        self.is_local = False

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def _bucket(self) -> str | None:
        """The bucket (container) the root lies in, where the filesystem has buckets."""
        split = getattr(self.fs, "split_path", None)
        if split is None:
            return None
        bucket = split(self.fs._strip_protocol(self.root))[0]
        return str(bucket) if bucket else None

    def _check_bucket(self, what: str) -> None:
        """Raise a fatal StorageError when the root's bucket does not exist."""
        bucket = self._bucket()
        if bucket is None:
            return
        try:
            self.fs.info(bucket)
        except FileNotFoundError as e:
            raise StorageError(
                f"could not {what}: the bucket {bucket!r} does not exist; check the store URL"
                " (or create the bucket)",
                retryable=False,
            ) from e
        except Exception as e:  # fsspec backends raise many types; classify all of them
            raise classify(e, f"{what} (looking for the bucket {bucket!r})") from e

    def _missing(self, e: FileNotFoundError, what: str) -> StorageError:
        """A "not found": the object is missing, unless its whole bucket is."""
        self._check_bucket(what)
        return classify(e, what)

    def write(self, path: str, chunks: Iterable[Buffer]) -> int:
        full = self._full(path)
        size = 0
        try:
            with self.fs.open(full, "wb", block_size=DEFAULT_BLOCK_SIZE) as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += memoryview(chunk).nbytes
        except FileNotFoundError as e:
            raise self._missing(e, f"write {self.url}/{path}") from e
        except Exception as e:  # fsspec backends raise many types; classify all of them
            raise classify(e, f"write {self.url}/{path}") from e
        return size

    def create_exclusive(self, path: str, data: Buffer) -> bool:
        """Open in mode ``"xb"``: memory:// checks and creates at once, s3fs sends
        ``If-None-Match: *``; a backend without exclusive mode falls back to list-then-write."""
        full = self._full(path)
        try:
            with self.fs.open(full, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):
            return super().create_exclusive(path, data)
        except FileNotFoundError as e:
            raise self._missing(e, f"create {self.url}/{path}") from e
        except Exception as e:  # fsspec backends raise many types; classify all of them
            raise classify(e, f"create {self.url}/{path}") from e
        return True

    def read_bytes(self, path: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._full(path))
        except FileNotFoundError as e:
            raise self._missing(e, f"read {self.url}/{path}") from e
        except Exception as e:
            raise classify(e, f"read {self.url}/{path}") from e
        return data

    def read_range(self, path: str, start: int, end: int) -> bytes:
        what = f"read {self.url}/{path}"
        try:
            data: bytes = self.fs.cat_file(self._full(path), start=start, end=end)
        except FileNotFoundError as e:
            raise self._missing(e, what) from e
        except OSError as e:
            # Object stores refuse a range that starts at or past the end (HTTP 416, which
            # s3fs raises as EINVAL); every other store returns b"" there, as slicing does.
            if e.errno == errno.EINVAL and start >= self._size(path, what):
                return b""
            raise classify(e, what) from e
        except Exception as e:
            raise classify(e, what) from e
        return data

    def _size(self, path: str, what: str) -> int:
        try:
            return int(self.fs.info(self._full(path))["size"])
        except FileNotFoundError as e:
            raise self._missing(e, what) from e
        except Exception as e:
            raise classify(e, what) from e

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self._full(prefix)
        what = f"list {self.url}/{prefix}"
        try:
            found = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            found = {}
        except Exception as e:
            raise classify(e, what) from e
        if not found:
            # Nothing there: an empty prefix, or a bucket that does not exist (never "empty").
            self._check_bucket(what)
            return {}
        strip = len(self.fs._strip_protocol(self.root).rstrip("/")) + 1
        out: dict[str, int] = {}
        for name, info in found.items():
            if info.get("type") == "directory":
                continue
            rel = self.fs._strip_protocol(name)[strip:]
            out[rel] = int(info.get("size") or 0)
        return out

    def delete(self, paths: Iterable[str]) -> None:
        full = [self._full(p) for p in paths]
        if not full:
            return
        try:
            self.fs.rm(full)
        except FileNotFoundError:
            for p in full:  # one was gone already; delete the rest one by one
                try:
                    self.fs.rm_file(p)
                except FileNotFoundError:
                    continue
                except Exception as e:
                    raise classify(e, f"delete {p}") from e
        except Exception as e:
            raise classify(e, f"delete under {self.url}") from e
