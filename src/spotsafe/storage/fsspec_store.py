"""A store on any fsspec filesystem: memory://, s3://, gs://, az://, ..."""

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
    """Objects under ``root`` on an fsspec filesystem."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url
        self.is_local = False

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def write(self, path: str, chunks: Iterable[Buffer]) -> int:
        full = self._full(path)
        size = 0
        try:
            with self.fs.open(full, "wb", block_size=DEFAULT_BLOCK_SIZE) as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += memoryview(chunk).nbytes
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
        except Exception as e:  # fsspec backends raise many types; classify all of them
            raise classify(e, f"create {self.url}/{path}") from e
        return True

    def read_bytes(self, path: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._full(path))
        except Exception as e:
            raise classify(e, f"read {self.url}/{path}") from e
        return data

    def read_range(self, path: str, start: int, end: int) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._full(path), start=start, end=end)
        except Exception as e:
            raise classify(e, f"read {self.url}/{path}") from e
        return data

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self._full(prefix)
        try:
            found = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return {}
        except Exception as e:
            raise classify(e, f"list {self.url}/{prefix}") from e
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
