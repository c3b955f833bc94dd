"""One backoff and one retry loop, for every part of spotsafe that tries again.

The supervisor's restarts (`spotsafe.policy.retry`), the S3 store's requests, the staging
uploader, the supervisor's looks at a store that is being written and the notice watchers'
polls of an unavailable metadata service all wait the same way: exponentially, capped, with
optional jitter. `Backoff` is that schedule; `retry_call` is the loop that calls a function
until it succeeds, fails for good, or runs out of time or tries. Time, sleep and randomness
are parameters (``clock=``, ``sleep=``, ``rng=``), so every caller is tested without waiting
and no caller draws from python's global ``random`` (which would shift a training run's
random stream and break bitwise-exact resume).

Torch-free, standard library only, and below `storage`, so that every layer can import it.

Example:
    >>> calls = []
    >>> def flaky(attempt: int) -> str:
    ...     calls.append(attempt)
    ...     if attempt < 3:
    ...         raise TimeoutError("not yet")
    ...     return "done"
    >>> retry_call(flaky, backoff=Backoff(initial_s=1.0, max_s=4.0, jitter=0.0),
    ...            transient=lambda e: isinstance(e, TimeoutError), sleep=calls.append)
    'done'
    >>> calls  # attempts 1 and 2 failed, each followed by its pause
    [1, 1.0, 2, 2.0, 3]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from spotsafe.errors import ConfigError

__all__ = ["MAX_DELAY_S", "MAX_MULTIPLIER", "Backoff", "Rng", "is_retryable", "retry_call"]

T = TypeVar("T")

# Upper bounds of the knobs: past them a value is a mistake, and a huge finite one is not
# harmless (a 1e300 s backoff waits for ever).
MAX_DELAY_S = 86400.0  # a day
MAX_MULTIPLIER = 100.0


class Rng(Protocol):
    """The randomness a backoff needs: `random.Random` fits; tests pass a fixed one."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter: min(max_s, initial_s·multiplier^(n−1))·(1 − jitter·u).

    n is the attempt's place in its streak of failures (1-based) and u is uniform in [0, 1)
    from the injected rng, so a delay never exceeds the cap and ``jitter=1`` is AWS's "full
    jitter"; jitter spreads the retries of many clients that failed at once. Huge streaks
    are safe: the growth is compared in log space, so it never overflows.

    Example:
        >>> class Fixed:
        ...     def random(self) -> float:
        ...         return 0.5
        >>> Backoff(initial_s=10, max_s=60, multiplier=2, jitter=0.5).delay_s(3, rng=Fixed())
        30.0
        >>> Backoff(initial_s=5, max_s=30, jitter=0).delay_s(10**6)  # no rng without jitter
        30.0
    """

    initial_s: float = 10.0
    """Delay after the first failure of a streak, before jitter (s, 0 to 86400)."""
    max_s: float = 600.0
    """Upper bound of a delay (s, initial_s to 86400: a day)."""
    multiplier: float = 2.0
    """Growth per further failure in the streak (1 to 100)."""
    jitter: float = 0.5
    """Fraction of the delay drawn at random and taken off, in [0, 1]."""

    def __post_init__(self) -> None:
        for name, bound in (("initial_s", MAX_DELAY_S), ("max_s", MAX_DELAY_S),
                            ("multiplier", MAX_MULTIPLIER), ("jitter", 1.0)):  # fmt: skip
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not 0 <= value <= bound
            ):
                raise ConfigError(
                    f"{name} = {value!r}: must be a finite number >= 0 and <= {bound:g}"
                )
        if self.max_s < self.initial_s:
            raise ConfigError(f"max_s = {self.max_s!r}: must be >= initial_s ({self.initial_s!r})")
        if self.multiplier < 1:
            raise ConfigError(f"multiplier = {self.multiplier!r}: must be >= 1")

    def base_s(self, streak: int) -> float:
        """The delay after the `streak`-th failure in a row (1-based), before jitter."""
        exponent = max(streak, 1) - 1
        if self.initial_s == 0 or exponent == 0 or self.multiplier == 1:
            return float(min(self.initial_s, self.max_s))
        # Compare in log space: multiplier ** exponent overflows a float long before the
        # streaks a large budget (or a zero initial delay) allows.
        if exponent * math.log(self.multiplier) >= math.log(self.max_s / self.initial_s):
            return float(self.max_s)
        return float(min(self.max_s, self.initial_s * self.multiplier**exponent))

    def delay_s(self, streak: int, *, rng: Rng | None = None) -> float:
        """The jittered delay after the `streak`-th failure in a row, in seconds.

        Raises:
            ValueError: the backoff has jitter and no `rng` was given.
        """
        if self.jitter == 0:
            return self.base_s(streak)
        if rng is None:
            raise ValueError("a Backoff with jitter needs an rng (e.g. random.Random(seed))")
        return self.base_s(streak) * (1.0 - self.jitter * rng.random())


def is_retryable(error: BaseException) -> bool:
    """Whether `error` says trying again may succeed (a `SpotsafeError`'s ``retryable``)."""
    return bool(getattr(error, "retryable", False))


def retry_call(
    fn: Callable[[int], T],
    *,
    backoff: Backoff,
    transient: Callable[[Exception], bool] = is_retryable,
    deadline_s: float = math.inf,
    max_attempts: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    rng: Rng | None = None,
    on_retry: Callable[[Exception, int, float, float], object] | None = None,
    on_give_up: Callable[[Exception, int, float], BaseException] | None = None,
) -> T:
    """``fn(attempt)`` (attempt 1, 2, ...) until it returns, fails for good or gives up.

    An error for which `transient` is false propagates at once. After a transient one the
    loop waits ``backoff.delay_s(attempt)`` and calls again, unless that wait would end past
    `deadline_s` seconds since the first call, or `max_attempts` calls were made: then it
    gives up, raising ``on_give_up(error, attempts, elapsed_s)`` (default: the last error).

    Args:
        fn: the call, given its attempt number.
        backoff: the pauses between attempts.
        transient: whether an error is worth another attempt; default its ``retryable``.
        deadline_s: the most seconds from the first call to the start of the last one.
        max_attempts: the most calls; None: no limit but the deadline.
        clock / sleep / rng: injected time and randomness.
        on_retry: called as ``on_retry(error, attempt, delay_s, elapsed_s)`` before a pause.
        on_give_up: builds the error raised when the loop gives up.
    """
    if max_attempts is not None and max_attempts < 1:
        raise ConfigError(f"max_attempts = {max_attempts!r}: must be >= 1")
    start = clock()
    attempt = 1
    while True:
        try:
            return fn(attempt)
        except Exception as e:
            if not transient(e):
                raise
            delay = backoff.delay_s(attempt, rng=rng)
            elapsed = clock() - start
            spent = max_attempts is not None and attempt >= max_attempts
            if spent or elapsed + delay > deadline_s:
                if on_give_up is None:
                    raise
                raise on_give_up(e, attempt, elapsed) from e
            if on_retry is not None:
                on_retry(e, attempt, delay, elapsed)
            sleep(delay)
            attempt += 1
