"""The durable event log: what happened to a job, kept in its store.

Object stores cannot append, so each attempt writes its events as numbered segments that are
never overwritten::

    events/attempt-000003-9f1c2b7a/000001.jsonl
    events/attempt-000003-9f1c2b7a/000002.jsonl

One JSON object per line: ``{"t": wall_s, "kind": ..., "job_id": ..., "attempt": ..., ...}``.
Kinds written today: ``attempt_start``, ``attempt_end`` (supervisor), ``notice``, ``save``,
``restore``, ``quarantine``, ``prune``, ``stop`` (the Guard's verdict on a stop request),
``heartbeat`` (step and time). Readers (report, dashboard) use :func:`read_events`. The log is
for reports: what decides (an attempt's start, its clean stop, its exit class) is the job record
(spotsafe.jobrecord), which the supervisor reads alone; it falls back to the ``stop`` event only
for attempts whose child predates the job record's stop object.

No torch here: the supervisor and the report read the log without it.
"""

from __future__ import annotations

import atexit
import json
import logging
import operator
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from spotsafe.errors import StorageError
from spotsafe.storage import Store

log = logging.getLogger("spotsafe")

EVENTS_DIR = "events"
FLUSH_INTERVAL_S = 10.0  # seconds between background flushes: cheap on any store
_SEGMENT_RE = re.compile(r"^attempt-(\d{6})-([0-9a-f]+)/(\d{6})\.jsonl$")


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the event log."""

    t: float  #: wall-clock seconds since the epoch
    kind: str
    attempt: int  #: 0 when not run under the supervisor
    fields: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


class EventLog:
    """Records events for one attempt and writes them to the store in segments.

    Thread-safe: the training thread, the save thread and watchers may all record.

    Args:
        store: where the job lives.
        job_id: the job's id, or None.
        attempt: the attempt number (``$SPOTSAFE_ATTEMPT``), 0 outside the supervisor.
        flush_interval_s: how often the background thread writes what is pending; 0 means
            no background thread (call :meth:`flush`).

    Example:
        >>> from spotsafe.storage import open_store
        >>> store = open_store("memory://spotsafe-events-doc")
        >>> events = EventLog(store, job_id="j", attempt=1, flush_interval_s=0)
        >>> events.record("heartbeat", step=10)
        >>> events.flush()
        >>> [e.kind for e in read_events(store)]
        ['heartbeat']
    """

    def __init__(
        self,
        store: Store,
        *,
        job_id: str | None,
        attempt: int | None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.attempt = attempt or 0
        self.wall_clock = wall_clock
        self.prefix = f"{EVENTS_DIR}/attempt-{self.attempt:06d}-{secrets.token_hex(4)}"
        self._pending: list[dict[str, Any]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.last_error: StorageError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if flush_interval_s > 0:
            self._thread = threading.Thread(
                target=self._run, args=(flush_interval_s,), name="spotsafe-events", daemon=True
            )
            self._thread.start()
        atexit.register(self._flush_at_exit)

    def record(self, kind: str, **fields: Any) -> None:
        """Queue one event; it reaches the store at the next flush."""
        line = {"t": self.wall_clock(), "kind": kind, "job_id": self.job_id,
                "attempt": self.attempt, **fields}  # fmt: skip
        with self._lock:
            self._pending.append(line)

    def flush(self) -> None:
        """Write every pending event now; raises StorageError if the store refuses."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            self._seq += 1
            body = "".join(json.dumps(e, default=str) + "\n" for e in batch).encode()
            try:
                self.store.write_bytes(f"{self.prefix}/{self._seq:06d}.jsonl", body)
            except StorageError:
                with self._lock:  # keep them for the next try, in order
                    self._pending[:0] = batch
                self._seq -= 1
                raise

    def close(self) -> None:
        """Stop the background thread and flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        atexit.unregister(self._flush_at_exit)
        self.flush()

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except StorageError as e:
            log.warning("events lost at exit, the store refused them: %s", e)

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.flush()
            except StorageError as e:
                # The log must not stop training: keep the events, say so once per error
                # kind, and try again at the next interval; close() raises if it persists.
                if type(e) is not type(self.last_error):
                    log.warning("could not write events to %s: %s", self.store.url, e)
                self.last_error = e


def read_events(store: Store, *, attempt: int | None = None) -> list[Event]:
    """Every event in ``store`` (or of one attempt), in time order."""
    listed = store.list(EVENTS_DIR)
    segments = []
    for path in listed:
        rel = path[len(EVENTS_DIR) + 1 :] if path.startswith(EVENTS_DIR + "/") else path
        m = _SEGMENT_RE.match(rel)
        if m is None:
            continue
        n = int(m.group(1))
        if attempt is not None and n != attempt:
            continue
        segments.append((n, m.group(2), int(m.group(3)), f"{EVENTS_DIR}/{rel}"))
    events: list[Event] = []
    for _, _, _, path in sorted(segments):
        events.extend(_parse(store.read_bytes(path), path))
    events.sort(key=_by_time)
    return events


_by_time = operator.attrgetter("t")


def _parse(data: bytes, path: str) -> Iterator[Event]:
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    # One decode of the whole segment as a JSON array is several times faster than one
    # json.loads per line (a long job's report reads 10^5 lines); any line that is not one
    # JSON value (torn, garbled) makes it fail, and the lines are then read one by one.
    try:
        raws = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        raws = None
    if not isinstance(raws, list) or len(raws) != len(lines):
        raws = [_loads_or_none(line) for line in lines]
    for n, raw in enumerate(raws, 1):
        try:
            t, kind = float(raw.pop("t")), str(raw.pop("kind"))
            attempt = int(raw.pop("attempt", 0) or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("skipping malformed event %s:%d", path, n)
            continue
        yield Event(t=t, kind=kind, attempt=attempt, fields=raw)


def _loads_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None
