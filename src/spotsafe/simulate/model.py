"""The job a simulation runs, and the save schedule an interval gives it.

A job needs `Job.work_s` seconds of useful compute, made of steps of `Job.step_s`. It saves a
checkpoint every `interval_s` seconds (between save starts, as the Guard counts): a save
blocks training for C = `checkpoint_s`, then persists in the background for P = `persist_s`
and is durable only then; the next save waits until the previous one is durable (one save in
flight, as the Guard does). After an interruption a new machine starts (`restart_s`) and
restores the newest durable checkpoint (`restore_s`); an interruption can strike during both.

One cycle of an attempt is: train τ (the work between saves, whole steps), wait for the
previous save to be durable if it is not yet, block C. So the cycle lasts
L = C + max(τ, P), and the k-th save of an attempt is durable k·L + P after training began.
(The first cycle of an attempt waits like the others, as if a save were in flight when
training began: a pessimism of at most C per attempt, and only when τ < P, where saves
queue anyway.) The job ends when its final save (the Guard saves the final state on
leaving) is durable; a notice that saves the work stops training, so the attempt finishes
only if it trained all that was left before the notice.

Example:
    >>> job = Job(work_s=3600.0, checkpoint_s=5.0, persist_s=0.0, step_s=1.0)
    >>> s = schedule(job, 60.5)  # 55.5 s of work rounds up to 56 whole steps
    >>> s.work_s, s.cycle_s
    (56.0, 61.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from spotsafe.errors import ConfigError

__all__ = ["Job", "Schedule", "schedule"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One training job's measured costs. Every time is in seconds.

    Example:
        >>> Job(work_s=-1.0)
        Traceback (most recent call last):
        ...
        spotsafe.errors.ConfigError: work_s = -1.0: must be a finite number > 0 (useful compute)
    """

    work_s: float
    """Useful compute the job needs, in seconds (> 0)."""
    step_s: float = 0.0
    """One training step, in seconds; saves start at step boundaries (0: continuous)."""
    checkpoint_s: float = 0.0
    """C: seconds a save blocks training (the snapshot)."""
    persist_s: float = 0.0
    """P: seconds after the block until the save is durable (background; the next waits)."""
    restore_s: float = 0.0
    """Seconds to restore the newest checkpoint after a restart."""
    restart_s: float = 0.0
    """Seconds from an interruption until training code runs again (new VM and start-up)."""
    notice_s: float = 0.0
    """Warning before an interruption (0: none). It saves the work when it covers one step,
    a save and its persist; a shorter one is treated as none."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            positive = spec.name == "work_s"
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
                or (positive and value == 0)
            ):
                rule = "> 0 (useful compute)" if positive else ">= 0 (seconds)"
                raise ConfigError(f"{spec.name} = {value!r}: must be a finite number {rule}")
            object.__setattr__(self, spec.name, float(value))
        if self.step_s > self.work_s:
            raise ConfigError(
                f"step_s = {self.step_s!r}: longer than the whole job ({self.work_s:g} s of work)"
            )

    @property
    def overhead_s(self) -> float:
        """Restart plus restore: what every attempt after the first pays before training."""
        return self.restart_s + self.restore_s

    @property
    def notice_saves(self) -> bool:
        """Whether the notice is long enough to stop at a step, save and persist: then an
        interruption loses no work, only the time after the notice."""
        needed = self.step_s + self.checkpoint_s + self.persist_s
        return self.notice_s > 0 and self.notice_s >= needed


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """The save schedule of one interval.

    Example:
        >>> schedule(Job(work_s=100.0, checkpoint_s=2.0), 12.0).work_s
        10.0
    """

    interval_s: float
    """Seconds between save starts, as asked (the Guard's ``interval_s``)."""
    work_s: float
    """τ: training between saves, in seconds (whole steps)."""
    cycle_s: float
    """L = C + max(τ, P): one cycle of train, wait for the previous persist, block."""


def schedule(job: Job, interval_s: float) -> Schedule:
    """The schedule that saving every `interval_s` seconds gives `job`.

    Raises:
        ConfigError: an interval that is not a finite number, not longer than the blocking
            time C (no training between saves), shorter than the persist time P (saves would
            queue for ever), or longer than the job itself.

    Example:
        >>> schedule(Job(work_s=100.0, persist_s=30.0), 20.0)
        Traceback (most recent call last):
        ...
        spotsafe.errors.ConfigError: interval_s = 20: below the persist time ...
    """
    name = "interval_s"
    if isinstance(interval_s, bool) or not math.isfinite(interval_s):
        raise ConfigError(f"{name} = {interval_s!r}: must be a finite number of seconds")
    c, p = job.checkpoint_s, job.persist_s
    if interval_s <= c:
        raise ConfigError(
            f"{name} = {interval_s:g}: must be longer than the blocking time of a save "
            f"(checkpoint_s = {c:g}), or nothing trains between saves"
        )
    if interval_s < p:
        raise ConfigError(
            f"{name} = {interval_s:g}: below the persist time (persist_s = {p:g}): each save "
            f"would wait for the one before; use an interval >= {p:g}"
        )
    if interval_s > job.work_s + c:
        raise ConfigError(
            f"{name} = {interval_s:g}: longer than the job ({job.work_s:g} s of work): "
            f"use at most {job.work_s + c:g}"
        )
    tau = interval_s - c
    if job.step_s > 0:
        # A save starts at the first step boundary at least interval_s after the last one.
        tau = math.ceil(tau / job.step_s - 1e-9) * job.step_s
    tau = min(tau, job.work_s)
    return Schedule(interval_s=interval_s, work_s=tau, cycle_s=c + max(tau, p))
