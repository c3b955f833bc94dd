"""The one "stop requested" state that every interruption source feeds.

Signals, cloud notices and the stop file all turn into a :class:`StopRequest` recorded in a
:class:`StopFlag`; the Guard polls the flag at every step boundary.

Handler safety: :meth:`StopFlag.request` is called from signal handlers, which CPython runs in
the main thread *between two bytecodes of whatever the main thread was doing* — possibly while
that same thread holds the flag's lock inside :attr:`StopFlag.stop_requested`. Taking a
``threading.Lock`` there would deadlock, and ``threading.Event.set`` takes one too. So
``request`` only ``put``s onto a :class:`queue.SimpleQueue`, whose C ``put`` is documented as
reentrant (safe to interrupt and re-enter from the same thread). Readers drain that queue into
the merged state under a lock, in ordinary thread context, never inside a handler.
"""

from __future__ import annotations

import enum
import math
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["StopFlag", "StopKind", "StopRequest"]

# How often StopFlag.wait re-checks the merged state while blocked on the queue, in seconds. It
# only matters when another thread drained the queue first; one poll per 50 ms costs nothing.
_WAIT_SLICE_S = 0.05


class StopKind(enum.Enum):
    """What a request asks of the training loop.

    Example:
        >>> StopKind.STOP.value
        'stop'
    """

    STOP = "stop"
    """Stop at the next step boundary, flush the newest state, exit 75."""
    SAVE_NOW = "save_now"
    """An early warning (e.g. AWS rebalance recommendation): save now and keep training."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequest:
    """One request to stop (or to save early), from one source.

    Example:
        >>> r = StopRequest(source="signal:SIGTERM", kind=StopKind.STOP,
        ...                 deadline_s=130.0, received_s=100.0)
        >>> r.remaining_s(now_s=110.0)
        20.0
    """

    source: str
    """Where it came from: ``signal:SIGTERM``, ``aws:instance-action``, ``gcp:preempted``,
    ``gcp:maintenance-event``, ``azure:Preempt``, ``file:/path``, ..."""
    kind: StopKind
    """STOP (stop at the next step boundary) or SAVE_NOW (save and keep training)."""
    deadline_s: float | None
    """When the machine goes away, on the monotonic clock of ``received_s``; None if unknown."""
    received_s: float
    """When the request was recorded, on the injected monotonic clock, in seconds."""
    detail: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Source-specific facts, all strings: action, event id, notice time, signal number, ..."""

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("StopRequest.source must name the source, got ''")
        if not isinstance(self.kind, StopKind):
            raise ValueError(f"StopRequest.kind must be a StopKind, got {self.kind!r}")
        if self.deadline_s is not None and not math.isfinite(self.deadline_s):
            raise ValueError(
                f"StopRequest.deadline_s must be finite or None, got {self.deadline_s!r}"
            )
        if not math.isfinite(self.received_s):
            raise ValueError(f"StopRequest.received_s must be finite, got {self.received_s!r}")
        # Frozen means frozen: keep a private read-only copy so a caller's dict can't change it.
        object.__setattr__(self, "detail", MappingProxyType(dict(self.detail)))

    def remaining_s(self, now_s: float) -> float | None:
        """Seconds left until the deadline at monotonic time ``now_s`` (negative: already late).

        None when the deadline is unknown.
        """
        if self.deadline_s is None:
            return None
        return self.deadline_s - now_s


def _deadline_key(r: StopRequest) -> float:
    return math.inf if r.deadline_s is None else r.deadline_s


class StopFlag:
    """Thread-safe, signal-handler-safe holder of the stop state, polled by the Guard every step.

    STOP requests accumulate: :attr:`stop_requested` is the one with the earliest deadline (the
    one the flush must beat); :attr:`stop_requests` keeps all of them in arrival order.
    SAVE_NOW requests are separate and consumed by :meth:`take_save_now`.

    Example:
        >>> flag = StopFlag()
        >>> flag.stop_requested is None
        True
        >>> flag.request(StopRequest(source="file:/tmp/stop", kind=StopKind.STOP,
        ...                          deadline_s=None, received_s=1.0))
        >>> flag.stop_requested.source
        'file:/tmp/stop'
    """

    def __init__(self) -> None:
        # Written by request() (maybe inside a signal handler); drained by readers.
        self._inbox: queue.SimpleQueue[StopRequest] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the merged state below; never taken in request()
        self._stop: StopRequest | None = None
        self._stops: tuple[StopRequest, ...] = ()
        self._save_now: list[StopRequest] = []

    def request(self, r: StopRequest) -> None:
        """Record a request. Safe to call from a signal handler and from any thread."""
        self._inbox.put(r)  # reentrant C put: no lock that a handler could deadlock on

    @property
    def stop_requested(self) -> StopRequest | None:
        """The STOP request with the earliest deadline, or None when no stop was requested.

        Cheap when nothing arrived: one ``empty()`` check and an attribute read.
        """
        if not self._inbox.empty():
            self._drain()
        return self._stop

    @property
    def stop_requests(self) -> tuple[StopRequest, ...]:
        """Every STOP request recorded so far, in arrival order."""
        self._drain()
        return self._stops

    def take_save_now(self) -> StopRequest | None:
        """Consume the pending SAVE_NOW requests; returns the first of them, or None.

        Several SAVE_NOW requests between two steps collapse into one save.
        """
        self._drain()
        with self._lock:
            if not self._save_now:
                return None
            first = self._save_now[0]
            self._save_now.clear()
            return first

    def wait(self, timeout_s: float | None = None) -> StopRequest | None:
        """Block until a STOP is requested or ``timeout_s`` passes (None: forever). For tests.

        Returns the STOP request, or None on timeout. Uses the real monotonic clock.
        """
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            found = self.stop_requested
            if found is not None:
                return found
            slice_s = _WAIT_SLICE_S
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                slice_s = min(slice_s, left)
            try:
                item = self._inbox.get(timeout=slice_s)
            except queue.Empty:
                continue
            self._merge([item])

    def _drain(self) -> None:
        items: list[StopRequest] = []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        if items:
            self._merge(items)

    def _merge(self, items: list[StopRequest]) -> None:
        with self._lock:
            for r in items:
                if r.kind is StopKind.SAVE_NOW:
                    self._save_now.append(r)
                    continue
                self._stops = (*self._stops, r)
                # Keep the earliest deadline: that is the one the flush has to beat.
                if self._stop is None or _deadline_key(r) < _deadline_key(self._stop):
                    self._stop = r
