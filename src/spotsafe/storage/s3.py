"""S3 and S3-compatible object stores, on botocore directly.

Large objects go up as parallel multipart uploads and come down as parallel ranged GETs;
small ones are one PUT. Writes stream from the caller's chunks: at most ``concurrency``
parts are buffered at once per store, so memory stays near ``concurrency * part_size``
whatever the checkpoint size. A write handed a list of buffers knows its size: its parts are
planned for it (:func:`plan_parts`: equal, one per connection at least) and all go out at once,
each copied from the caller's buffers by the thread that uploads it. ``write`` returns only
once the object is complete (``CompleteMultipartUpload`` succeeded), which is what the
Checkpointer's manifest-last commit needs; a failed upload is aborted so that no parts are
left behind.

Retries are ours, not botocore's: botocore's retry jitter draws from python's global
``random`` module, so a retried request would shift the training's random stream and break
bitwise-exact resume. The client is built with ``total_max_attempts=1`` and every request
goes through spotsafe's one retry loop (`spotsafe.backoff.retry_call`), which draws its
jitter from a private ``random.Random`` seeded from ``os.urandom``. Transient failures (5xx,
SlowDown, throttling, resets, timeouts) are retried with capped exponential backoff for at
most ``retry_deadline_s`` per request; permission and missing-bucket errors fail at once
with a hint.

Credentials come from botocore's usual chain (environment, profile, SSO, IMDS, ...), and
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` select an S3-compatible endpoint. They never
appear in errors or logs: every message is scrubbed of the resolved keys, the token, and
anything shaped like an access key id or a signature.

Example:
    >>> from spotsafe.storage.s3 import S3Options
    >>> S3Options(part_size=8 * 2**20, concurrency=4).concurrency
    4
"""

from __future__ import annotations

import bisect
import concurrent.futures as cf
import difflib
import functools
import itertools
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from spotsafe.backoff import Backoff, retry_call
from spotsafe.errors import ConfigError, ObjectMissing, StorageError
from spotsafe.redact import redact_text, redact_url, register_environment, register_secret
from spotsafe.storage.base import Buffer, Store

log = logging.getLogger("spotsafe.storage")

T = TypeVar("T")
_Batch = list[dict[str, str]]  # one DeleteObjects request
_Body = bytes | Callable[[], bytes]  # a part's bytes, or how to copy them out of the caller's

MiB = 1024 * 1024
# S3's multipart rules: every part but the last is 5 MiB to 5 GiB, at most 10,000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
# AWS's guidance is 8-16 MB parts over several connections; 16 MiB x 8 keeps ~128 MiB in flight.
DEFAULT_PART_SIZE = 16 * MiB
DEFAULT_CONCURRENCY = 8
# A write of known size is spread over at least ``concurrency`` parts while each stays this
# big (the low end of AWS's 8-16 MB guidance): a 64 MiB file goes up on 8 connections, not 4.
SPREAD_MIN_PART = 8 * MiB
# Long enough to ride out a throttling burst or a short endpoint outage, short enough that a
# preempted VM's flush (AWS gives 120 s of notice) fails clearly rather than hangs.
DEFAULT_RETRY_DEADLINE_S = 120.0
# A request that keeps failing is reported once it has for 10 s, then at most every 30 s per
# store: a minute-long outage shows up at the default verbosity without flooding the log.
RETRY_PROGRESS_AFTER_S = 10.0
RETRY_PROGRESS_EVERY_S = 30.0
READ_CHUNK = 1 * MiB  # bytes copied per read() from a response body
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys

_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "PriorRequestNotComplete",
    "OperationAborted",
    "IDPCommunicationError",
}
_CREDENTIAL_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "InvalidSecurity",
}
_CREDENTIALS_HINT = (
    "check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the "
    "instance role) and that they may read and write this bucket"
)

# Bucket names: 3-63 of lowercase letters, digits, '.', '-' (plus '_' and capitals, which
# some S3-compatible stores and legacy us-east-1 buckets allow).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


MAX_CONCURRENCY = 256  # threads and buffered parts per store; S3 throttles far below this
_HOUR_S, _DAY_S = 3600.0, 86400.0


# (field, whether 0 is allowed, upper bound in seconds). Upper bounds keep time arithmetic
# finite and a misconfigured store from hanging a flush for days: a day of retries is an outage.
_SECONDS_BOUNDS: tuple[tuple[str, bool, float], ...] = (
    ("retry_deadline_s", True, _DAY_S),
    ("backoff_base_s", True, _HOUR_S),
    ("backoff_max_s", True, _HOUR_S),
    ("connect_timeout_s", False, _HOUR_S),
    ("read_timeout_s", False, _HOUR_S),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Options:
    """How an :class:`S3Store` talks to S3; pass any field to ``open_store`` as a keyword.

    Example:
        >>> S3Options.from_mapping({"part_size": 8 * 2**20}).part_size
        8388608
    """

    #: Bytes per multipart part; objects larger than this are uploaded in parts. A file whose
    #: size is known up front (a checkpoint's data file) is cut into equal parts over every
    #: connection instead (:func:`plan_parts`).
    part_size: int = DEFAULT_PART_SIZE
    #: Parts uploaded (and ranges downloaded) at once; also the parts buffered in memory
    #: (1 to 256).
    concurrency: int = DEFAULT_CONCURRENCY
    #: Longest time (s) one request keeps being retried before the operation fails
    #: (0 to 86400: a day).
    retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S
    #: First backoff (s) after a transient failure; it doubles per attempt, with full jitter
    #: (0 to 3600).
    backoff_base_s: float = 0.2
    #: Longest single backoff (s, 0 to 3600).
    backoff_max_s: float = 10.0
    #: Seconds to wait for a TCP connection to the endpoint (> 0, at most 3600).
    connect_timeout_s: float = 10.0
    #: Seconds to wait for any byte of a response before the attempt counts as failed
    #: (> 0, at most 3600).
    read_timeout_s: float = 60.0
    #: The S3 endpoint; None means botocore's default (``AWS_ENDPOINT_URL[_S3]`` or AWS).
    endpoint_url: str | None = None
    #: The region to sign for; None means the configured default.
    region_name: str | None = None
    #: A profile of ``~/.aws/config``; None means ``AWS_PROFILE`` or the default chain.
    profile_name: str | None = None
    #: ``path`` or ``virtual`` bucket addressing; None lets botocore decide.
    addressing_style: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.part_size, int) or not (
            MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE
        ):
            raise ConfigError(
                f"part_size={self.part_size!r}: S3 parts must be {MIN_PART_SIZE} bytes (5 MiB)"
                f" to {MAX_PART_SIZE} bytes (5 GiB)"
            )
        if (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or not 1 <= self.concurrency <= MAX_CONCURRENCY
        ):
            raise ConfigError(
                f"concurrency={self.concurrency!r}: must be an int from 1 to {MAX_CONCURRENCY}"
            )
        for name, zero_ok, high in _SECONDS_BOUNDS:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            low_ok = ok and (value >= 0 if zero_ok else value > 0)
            if not ok or not math.isfinite(value) or not low_ok or value > high:
                above = ">= 0" if zero_ok else "> 0"
                raise ConfigError(
                    f"{name}={value!r}: must be a number of seconds {above} and at most {high:g}"
                )
        if self.addressing_style not in (None, "path", "virtual", "auto"):
            raise ConfigError(
                f"addressing_style={self.addressing_style!r}: must be 'path', 'virtual' or None"
            )

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> S3Options:
        """Options from keyword arguments; an unknown name is an error with a hint."""
        known = [f.name for f in fields(cls)]
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"unknown S3 store option {name!r}{hint}; valid: {', '.join(sorted(known))}"
                )
        return cls(**options)

    @property
    def backoff(self) -> Backoff:
        """The pauses between tries of one request: doubling from ``backoff_base_s``, capped
        at ``backoff_max_s``, with full jitter (spotsafe.backoff, shared by every retry)."""
        return Backoff(
            initial_s=min(self.backoff_base_s, self.backoff_max_s),
            max_s=self.backoff_max_s,
            multiplier=2.0,
            jitter=1.0,
        )


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of an ``s3://bucket/prefix`` URL.

    Example:
        >>> parse_s3_url("s3://ckpts/team/run-7/")
        ('ckpts', 'team/run-7')
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("s3", "s3a"):
        raise ConfigError(f"{redact_url(url)}: not an s3:// URL")
    if "?" in rest or "#" in rest:
        raise ConfigError(
            f"{redact_url(url)}: S3 store options are keyword arguments of open_store, not a"
            " URL query"
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        if "@" in rest:
            # Not echoed: a secret key may hold '/', which URL redaction cannot see past.
            raise ConfigError(
                "the s3:// store URL holds credentials (user:secret@bucket), which are not"
                " supported; use the AWS credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID /"
                " AWS_SECRET_ACCESS_KEY, an instance or pod role)"
            )
        raise ConfigError(
            f"{redact_url(url)}: {bucket!r} is not a bucket name; use s3://BUCKET/PREFIX"
        )
    return bucket, prefix.strip("/")


def plan_parts(total: int, *, part_size: int, concurrency: int) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` of a ``total``-byte multipart upload.

    As few parts as ``part_size`` allows, but at least ``concurrency`` of them (one per
    connection) while each stays at least ``SPREAD_MIN_PART``; all of one size, so that no
    small last part costs a request of its own. A part may exceed ``part_size`` by under
    ``part_size / count`` where that saves a last part under S3's 5 MiB minimum.

    Example:
        >>> MiB = 2**20
        >>> [(e - s) / MiB for s, e in plan_parts(40 * MiB, part_size=16 * MiB, concurrency=8)]
        [8.0, 8.0, 8.0, 8.0, 8.0]
        >>> len(plan_parts(256 * MiB, part_size=16 * MiB, concurrency=8))
        16
        >>> [(e - s) / MiB for s, e in plan_parts(33 * MiB, part_size=16 * MiB, concurrency=1)]
        [11.0, 11.0, 11.0]
        >>> [e - s for s, e in plan_parts(15 * MiB + 3, part_size=5 * MiB, concurrency=8)]
        [5242881, 5242881, 5242881]
    """
    count = max(-(-total // part_size), min(concurrency, total // SPREAD_MIN_PART))
    count = max(2, min(count, total // MIN_PART_SIZE))  # every part but the last >= 5 MiB
    size = max(-(-total // count), MIN_PART_SIZE)
    if -(-total // size) > MAX_PARTS:
        raise StorageError(
            f"{total} bytes need more than {MAX_PARTS} parts of {part_size} bytes; raise part_size",
            retryable=False,
        )
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _byte_view(chunk: Buffer) -> memoryview:
    """``chunk`` as a flat view of bytes, without a copy."""
    view = memoryview(chunk)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _gather(views: Sequence[memoryview], starts: Sequence[int], start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the concatenation of ``views`` (non-empty, the n-th starting
    at ``starts[n]``), copied once."""
    i = bisect.bisect_right(starts, start) - 1
    pieces = []
    pos = start
    while pos < end:
        view, base = views[i], starts[i]
        stop = min(view.nbytes, end - base)
        pieces.append(view[pos - base : stop])
        pos = base + stop
        i += 1
    return pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)


class _Chunker:
    """Cuts a stream of buffers into parts of a fixed size, copying each byte once."""

    def __init__(self, chunks: Iterable[Buffer]) -> None:
        self._it: Iterator[Buffer] = iter(chunks)
        self._left: memoryview | None = None
        self.total = 0

    def _pull(self) -> bool:
        """Whether a non-empty buffer is pending (pulling one from the stream if needed)."""
        while self._left is None or not self._left.nbytes:
            try:
                chunk = next(self._it)
            except StopIteration:
                self._left = None
                return False
            self._left = _byte_view(chunk)
        return True

    def exhausted(self) -> bool:
        """Whether the stream has no more bytes."""
        return not self._pull()

    def take(self, size: int) -> bytes:
        """The next up to ``size`` bytes (fewer only at the end of the stream)."""
        pieces: list[memoryview] = []
        got = 0
        while got < size and self._pull():
            assert self._left is not None
            n = min(size - got, self._left.nbytes)
            pieces.append(self._left[:n])
            self._left = self._left[n:]
            got += n
        self.total += got
        return b"".join(pieces)  # the one copy: the caller may reuse its buffers after write()


def _botocore_exceptions() -> Any:
    """``botocore.exceptions``, or None where botocore is not installed."""
    try:
        import botocore.exceptions
    except ImportError:
        return None
    return botocore.exceptions


def _error_code(e: BaseException) -> tuple[str, int | None]:
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return "", None
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


class _LockedRng:
    """One rng shared by the threads of a store: a draw at a time."""

    def __init__(self, rng: random.Random, lock: threading.Lock) -> None:
        self._rng, self._lock = rng, lock

    def random(self) -> float:
        with self._lock:
            return self._rng.random()


class _PartCancelled(StorageError):
    """A part that stopped because another part of the same upload failed."""


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``.

    Thread-safe: the Checkpointer writes several files at once through one store. Parts and
    ranges of all calls share one pool of ``concurrency`` threads and one budget of
    ``concurrency`` buffered parts.

    Args:
        url: ``s3://bucket/prefix`` (``s3a://`` too).
        options: see :class:`S3Options`.
        clock, sleep, rng: time and randomness of the retry loop, for tests. The default
            ``rng`` is private and seeded from ``os.urandom``: the global RNGs stay untouched.

    Example:
        >>> store = S3Store("s3://my-bucket/runs/exp1", part_size=8 * 2**20)
        >>> store.url, store.bucket, store.prefix
        ('s3://my-bucket/runs/exp1', 'my-bucket', 'runs/exp1')
    """

    is_local = False

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.options = S3Options.from_mapping(options)
        self._clock = clock
        self._sleep = sleep
        # Never the module-level random: see the module docstring.
        self._rng = rng if rng is not None else random.Random(os.urandom(16))
        self._rng_lock = threading.Lock()
        self._locked_rng = _LockedRng(self._rng, self._rng_lock)
        self._next_progress_s = -math.inf  # when the next "still retrying" line may be logged
        register_environment()  # AWS_* keys set after spotsafe was imported count too
        self._redact = redact_text  # known keys and secret shapes (spotsafe.redact)
        self._lock = threading.Lock()
        self._client: Any = None
        self._pool: cf.ThreadPoolExecutor | None = None
        # Parts buffered in memory (being filled, queued or uploading), across all writes.
        self._slots = threading.BoundedSemaphore(self.options.concurrency)

    # ------------------------------------------------------------------ plumbing

    @property
    def client(self) -> Any:
        """The botocore S3 client, built on first use (botocore is imported lazily)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            import botocore.config
            import botocore.exceptions
            import botocore.session
        except ImportError as e:
            raise ConfigError(
                f"store {self.url}: the s3:// backend is not installed (pip install 'spotsafe[s3]')"
            ) from e
        opts = self.options
        try:
            session = botocore.session.Session(profile=opts.profile_name)
            s3_config: dict[str, Any] = {}
            if opts.addressing_style is not None:
                s3_config["addressing_style"] = opts.addressing_style
            config = botocore.config.Config(
                # One attempt: retries are ours, with a private RNG (module docstring).
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=opts.connect_timeout_s,
                read_timeout=opts.read_timeout_s,
                # The part pool plus the caller threads (the Checkpointer's io_threads).
                max_pool_connections=opts.concurrency + 16,
                tcp_keepalive=True,
                s3=s3_config or None,
            )
            client = session.create_client(
                "s3",
                region_name=opts.region_name,
                endpoint_url=opts.endpoint_url,
                config=config,
            )
            credentials = session.get_credentials()
        except botocore.exceptions.ProfileNotFound as e:
            raise ConfigError(f"store {self.url}: {e}") from e
        except botocore.exceptions.BotoCoreError as e:
            raise StorageError(
                f"store {self.url}: could not set up the S3 client: {self._redact(str(e))}",
                retryable=False,
            ) from e
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            for value in (frozen.access_key, frozen.secret_key, frozen.token):
                register_secret(value)  # masked in every error and log line from now on
        return client

    @property
    def pool(self) -> cf.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(
                    self.options.concurrency, thread_name_prefix="spotsafe-s3"
                )
            return self._pool

    def close(self) -> None:
        """Stop the transfer threads; the store opens them again if used."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _key(self, path: str) -> str:
        path = path.strip("/")
        if not self.prefix:
            return path
        return f"{self.prefix}/{path}" if path else self.prefix

    def _classify(self, e: BaseException, what: str) -> StorageError:
        """A StorageError for ``e``, classified retryable or fatal, with no secrets in it."""
        if isinstance(e, StorageError):
            return e
        code, status = _error_code(e)
        detail = self._redact(str(e) or type(e).__name__)
        where = f"{what}"
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code in ("", "404")):
            return ObjectMissing(f"could not {where}: no such object")
        if code == "NoSuchBucket":
            return StorageError(
                f"could not {where}: bucket {self.bucket!r} does not exist (create it, or fix"
                " the store URL and the endpoint: AWS_ENDPOINT_URL / endpoint_url)",
                retryable=False,
            )
        if code in _CREDENTIAL_CODES or status == 403:
            return StorageError(
                f"could not {where}: {detail} ({_CREDENTIALS_HINT})", retryable=False
            )
        if code in _TRANSIENT_CODES or (status is not None and status >= 500):
            return StorageError(f"could not {where}: {detail}", retryable=True)
        if status is not None:  # any other 4xx: the request itself is wrong
            return StorageError(f"could not {where}: {detail}", retryable=False)
        bex = _botocore_exceptions()
        if bex is not None:
            if isinstance(e, (bex.NoCredentialsError, bex.PartialCredentialsError)):
                return StorageError(
                    f"could not {where}: no AWS credentials found ({_CREDENTIALS_HINT})",
                    retryable=False,
                )
            if isinstance(e, bex.ParamValidationError):
                return StorageError(f"could not {where}: {detail}", retryable=False)
            if isinstance(
                e,
                (
                    bex.ConnectionError,  # refused, connect timeouts, DNS (EndpointConnection)
                    bex.HTTPClientError,  # reset/closed connections, read timeouts, proxy
                    bex.ResponseStreamingError,
                    bex.IncompleteReadError,
                    bex.NoRegionError,
                ),
            ):
                retryable = not isinstance(e, bex.NoRegionError)
                return StorageError(f"could not {where}: {detail}", retryable=retryable)
        if isinstance(e, (ConnectionError, TimeoutError)):
            return StorageError(f"could not {where}: {detail}", retryable=True)
        # Anything else (a bug, an unexpected library error) is fatal: never loop on it.
        return StorageError(f"could not {where}: {type(e).__name__}: {detail}", retryable=False)

    def _retry(self, what: str, fn: Callable[[int], T]) -> T:
        """``fn(attempt)`` until it succeeds, fails fatally, or ``retry_deadline_s`` passes."""
        opts = self.options

        def attempt(n: int) -> T:
            try:
                return fn(n)
            except Exception as e:
                raise self._classify(e, what) from e

        def retrying(err: Exception, n: int, delay_s: float, elapsed_s: float) -> None:
            log.debug("%s; retry %d in %.2f s", err, n, delay_s)
            self._report_retrying(what, elapsed_s, err)

        def give_up(err: Exception, n: int, elapsed_s: float) -> StorageError:
            return StorageError(
                f"{err} (gave up after {n} attempt(s) in {elapsed_s:.1f} s:"
                f" retry_deadline_s={opts.retry_deadline_s:g})",
                retryable=True,
            )

        return retry_call(
            attempt,
            backoff=opts.backoff,
            deadline_s=opts.retry_deadline_s,
            clock=self._clock,
            sleep=self._sleep,
            rng=self._locked_rng,
            on_retry=retrying,
            on_give_up=give_up,
        )

    def _report_retrying(self, what: str, elapsed_s: float, err: Exception) -> None:
        """Say that a request keeps failing, once it has for a while; one line per
        ``RETRY_PROGRESS_EVERY_S`` per store, however many requests retry at once."""
        if elapsed_s < RETRY_PROGRESS_AFTER_S:
            return
        now = self._clock()
        with self._rng_lock:
            if now < self._next_progress_s:
                return
            self._next_progress_s = now + RETRY_PROGRESS_EVERY_S
        log.warning(
            "retrying %s: %.0f s of %g s (%s)",
            redact_url(what),
            elapsed_s,
            self.options.retry_deadline_s,
            err,
        )

    # ------------------------------------------------------------------ writing

    def write(self, path: str, chunks: Iterable[Buffer]) -> int:
        """Create ``path`` from ``chunks``: one PUT up to ``part_size`` bytes, else a multipart
        upload. Given a list or tuple, the size is known up front: the parts are planned with
        :func:`plan_parts`, all go out at once, and each is copied from ``chunks`` by the
        thread that uploads it. Any other iterable is streamed, a part at a time."""
        key = self._key(path)
        what = f"write {self.url}/{path}"
        size = self.options.part_size
        if isinstance(chunks, (list, tuple)):
            views = [v for v in map(_byte_view, chunks) if v.nbytes]
            total = sum(v.nbytes for v in views)
            if total > size:
                return self._write_known(key, what, views, total)
        source = _Chunker(chunks)
        self._slots.acquire()
        try:
            first = source.take(size)
            single = source.exhausted()
        except BaseException:
            self._slots.release()
            raise
        if single:
            try:
                self._retry(
                    what, lambda _: self.client.put_object(Bucket=self.bucket, Key=key, Body=first)
                )
            finally:
                self._slots.release()
            return len(first)
        try:
            upload_id = self._create_upload(key, what)
        except BaseException:
            self._slots.release()
            raise

        def produce(number: int) -> _Body | None:
            if source.exhausted():
                return None
            if number > MAX_PARTS:
                raise StorageError(
                    f"could not {what}: more than {MAX_PARTS} parts of {size} bytes; raise"
                    " part_size",
                    retryable=False,
                )
            return source.take(size)

        self._upload_parts(key, what, upload_id, produce, first, lambda: source.total)
        return source.total

    def _write_known(self, key: str, what: str, views: list[memoryview], total: int) -> int:
        """Upload ``views`` (``total`` bytes) in the parts :func:`plan_parts` gives."""
        ranges = plan_parts(total, part_size=self.options.part_size,
                            concurrency=self.options.concurrency)  # fmt: skip
        starts = list(itertools.accumulate((v.nbytes for v in views[:-1]), initial=0))
        upload_id = self._create_upload(key, what)

        def produce(number: int) -> _Body | None:
            if number > len(ranges):
                return None
            start, end = ranges[number - 1]
            return functools.partial(_gather, views, starts, start, end)

        self._upload_parts(key, what, upload_id, produce, None, lambda: total)
        return total

    def create_exclusive(self, path: str, data: Buffer) -> bool:
        """PutObject with ``If-None-Match: *``: S3 creates the object only if it is absent.

        A retry after a lost response can find the object our own first try created (412);
        comparing its bytes with ours tells that case from a rival's win (lease and record
        bodies carry a unique holder id).
        """
        key = self._key(path)
        body = bytes(data)

        def attempt(n: int) -> bool:
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            except Exception as e:
                code, status = _error_code(e)
                if status == 412 or code == "PreconditionFailed":
                    return n > 1 and self.read_bytes(path) == body
                if status == 409 or code == "ConditionalRequestConflict":
                    # A concurrent conditional write is in progress: S3 says to retry.
                    raise StorageError(f"create {self.url}/{path}: {code}", retryable=True) from e
                raise
            return True

        return self._retry(f"create {self.url}/{path}", attempt)

    def _create_upload(self, key: str, what: str) -> str:
        """Start a multipart upload of ``key``; its upload id."""
        upload_id: str = self._retry(
            what,
            lambda _: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ChecksumAlgorithm="CRC32"
            )["UploadId"],
        )
        return upload_id

    def _upload_parts(
        self,
        key: str,
        what: str,
        upload_id: str,
        produce: Callable[[int], _Body | None],
        first: _Body | None,
        total: Callable[[], int],
    ) -> None:
        """Upload part 1 (``first``, whose part slot is held; None: produce it too) and every
        part ``produce(number)`` returns until it returns None, then complete the upload; on
        any failure, abort it and raise.

        Each part is produced while holding one of the store's ``concurrency`` part slots,
        which its upload releases: at most that many parts are buffered or queued at once.
        """
        failed = threading.Event()
        futures: list[cf.Future[dict[str, Any]]] = []
        try:
            body = first
            number = 1
            while True:
                if body is None:
                    self._slots.acquire()
                    try:
                        body = produce(number)
                    except BaseException:
                        self._slots.release()
                        raise
                    if body is None:
                        self._slots.release()
                        break
                try:
                    future = self.pool.submit(
                        self._upload_part, key, upload_id, number, body, failed, what
                    )
                except BaseException:
                    self._slots.release()
                    raise
                futures.append(future)  # the part task now owns the slot
                body = None
                number += 1
                if failed.is_set():
                    break
            cf.wait(futures)
            errors = [e for e in (f.exception() for f in futures) if e is not None]
            if errors:
                # Raise the cause, not the parts that stopped because another one failed.
                raise next((e for e in errors if not isinstance(e, _PartCancelled)), errors[0])
            parts = [f.result() for f in futures]
            self._complete(key, upload_id, parts, total(), what)
        except BaseException:
            failed.set()
            for f in futures:
                if f.cancel():
                    self._slots.release()  # the part never ran, so it cannot release its slot
            cf.wait(futures)  # no part may land after the abort, nor read the caller's buffers
            self._abort(key, upload_id, what)
            raise  # a StorageError from a request, or the chunk source's own error, unchanged

    def _upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        body: _Body,
        failed: threading.Event,
        what: str,
    ) -> dict[str, Any]:
        try:
            if failed.is_set():
                raise _PartCancelled(f"could not {what}: another part failed", retryable=False)
            data = body() if callable(body) else body  # copied here, in parallel with others

            def attempt(_: int) -> dict[str, Any]:
                if failed.is_set():  # stop retrying once the upload is being aborted
                    raise _PartCancelled(f"could not {what}: another part failed", retryable=False)
                out: dict[str, Any] = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumAlgorithm="CRC32",
                )
                return out

            response = self._retry(f"{what} (part {number})", attempt)
        except BaseException:
            failed.set()
            raise
        finally:
            self._slots.release()
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if response.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    def _complete(
        self, key: str, upload_id: str, parts: list[dict[str, Any]], total: int, what: str
    ) -> None:
        client = self.client

        def attempt(n: int) -> None:
            try:
                client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except Exception as e:
                # A retry after a lost response: the first attempt may have completed it.
                if n > 1 and _error_code(e)[0] == "NoSuchUpload" and self._is_complete(key, total):
                    return
                raise

        self._retry(what, attempt)

    def _is_complete(self, key: str, total: int) -> bool:
        """Whether ``key`` exists with ``total`` bytes. A failed HEAD counts as "no": the
        caller then raises the original NoSuchUpload error and the save fails clearly."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as e:  # botocore raises many types; any of them means "unknown"
            log.debug("HEAD %s failed after a lost CompleteMultipartUpload: %s", key, e)
            return False
        return bool(head.get("ContentLength") == total)

    def _abort(self, key: str, upload_id: str, what: str) -> None:
        try:
            self._retry(
                f"abort {what}",
                lambda _: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
            )
        except StorageError as e:
            # The write already failed; its error is the one to raise. Parts left behind cost
            # storage only (they are invisible to listings): a lifecycle rule with
            # AbortIncompleteMultipartUpload removes them.
            log.warning("could not abort the multipart upload of %s/%s: %s", self.url, key, e)

    # ------------------------------------------------------------------ reading

    def _get_into(self, key: str, what: str, out: memoryview, start: int) -> int:
        """Read ``len(out)`` bytes from ``start`` into ``out``; return the bytes read."""
        end = start + out.nbytes

        def attempt(_: int) -> int:
            try:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
                )
            except Exception as e:
                if _error_code(e)[0] == "InvalidRange":
                    return 0  # ``start`` is at or past the end of the object
                raise
            body = response["Body"]
            pos = 0
            try:
                while pos < out.nbytes:
                    data = body.read(min(READ_CHUNK, out.nbytes - pos))
                    if not data:
                        break
                    out[pos : pos + len(data)] = data
                    pos += len(data)
            finally:
                body.close()
            return pos

        return self._retry(what, attempt)

    def read_bytes(self, path: str) -> bytes:
        key = self._key(path)
        what = f"read {self.url}/{path}"

        def attempt(_: int) -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data

        return self._retry(what, attempt)

    def read_range(self, path: str, start: int, end: int) -> bytes:
        key = self._key(path)
        what = f"read {self.url}/{path}"
        if end <= start:
            # Still ask, so that a missing object raises as it does for every other read.
            self._get_into(key, what, memoryview(bytearray(1)), start)
            return b""
        buf = bytearray(end - start)
        got = self._get_into(key, what, memoryview(buf), start)
        del buf[got:]
        return bytes(buf)

    def read_into(self, path: str, out: memoryview) -> None:
        key = self._key(path)
        what = f"read {self.url}/{path}"
        view = out if out.format == "B" and out.ndim == 1 else out.cast("B")
        n = view.nbytes
        if n == 0:
            self.read_range(path, 0, 0)
            return
        size = self.options.part_size
        ranges = [(s, min(s + size, n)) for s in range(0, n, size)]
        if len(ranges) == 1:
            got = [self._get_into(key, what, view, 0)]
        else:
            futures = [self.pool.submit(self._get_into, key, what, view[s:e], s) for s, e in ranges]
            try:
                got = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                cf.wait(futures)
                raise
        read = sum(got)
        if read != n:
            raise StorageError(
                f"could not {what}: expected {n} bytes, the object holds {read}", retryable=False
            )

    # ------------------------------------------------------------------ listing, deleting

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self._key(prefix)
        key_prefix = f"{base}/" if base else ""
        strip = len(self.prefix) + 1 if self.prefix else 0
        what = f"list {self.url}/{prefix.strip('/')}" if prefix.strip("/") else f"list {self.url}"
        out: dict[str, int] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key_prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page: dict[str, Any] = self._retry(what, functools.partial(self._list_page, kwargs))
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue  # a "directory marker" some tools create; not an object of ours
                out[key[strip:]] = int(obj.get("Size", 0))
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")
            if not token:
                raise StorageError(
                    f"could not {what}: a truncated listing without a continuation token",
                    retryable=True,
                )

    def _list_page(self, kwargs: dict[str, Any], _attempt: int) -> dict[str, Any]:
        page: dict[str, Any] = self.client.list_objects_v2(**kwargs)
        return page

    def _delete_batch(self, batch: _Batch, _attempt: int) -> dict[str, Any]:
        response: dict[str, Any] = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        return response

    def delete(self, paths: Iterable[str]) -> None:
        keys = [self._key(p) for p in paths]
        what = f"delete under {self.url}"
        for i in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + DELETE_BATCH]]
            response = self._retry(what, functools.partial(self._delete_batch, batch))
            errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                code = str(first.get("Code", ""))
                retryable = code in _TRANSIENT_CODES
                raise StorageError(
                    self._redact(
                        f"could not {what}: {len(errors)} object(s) not deleted, e.g."
                        f" {first.get('Key')}: {code} {first.get('Message', '')}"
                    ),
                    retryable=retryable,
                )
