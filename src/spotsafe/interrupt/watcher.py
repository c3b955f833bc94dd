"""Run notice watchers in one background daemon thread and feed a :class:`StopFlag`.

Each watcher (AWS, GCP, Azure, stop file) only *looks*: :meth:`Watcher.poll` returns the
requests it found and when to look next. :class:`NoticeWatcher` does the rest: schedules the
polls, sleeps on an Event (so :meth:`NoticeWatcher.stop` is immediate), records requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

from spotsafe.backoff import Backoff
from spotsafe.errors import MetadataUnavailable
from spotsafe.interrupt.request import StopFlag, StopKind, StopRequest

__all__ = ["NoticeWatcher", "Poll", "PollingWatcher", "Watcher"]

logger = logging.getLogger("spotsafe.interrupt")

# Longest pause between two polls of a failing service, in seconds: long enough not to hammer
# a service that is not there, short enough to still catch AWS's 2-minute notice.
MAX_BACKOFF_S = 30.0
# After an unexpected error (a bug) in a poll: 1 s doubling to MAX_BACKOFF_S. No jitter: each
# process polls its own machine's service, there is no herd to spread.
BUG_BACKOFF = Backoff(initial_s=1.0, max_s=MAX_BACKOFF_S, jitter=0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    """What one poll found, and when to poll again.

    Example:
        >>> Poll(next_poll_s=5.0).requests
        ()
    """

    requests: tuple[StopRequest, ...] = ()
    """Requests found by this poll (each reported once by its watcher)."""
    next_poll_s: float
    """Seconds from now until the next poll."""

    def __post_init__(self) -> None:
        if not self.next_poll_s >= 0:
            raise ValueError(f"Poll.next_poll_s must be >= 0 seconds, got {self.next_poll_s!r}")


@runtime_checkable
class Watcher(Protocol):
    """One source of notices, polled by :class:`NoticeWatcher`."""

    name: str

    @property
    def last_error(self) -> BaseException | None:
        """The error of the most recent failed poll, or None if none failed yet."""

    def poll(self) -> Poll:
        """Look once; never raise for an unreachable or confused service."""

    def abort(self) -> None:
        """Unblock a poll in flight (called from another thread by :meth:`NoticeWatcher.stop`)."""


class PollingWatcher:
    """Base of the built-in watchers: per-poll error handling, log-once, backoff.

    Subclasses implement :meth:`_check`, which returns the requests found and may raise
    :class:`~spotsafe.errors.MetadataUnavailable` (or ValueError for a garbled answer).
    A failed poll is never a preemption: it is logged once per outage, recorded in
    :attr:`last_error`, and followed by a longer pause.
    """

    name = "watcher"

    def __init__(self, *, interval_s: float, clock: Callable[[], float]) -> None:
        if not interval_s > 0:
            raise ValueError(f"{type(self).__name__} interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        # A failing service: the normal interval, doubling to MAX_BACKOFF_S (spotsafe.backoff).
        self.backoff = Backoff(
            initial_s=interval_s, max_s=max(MAX_BACKOFF_S, interval_s), jitter=0.0
        )
        self.clock = clock
        self.failures = 0
        """Consecutive failed polls; 0 while the service answers."""
        self.polls = 0
        """Polls made so far (successful or not)."""
        self._last_error: BaseException | None = None
        self._warned = False

    @property
    def last_error(self) -> BaseException | None:
        """The error of the most recent failed poll, or None if none failed yet."""
        return self._last_error

    def poll(self) -> Poll:
        """Look once and return what was found; see the class docstring for failures."""
        self.polls += 1
        try:
            found = self._check()
        except (MetadataUnavailable, ValueError) as e:
            self.failures += 1
            self._last_error = e
            if not self._warned:
                self._warned = True
                logger.warning(
                    "%s: notice service unavailable (%s); not a preemption, will keep "
                    "watching with backoff",
                    self.name,
                    e,
                )
            else:
                logger.debug("%s: still unavailable (%s)", self.name, e)
            return Poll(next_poll_s=self.backoff.delay_s(self.failures))
        if self.failures:
            logger.info(
                "%s: notice service answers again after %d failures", self.name, self.failures
            )
            self.failures = 0
            self._warned = False  # a new outage gets its own warning
        for r in found:
            log = logger.info if r.kind is StopKind.SAVE_NOW else logger.warning
            log(
                "%s: %s notice (%s), deadline in %s",
                self.name,
                r.kind.value,
                r.source,
                _fmt_left(r, self.clock()),
            )
        return Poll(requests=tuple(found), next_poll_s=self._next_poll_s())

    def _next_poll_s(self) -> float:
        return self.interval_s

    def _check(self) -> list[StopRequest]:
        raise NotImplementedError

    def abort(self) -> None:
        """Unblock a poll in flight; the base has nothing to unblock."""


def _fmt_left(r: StopRequest, now_s: float) -> str:
    left = r.remaining_s(now_s)
    return "unknown" if left is None else f"{left:.0f} s"


class NoticeWatcher:
    """Polls watchers in one daemon thread and records what they find in a :class:`StopFlag`.

    Args:
        flag: Where requests go.
        watchers: The sources to poll (see :func:`~spotsafe.interrupt.watchers_from_env`).
        clock: Monotonic clock, in seconds, used to schedule polls.
        sleep: ``sleep(seconds)``; default waits on an internal Event so :meth:`stop` wakes the
            thread at once. An injected sleep is called instead (tests); stop still ends the
            loop at the next turn.

    Example:
        >>> flag = StopFlag()
        >>> with NoticeWatcher(flag, []) as w:
        ...     w.running
        False
    """

    def __init__(
        self,
        flag: StopFlag,
        watchers: Sequence[Watcher],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.flag = flag
        self.watchers = tuple(watchers)
        self._clock = clock
        self._stopping = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._thread: threading.Thread | None = None
        self._stopped = False  # stop() aborts the watchers' HTTP clients: one start per object
        self.loop_errors: dict[str, BaseException] = {}
        """Unexpected errors (bugs) caught by the loop, by watcher name."""

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> NoticeWatcher:
        """Start the thread (nothing to do without watchers). Once per object."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("NoticeWatcher can be started once; make a new one")
        if not self.watchers:
            return self
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="spotsafe-notice-watcher", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it to end. Idempotent."""
        self._stopped = True
        self._stopping.set()
        for w in self.watchers:
            w.abort()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("notice watcher did not stop within %.1f s", timeout_s)
            self._thread = None

    def __enter__(self) -> NoticeWatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def acknowledge(self, request: StopRequest | None = None) -> bool:
        """Tell the cloud the job is ready to go (Azure: start the event now).

        Call after the flush. ``request`` limits it to one request; None acknowledges every
        notice reported so far. Returns whether every acknowledgement that applied succeeded
        (True when none applied). Never raises for a service error.
        """
        ok = True
        for w in self.watchers:
            ack = getattr(w, "acknowledge", None)
            if callable(ack):
                ok = bool(ack(request)) and ok
        return ok

    @property
    def last_errors(self) -> dict[str, BaseException]:
        """The most recent poll error of each watcher that has one, by watcher name."""
        out = {w.name: w.last_error for w in self.watchers if w.last_error is not None}
        out.update(self.loop_errors)
        return out

    def _run(self) -> None:
        # This thread must never die: if it did, a preemption notice that arrives later would
        # go unseen and the job would be killed without a flush. So every poll is guarded and
        # an unexpected error (a bug) is logged with its traceback, recorded, and backed off.
        due = {i: self._clock() for i in range(len(self.watchers))}
        failures = dict.fromkeys(due, 0)
        while not self._stopping.is_set():
            now = self._clock()
            for i, w in enumerate(self.watchers):
                if due[i] > now or self._stopping.is_set():
                    continue
                try:
                    result = w.poll()
                    failures[i] = 0
                except Exception as e:
                    failures[i] += 1
                    self.loop_errors[w.name] = e
                    if failures[i] == 1:
                        logger.exception("%s: unexpected error while polling", w.name)
                    result = Poll(next_poll_s=BUG_BACKOFF.delay_s(failures[i]))
                for r in result.requests:
                    self.flag.request(r)
                due[i] = self._clock() + result.next_poll_s
            wait_s = min(due.values()) - self._clock()
            if wait_s > 0 and not self._stopping.is_set():
                self._sleep(wait_s)
