"""When to checkpoint: interval policies as pure functions of one documented state.

The Guard asks its policy at every step boundary, ``policy.decide(state)``, and gets a value
back: `SaveNow` (start a save at this boundary) or `Wait` (how long until one is due). Policies
never read a clock; the state carries the time.

Lost work, the quantity `max_lost_work_s` bounds, is the wall-clock time between the snapshot a
restart resumes from and an unclean interruption. With saves starting every T seconds, each
blocking for C and then persisting in the background for P, the worst case is an interruption
just before the next save becomes durable: T + C + P. A clean stop (exit 75) flushes a save at
the stop step and loses nothing.

Example:
    >>> policy = Auto(max_lost_work_s=1800, mtbi_prior_s=4 * 3600)
    >>> state = IntervalState(now_s=250.0, last_save_s=0.0, steps_since_save=250,
    ...                       mean_step_s=1.0, save_blocking_s=2.0, persist_s=20.0)
    >>> policy.decide(state)  # Daly: 238.7 s of work + C = 2 s between save starts
    SaveNow(reason='250 s since the last save reached the Daly interval of 241 s')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spotsafe.errors import ConfigError
from spotsafe.policy.pools import DEFAULT_MTBI_PRIOR_S

if TYPE_CHECKING:
    from spotsafe.policy.pools import Pool

__all__ = [
    "Auto",
    "EverySeconds",
    "EverySteps",
    "IntervalDecision",
    "IntervalPolicy",
    "IntervalState",
    "MaxLostWork",
    "SaveNow",
    "Wait",
    "async_interval_s",
    "daly_interval_s",
    "mtbi_estimate",
    "young_interval_s",
]

# Before the first save has measured C, Auto saves once after this much training (s): early
# enough that the measured C steers the rest of the run and that a first interruption loses
# little, late enough that start-up (compilation, data-loader warm-up) is behind it.
FIRST_SAVE_S = 300.0

# Weight of the MTBI prior, in pseudo-interruptions (see `mtbi_estimate`): two observed
# interruptions count as much as the prior.
DEFAULT_PRIOR_WEIGHT = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalState:
    """What an interval policy sees at a step boundary. Times are seconds on one clock.

    Example:
        >>> IntervalState(now_s=10.0, last_save_s=0.0, steps_since_save=5).elapsed_s
        10.0
    """

    now_s: float
    """Now, in seconds on the caller's monotonic clock."""
    last_save_s: float
    """When the last save started (its snapshot), or when the run started if none yet."""
    steps_since_save: int
    """Training steps completed since `last_save_s`."""
    mean_step_s: float | None = None
    """Mean wall time of one training step, in seconds; None before one is measured."""
    save_blocking_s: float | None = None
    """C: seconds a save blocks training (snapshot); None before the first save."""
    persist_s: float | None = None
    """P: seconds the last save took to become durable in the background; None if unknown."""
    mtbi_s: float | None = None
    """M: mean time between interruptions in seconds (observed or prior); None: the policy's."""

    @property
    def elapsed_s(self) -> float:
        """Seconds since the last save started."""
        return self.now_s - self.last_save_s


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveNow:
    """Start a save at this step boundary.

    Example:
        >>> SaveNow(reason="every 100 steps").reason
        'every 100 steps'
    """

    reason: str
    """Why, in words, for the event log."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """No save at this boundary; ask again at the next one.

    Example:
        >>> Wait(remaining_s=12.5).remaining_steps is None
        True
    """

    remaining_s: float | None = None
    """Seconds until a save is due, when the policy counts time."""
    remaining_steps: int | None = None
    """Steps until a save is due, when the policy counts steps."""


IntervalDecision = SaveNow | Wait


def young_interval_s(c_s: float, m_s: float) -> float:
    """Young's first-order optimum compute time between checkpoints: sqrt(2·C·M).

    Args:
        c_s: C, the cost of one checkpoint in seconds.
        m_s: M, the mean time between interruptions in seconds.

    Example:
        >>> young_interval_s(2.0, 3600.0)
        120.0
    """
    _check_cm(c_s, m_s)
    return math.sqrt(2.0 * c_s * m_s)


def daly_interval_s(c_s: float, m_s: float) -> float:
    """Daly's higher-order optimum compute time between checkpoints.

    J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart
    dumps", Future Generation Computer Systems 22(3), 2006.

    For C < 2M: sqrt(2CM)·[1 + (1/3)·sqrt(C/2M) + (1/9)·(C/2M)] − C; otherwise M.
    The result is the *work* between checkpoints; saves start every result + C seconds.

    Args:
        c_s: C, the cost of one checkpoint in seconds.
        m_s: M, the mean time between interruptions in seconds.

    Example:
        >>> round(daly_interval_s(2.0, 3600.0), 3)  # 120 · (1 + 1/180 + 1/32400) − 2
        118.67
    """
    _check_cm(c_s, m_s)
    if c_s >= 2.0 * m_s:
        return m_s
    ratio = c_s / (2.0 * m_s)
    return math.sqrt(2.0 * c_s * m_s) * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0) - c_s


def async_interval_s(*, checkpoint_s: float, persist_s: float, mtbi_s: float) -> float:
    """The optimum seconds between save *starts* for asynchronous saves (block C, then persist
    P in the background, the next save waiting for the previous one to be durable):
    max(C + P, Daly's interval), ≈ max(C + P, √(2CM)) to first order. `Auto` aims for it, and
    the simulator (`spotsafe.simulate.theory`) and the doctor use this function, not copies.

    Saves start every I ≥ C + P seconds. An interruption at a uniform phase of a cycle loses
    the time since the newest durable save: that phase, plus a whole interval when the newest
    save was not yet durable (phase < C + P), so I/2 + C + P on average. The waste per unit of
    time is then, to first order, C/I + (I/2 + C + P + R)/M, least at I = √(2CM) (Young; Daly's
    higher-order interval here). Below C + P a save queues behind the previous one, blocks
    training and makes nothing durable sooner, so waste grows again: the persist time matters
    only once C + P is longer than the Young interval.

    Args:
        checkpoint_s: C, seconds a save blocks training.
        persist_s: P, seconds after the block until the save is durable.
        mtbi_s: M, the mean time between interruptions in seconds.

    Example:
        >>> async_interval_s(checkpoint_s=10.0, persist_s=600.0, mtbi_s=7200.0)  # C + P
        610.0
        >>> round(async_interval_s(checkpoint_s=2.0, persist_s=0.0, mtbi_s=3600.0), 2)
        120.67
    """
    _check_cm(checkpoint_s, mtbi_s)
    if not (math.isfinite(persist_s) and persist_s >= 0):
        raise ConfigError(f"persist_s = {persist_s!r}: the persist time must be a number >= 0")
    return max(checkpoint_s + persist_s, daly_interval_s(checkpoint_s, mtbi_s) + checkpoint_s)


def _check_cm(c_s: float, m_s: float) -> None:
    if not (math.isfinite(c_s) and c_s >= 0):
        raise ConfigError(f"c_s = {c_s!r}: the checkpoint cost must be a finite number >= 0")
    if not (math.isfinite(m_s) and m_s > 0):
        raise ConfigError(f"m_s = {m_s!r}: the mean time between interruptions must be > 0")


def mtbi_estimate(
    prior_s: float,
    prior_weight: float,
    observed_interruptions: int,
    observed_runtime_s: float,
) -> float:
    """Blend a prior mean time between interruptions with what this job has observed.

    A Gamma prior on the interruption rate, updated by a Poisson count: the prior counts as
    `prior_weight` interruptions seen over ``prior_weight * prior_s`` seconds, so the estimate
    is (prior_weight·prior_s + runtime) / (prior_weight + interruptions), the reciprocal of the
    posterior mean rate. With no observations it is the prior; with many, the observed mean;
    a long run without interruptions raises it.

    Args:
        prior_s: the prior MTBI in seconds (a pool's `mtbi_prior_s`).
        prior_weight: how many interruptions the prior is worth (> 0).
        observed_interruptions: interruptions this job has seen (preemptions and unclean kills).
        observed_runtime_s: seconds of capacity the job has run on, over all attempts.

    Example:
        >>> mtbi_estimate(14400.0, 2.0, 0, 0.0)
        14400.0
        >>> mtbi_estimate(14400.0, 2.0, 4, 7200.0)  # 4 kills in 2 h: (28800 + 7200) / 6
        6000.0
    """
    if not (math.isfinite(prior_s) and prior_s > 0):
        raise ConfigError(f"prior_s = {prior_s!r}: must be a finite number > 0")
    if not (math.isfinite(prior_weight) and prior_weight > 0):
        raise ConfigError(f"prior_weight = {prior_weight!r}: must be a finite number > 0")
    if observed_interruptions < 0:
        raise ConfigError(f"observed_interruptions = {observed_interruptions!r}: must be >= 0")
    if not (math.isfinite(observed_runtime_s) and observed_runtime_s >= 0):
        raise ConfigError(f"observed_runtime_s = {observed_runtime_s!r}: must be >= 0")
    return (prior_weight * prior_s + observed_runtime_s) / (prior_weight + observed_interruptions)


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} = {value!r}: must be a finite number > 0")


def _decide_by_time(
    state: IntervalState, *, target_s: float | None, cap_s: float | None, floor_s: float, why: str
) -> IntervalDecision:
    """The shared rule of the time-based policies.

    Save once `target_s` has elapsed; save *before* the cap would be passed: if the next step
    boundary (one mean step away) would pass `cap_s`, save at this one. Never save sooner than
    `floor_s` after the last save: a save started before the previous one is durable queues
    behind it, blocks training and makes nothing durable sooner. The floor wins over the cap.
    """
    elapsed = state.elapsed_s
    step = state.mean_step_s or 0.0
    if elapsed < floor_s:
        return Wait(remaining_s=floor_s - elapsed)
    if target_s is not None and elapsed >= target_s:
        return SaveNow(
            reason=f"{elapsed:.0f} s since the last save reached {why} of {target_s:.0f} s"
        )
    if cap_s is not None and elapsed + step > cap_s:
        return SaveNow(
            reason=f"the next step would pass the lost-work cap: {elapsed:.0f} s since the "
            f"last save, steps of {step:.3g} s, cap {cap_s:.0f} s"
        )
    remaining = [t - elapsed for t in (target_s,) if t is not None]
    remaining += [c - step - elapsed for c in (cap_s,) if c is not None]
    return Wait(remaining_s=max(0.0, min(remaining)) if remaining else None)


def _cap_s(max_lost_work_s: float, state: IntervalState) -> float:
    """Longest time between save starts that keeps T + C + P within the lost-work budget."""
    return max_lost_work_s - (state.save_blocking_s or 0.0) - (state.persist_s or 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class EverySteps:
    """Save every `n` steps, whatever they cost.

    Example:
        >>> EverySteps(n=100).decide(IntervalState(now_s=0, last_save_s=0, steps_since_save=40))
        Wait(remaining_s=None, remaining_steps=60)
    """

    n: int
    """Steps between saves (>= 1)."""

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"n = {self.n!r}: must be an integer >= 1 (steps between saves)")

    def decide(self, state: IntervalState) -> IntervalDecision:
        """Whether `n` steps have passed since the last save."""
        if state.steps_since_save >= self.n:
            return SaveNow(reason=f"every {self.n} steps")
        return Wait(remaining_steps=self.n - state.steps_since_save)


@dataclass(frozen=True, slots=True, kw_only=True)
class EverySeconds:
    """Save at the first step boundary at least `interval_s` seconds after the last save.

    Literal: no persist floor and no cap; the checkpointer's back-pressure bounds queued saves.

    Example:
        >>> EverySeconds(interval_s=60).decide(
        ...     IntervalState(now_s=61, last_save_s=0, steps_since_save=9))
        SaveNow(reason='61 s since the last save reached the interval of 60 s')
    """

    interval_s: float
    """Seconds between save starts (> 0)."""

    def __post_init__(self) -> None:
        _positive("interval_s", self.interval_s)

    def decide(self, state: IntervalState) -> IntervalDecision:
        """Whether `interval_s` has elapsed since the last save started."""
        return _decide_by_time(
            state, target_s=self.interval_s, cap_s=None, floor_s=0.0, why="the interval"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxLostWork:
    """Save as rarely as the lost-work budget allows: T + C + P <= `max_lost_work_s`.

    Saves at the last step boundary before the budget would be passed, and never sooner than
    the persist time P after the previous save (saves would queue). The budget holds whenever
    a step fits after a save's blocking time and after the floor,
    max(2C + P, C + 2P) + step <= budget; otherwise the floor wins and the budget cannot be met.

    Example:
        >>> MaxLostWork(max_lost_work_s=600).decide(IntervalState(
        ...     now_s=560, last_save_s=0, steps_since_save=56, mean_step_s=10.0,
        ...     save_blocking_s=5.0, persist_s=30.0)).reason[:31]
        'the next step would pass the lo'
    """

    max_lost_work_s: float
    """Most seconds of work an unclean interruption may throw away (> 0)."""

    def __post_init__(self) -> None:
        _positive("max_lost_work_s", self.max_lost_work_s)

    def interval_s(self, state: IntervalState) -> float:
        """Seconds between save starts this policy aims for, given `state`."""
        return max(_cap_s(self.max_lost_work_s, state), state.persist_s or 0.0)

    def decide(self, state: IntervalState) -> IntervalDecision:
        """Whether waiting one more step would break the lost-work budget."""
        return _decide_by_time(
            state,
            target_s=None,
            cap_s=_cap_s(self.max_lost_work_s, state),
            floor_s=state.persist_s or 0.0,
            why="",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Auto:
    """Young/Daly: the interval that minimises expected waste, within the lost-work budget.

    With C the measured blocking cost of a save, P its persist time and M the mean time
    between interruptions (``state.mtbi_s``, else `mtbi_prior_s`), saves start every
    `async_interval_s` (C, P, M) = max(C + P, ``daly_interval_s(C, M) + C``) seconds, at least
    `min_interval_s` apart, capped as in `MaxLostWork`, and never sooner than C + P after the
    previous save started: that save is durable only then, and one started sooner queues
    behind it, blocks training and makes nothing durable sooner (the floor wins over the cap
    and `min_interval_s`). Before C is measured, the first save comes after `first_save_s`
    (or sooner if the cap says so), and measures C.

    The lost-work budget holds whenever a step fits after the floor and a save,
    2C + 2P + step <= budget; otherwise the floor wins.

    Example:
        >>> policy = Auto(max_lost_work_s=1800, mtbi_prior_s=3600)
        >>> round(policy.interval_s(IntervalState(
        ...     now_s=0, last_save_s=0, steps_since_save=0, save_blocking_s=2.0)), 3)
        120.67
    """

    max_lost_work_s: float
    """Most seconds of work an unclean interruption may throw away (> 0)."""
    mtbi_prior_s: float = DEFAULT_MTBI_PRIOR_S
    """M when the state carries none, in seconds (> 0)."""
    min_interval_s: float = 30.0
    """Shortest Daly interval in seconds: C counts only the blocking part of a save, not the
    bandwidth and CPU its background persist takes from training, so a tiny C must not mean
    saving every few seconds. Yields to the lost-work cap."""
    first_save_s: float = FIRST_SAVE_S
    """Seconds of training before the first save while C is unmeasured (> 0)."""

    def __post_init__(self) -> None:
        _positive("max_lost_work_s", self.max_lost_work_s)
        _positive("mtbi_prior_s", self.mtbi_prior_s)
        _positive("first_save_s", self.first_save_s)
        if isinstance(self.min_interval_s, bool) or not (
            math.isfinite(self.min_interval_s) and self.min_interval_s >= 0
        ):
            raise ConfigError(f"min_interval_s = {self.min_interval_s!r}: must be >= 0")

    @classmethod
    def from_pool(cls, pool: Pool) -> Auto:
        """The auto policy of a pool: its lost-work budget and MTBI prior.

        Example:
            >>> from spotsafe.policy.pools import PRESETS
            >>> Auto.from_pool(PRESETS["critical"]).max_lost_work_s
            600.0
        """
        return cls(max_lost_work_s=pool.max_lost_work_s, mtbi_prior_s=pool.mtbi_prior_s)

    def _target_s(self, state: IntervalState) -> float:
        if state.save_blocking_s is None:
            return self.first_save_s
        m_s = state.mtbi_s if state.mtbi_s is not None else self.mtbi_prior_s
        best = async_interval_s(
            checkpoint_s=state.save_blocking_s, persist_s=state.persist_s or 0.0, mtbi_s=m_s
        )
        return max(best, self.min_interval_s)

    @staticmethod
    def _floor_s(state: IntervalState) -> float:
        """C + P: when the previous save is durable, counted from its start."""
        return (state.save_blocking_s or 0.0) + (state.persist_s or 0.0)

    def interval_s(self, state: IntervalState) -> float:
        """Seconds between save starts this policy aims for, given `state`."""
        target = min(self._target_s(state), _cap_s(self.max_lost_work_s, state))
        return max(target, self._floor_s(state))

    def decide(self, state: IntervalState) -> IntervalDecision:
        """Whether the Daly interval has elapsed or the next step would pass the cap."""
        return _decide_by_time(
            state,
            target_s=self._target_s(state),
            cap_s=_cap_s(self.max_lost_work_s, state),
            floor_s=self._floor_s(state),
            why="the first-save time" if state.save_blocking_s is None else "the Daly interval",
        )


IntervalPolicy = EverySteps | EverySeconds | MaxLostWork | Auto
