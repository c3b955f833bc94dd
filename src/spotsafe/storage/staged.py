"""Two tiers: write to a fast local staging directory, upload to the durable store behind.

A checkpoint counts as durable only once its manifest is in the durable store. Uploads run
in one background thread, first in first out, so every data file of a checkpoint reaches the
durable store before its manifest does: the manifest-last commit holds there too. Discovery
lists the durable store only, so a new machine sees only durable checkpoints. A stop request
calls :meth:`StagedStore.flush`, which waits for every pending upload.

Example:
    >>> import tempfile
    >>> from spotsafe.storage import open_store
    >>> staged = StagedStore(open_store("memory://spotsafe-staged-doc"), tempfile.mkdtemp())
    >>> staged.write_bytes("a/b.bin", b"data")
    4
    >>> staged.flush()
    >>> staged.durable.read_bytes("a/b.bin")
    b'data'
    >>> staged.close()
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from spotsafe.backoff import Backoff, Rng
from spotsafe.errors import StorageError
from spotsafe.storage.base import Buffer, Store
from spotsafe.storage.local import LocalStore

log = logging.getLogger("spotsafe.storage")

UPLOAD_CHUNK = 16 * 1024 * 1024  # bytes read from staging per write chunk (an S3 part)
# Pauses between tries of a failed upload: 1 s doubling to 30 s. No jitter: one uploader per
# process retries one file, in order; there is no herd to spread.
UPLOAD_BACKOFF = Backoff(initial_s=1.0, max_s=30.0, multiplier=2.0, jitter=0.0)


class _StagedFileGone(StorageError):
    """A staged file vanished before its upload: it can never be uploaded."""

    retryable = False


class StagedStore(Store):
    """A durable store fronted by a local staging directory.

    Args:
        durable: where checkpoints must end up (S3, GCS, a persistent volume).
        staging: a fast local directory (it may be ephemeral: nothing is lost when it is, as
            long as :meth:`flush` ran before the machine went away).
        sleep: injectable, for tests.
        backoff: the pauses between tries of a failed upload (spotsafe.backoff).
        rng: the jitter's randomness, needed only when `backoff` has jitter.
    """

    def __init__(
        self,
        durable: Store,
        staging: str | os.PathLike[str],
        *,
        sleep: Callable[[float], object] | None = None,
        backoff: Backoff = UPLOAD_BACKOFF,
        rng: Rng | None = None,
    ) -> None:
        self.durable = durable
        self.backoff = backoff
        self._rng = rng
        self.staging = LocalStore(staging)
        self.url = durable.url
        self.is_local = False
        self._queue: collections.deque[str] = collections.deque()
        self._uploading: str | None = None
        self._cond = threading.Condition()
        self._error: StorageError | None = None
        self._lost: list[StorageError] = []  # uploads dropped for good, not yet reported
        self._closed = False
        self._wake = threading.Event()
        self._sleep = sleep or (lambda s: self._wake.wait(s))
        self._thread = threading.Thread(target=self._run, name="spotsafe-upload", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ writing

    def write(self, path: str, chunks: Iterable[Buffer]) -> int:
        """Write to staging (durable on this disk when it returns) and queue the upload."""
        size = self.staging.write(path, chunks)
        with self._cond:
            if self._closed:
                raise StorageError(f"{self.url}: the staged store is closed", retryable=False)
            self._queue.append(path)
            self._cond.notify_all()
        return size

    def create_exclusive(self, path: str, data: Buffer) -> bool:
        # Leases and job records must be decided in the durable store, at once.
        return self.durable.create_exclusive(path, data)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued upload is in the durable store; raise if one keeps failing.

        Raises:
            StorageError: an upload failed (it is retried in the background; flush again),
                or ``timeout_s`` passed first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._uploading is not None:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise StorageError(
                        f"{self.url}: {len(self._queue)} upload(s) still pending after"
                        f" {timeout_s:g} s"
                    )
                self._cond.wait(timeout=0.1 if left is None else min(left, 0.1))
            if self._lost:
                lost, self._lost = self._lost, []
                raise StorageError(
                    f"{self.url}: {len(lost)} staged file(s) never reached the durable store: "
                    + "; ".join(str(e) for e in lost),
                    retryable=False,
                )

    def pending(self) -> list[str]:
        """Paths written to staging and not yet in the durable store, oldest first."""
        with self._cond:
            return ([self._uploading] if self._uploading else []) + list(self._queue)

    def close(self) -> None:
        """Upload what is pending, then stop the upload thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._wake.set()
            self._thread.join()

    def _run(self) -> None:
        failures = 0  # in a row, of the upload at the head of the queue
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                path = self._queue.popleft()
                self._uploading = path
            try:
                self.durable.write(path, self._chunks(path))
                self.staging.delete([path])
            except _StagedFileGone as e:
                # Nothing left to upload, ever (someone cleaned the staging directory): drop
                # it rather than retry for ever, and tell flush(), whose caller must know.
                log.error("%s; it never reached %s", e, self.url)
                with self._cond:
                    self._uploading = None
                    self._lost.append(e)
                    self._cond.notify_all()
                failures = 0
                continue
            except StorageError as e:
                # The upload thread must outlive a failed upload: keep the file at the head
                # of the queue (order is the commit protocol), report it to flush(), retry.
                log.warning("upload of %s to %s failed, retrying: %s", path, self.url, e)
                with self._cond:
                    self._queue.appendleft(path)
                    self._uploading = None
                    self._error = e
                    self._cond.notify_all()
                failures += 1
                self._sleep(self.backoff.delay_s(failures, rng=self._rng))
                continue
            failures = 0
            with self._cond:
                self._uploading = None
                self._error = None
                self._cond.notify_all()

    def _chunks(self, path: str) -> Iterator[bytes]:
        full = Path(self.staging.root) / path
        try:
            with open(full, "rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    yield chunk
        except FileNotFoundError as e:
            raise _StagedFileGone(f"the staged file {full} vanished before its upload") from e
        except OSError as e:
            raise StorageError(f"could not read the staged file {full}: {e}") from e

    # ------------------------------------------------------------------ reading

    def _staged(self, path: str) -> bool:
        with self._cond:
            return path == self._uploading or path in self._queue

    def read_bytes(self, path: str) -> bytes:
        if self._staged(path):
            return self.staging.read_bytes(path)
        return self.durable.read_bytes(path)

    def read_range(self, path: str, start: int, end: int) -> bytes:
        if self._staged(path):
            return self.staging.read_range(path, start, end)
        return self.durable.read_range(path, start, end)

    def read_into(self, path: str, out: memoryview) -> None:
        if self._staged(path):
            self.staging.read_into(path, out)
        else:
            self.durable.read_into(path, out)

    def list(self, prefix: str = "") -> dict[str, int]:
        """The durable store's listing: only what is durable exists for discovery."""
        return self.durable.list(prefix)

    def delete(self, paths: Iterable[str]) -> None:
        """Delete from the durable store, except under a directory with uploads pending:
        a checkpoint whose manifest is still on its way must keep its data files."""
        busy = {p.rpartition("/")[0] + "/" for p in self.pending()}
        doomed = []
        for p in paths:
            if any(p.startswith(b) for b in busy):
                log.debug("not deleting %s: its directory has uploads pending", p)
            else:
                doomed.append(p)
        self.durable.delete(doomed)
