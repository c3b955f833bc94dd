"""The vectorised Monte Carlo: many trials of one job under one save schedule.

No Python loop runs per interruption. Interruptions do not depend on what the job does, so a
trial is a row of attempts drawn up front (the wait for capacity before each, the window of
capacity it holds until its interruption). What an attempt of window Δ achieves depends only
on Δ and on the work left, so for a whole matrix of attempts at once:

* the attempt's training time is x = Δ − restart − restore (the first attempt pays neither);
* the work it makes durable is τ·⌊(x − P)/L⌋ (saves durable k·L + P into training), or, with
  a notice that covers a step, a save and its persist, all the work done until the notice;
* the work left before each attempt is a cumulative sum of those gains along the row, and
  the job ends in the first attempt long enough to train what is left and make its final
  save durable.

The loop is over chunks of attempts (a few per trial at most, each a handful of numpy
passes over the matrix), not over events. Draws depend only on the seed, the block of trials
and the chunk, never on the schedule: every interval sees the same interruptions (common
random numbers), so a sweep compares intervals, not luck.

Time is split into useful work and five kinds of waste, which add up to the makespan:
checkpoint (blocking saves, and waiting for the previous persist), replayed (work done and
lost to an interruption), restore, restart, notice (the time between a usable notice and the
interruption), and capacity_wait (a trace's unavailable spells).

Example:
    >>> from spotsafe.simulate.model import Job
    >>> from spotsafe.simulate.processes import Poisson
    >>> job = Job(work_s=100 * 3600.0, checkpoint_s=60.0, restart_s=300.0)
    >>> out = run_trials(job, Poisson(10 * 3600.0), 1800.0, trials=200, seed=1)
    >>> 100 < float(out.makespan_s.mean()) / 3600 < 110
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spotsafe.policy.interval import daly_interval_s
from spotsafe.simulate.model import Job, Schedule, schedule
from spotsafe.simulate.processes import Process

__all__ = ["WASTE_KINDS", "Outcome", "finish_s", "run_trials"]

Array = npt.NDArray[np.float64]

WASTE_KINDS = ("checkpoint", "replayed", "restore", "restart", "notice", "capacity_wait")
"""The kinds of waste, in the order reports list them."""

# Elements of one attempt matrix (trials x attempts) per block: about a dozen float64
# temporaries of this size are alive at once, so a few MB, which stay in
# the caches.
BLOCK_ELEMENTS = 1 << 16
# A trial still running after this many times its work is given up as unfinished: the
# schedule (or the interruption rate) leaves the job practically no way to finish.
LIMIT_FACTOR = 50.0
# Float slack when comparing seconds of work.
EPS_S = 1e-6

Progress = Callable[[int], None]
"""Called with the number of trials just finished."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """Per-trial results of one schedule: arrays of length `trials`, seconds.

    Example:
        >>> from spotsafe.simulate.processes import Poisson
        >>> o = run_trials(Job(work_s=3600.0), Poisson(1e9), 3600.0, trials=3, seed=0)
        >>> o.makespan_s.tolist(), int(o.unfinished)
        ([3600.0, 3600.0, 3600.0], 0)
    """

    schedule: Schedule
    """The save schedule simulated."""
    makespan_s: Array
    """Wall time from the start until the final save is durable (inf: unfinished)."""
    waste_s: dict[str, Array]
    """Seconds of each kind of waste (`WASTE_KINDS`)."""
    interruptions: npt.NDArray[np.int64]
    """Interruptions each trial went through."""
    unfinished: int
    """Trials given up after `LIMIT_FACTOR` times the work without finishing."""


def finish_s(job: Job, sched: Schedule, remaining_s: Array | float) -> Array:
    """Training time an uninterrupted attempt needs to do `remaining_s` of work and make its
    final save durable.

    Example:
        >>> j = Job(work_s=100.0, checkpoint_s=2.0)
        >>> float(finish_s(j, schedule(j, 12.0), 100.0))  # 10 cycles of 10 s + 2 s
        120.0
    """
    tau, cycle = sched.work_s, sched.cycle_s
    c, p = job.checkpoint_s, job.persist_s
    r = np.asarray(remaining_s, dtype=np.float64)
    n = np.maximum(np.ceil(r / tau - 1e-9), 1.0)
    last = r - (n - 1.0) * tau
    return (n - 1.0) * cycle + np.maximum(last, p) + c + p


def _chunk_columns(job: Job, process: Process) -> int:
    """Attempts per trial in the first chunk: about what a trial needs, so that most trials
    finish in one chunk. It depends on the job and the process, never on the schedule, so
    that every schedule draws the same interruptions: the estimate is Daly's expected
    makespan at Daly's interval, divided by the mean window."""
    m = max(process.mean_window_s, 1.0)
    c = job.checkpoint_s + job.persist_s
    tau = max(daly_interval_s(c, m), 1.0) if c > 0 else max(math.sqrt(m), 1.0)
    tau = min(tau, job.work_s)
    # Exponents capped: beyond e^30 the job does not finish anyway (LIMIT_FACTOR).
    growth = math.expm1(min((tau + c) / m, 30.0)) * math.exp(min(job.overhead_s / m, 30.0))
    expected = m * growth * job.work_s / tau
    return int(min(max(8.0, 1.1 * expected / m + 8.0), 1 << 15))


def run_trials(
    job: Job,
    process: Process,
    interval_s: float,
    *,
    trials: int,
    seed: int,
    progress: Progress | None = None,
) -> Outcome:
    """Simulate `trials` runs of `job` saving every `interval_s` seconds under `process`.

    Args:
        job: the job and its measured costs.
        process: when interruptions come (`Poisson`, `Trace`).
        interval_s: seconds between save starts.
        trials: how many independent runs (>= 1).
        seed: the seed; the same seed gives the same result, and the same interruptions for
            every interval.
        progress: called as trials finish, with how many.

    Raises:
        ConfigError: an interval the job cannot use (see `schedule`).
    """
    sched = schedule(job, interval_s)
    k0 = _chunk_columns(job, process)
    block = max(1, min(trials, BLOCK_ELEMENTS // k0))
    makespan = np.empty(trials)
    waste = {kind: np.empty(trials) for kind in WASTE_KINDS}
    count = np.empty(trials, dtype=np.int64)
    unfinished = 0
    for b, lo in enumerate(range(0, trials, block)):
        hi = min(trials, lo + block)
        out = _run_block(job, process, sched, hi - lo, k0, seed, b, progress)
        makespan[lo:hi] = out[0]
        for kind in WASTE_KINDS:
            waste[kind][lo:hi] = out[1][kind]
        count[lo:hi] = out[2]
        unfinished += out[3]
    return Outcome(
        schedule=sched,
        makespan_s=makespan,
        waste_s=waste,
        interruptions=count,
        unfinished=unfinished,
    )


def _run_block(
    job: Job,
    process: Process,
    sched: Schedule,
    n: int,
    k0: int,
    seed: int,
    block: int,
    progress: Progress | None,
) -> tuple[Array, dict[str, Array], npt.NDArray[np.int64], int]:
    tau, cycle, p = sched.work_s, sched.cycle_s, job.persist_s
    restart, restore = job.restart_s, job.restore_s
    limit = LIMIT_FACTOR * job.work_s
    remaining = np.full(n, job.work_s)
    elapsed = np.zeros(n)
    sums = {kind: np.zeros(n) for kind in WASTE_KINDS}
    count = np.zeros(n, dtype=np.int64)
    makespan = np.full(n, math.inf)
    active = np.arange(n)
    fresh = np.ones(n, dtype=bool)  # the next attempt is the trial's first (no restart)
    state: object = None
    chunk = 0
    while len(active):
        k = k0 * min(1 << chunk, 8)
        rng = np.random.default_rng([seed, block, chunk])
        # Drawn for every trial of the block, finished or not: a trial's draws never depend
        # on how its neighbours fared, or on the schedule.
        all_waits, all_windows, state = process.draw(rng, n, k, state)
        chunk += 1
        waits, windows = all_waits[active], all_windows[active]
        rows = np.arange(len(active))
        # Training time of each attempt: the window less restart and restore, which the
        # trial's first attempt does not pay.
        x = windows - job.overhead_s
        x[:, 0] += np.where(fresh[active], job.overhead_s, 0.0)
        xp = np.maximum(x, 0.0)
        # A usable notice stops training at a step, saves and persists: all work done until
        # the notice is kept; the time after it is lost.
        trained = np.maximum(x - job.notice_s, 0.0) if job.notice_saves else xp
        cycles = np.floor(trained / cycle)
        done_work = cycles * tau + np.minimum(trained - cycles * cycle, tau)
        if job.notice_saves:
            gain = done_work
        elif p > 0:
            gain = tau * np.floor(np.maximum(trained - p, 0.0) / cycle)
        else:
            gain = cycles * tau
        left = remaining[active][:, None] - (np.cumsum(gain, axis=1) - gain)
        # Training stops once nothing is left: the rest of the cycle is the final save.
        done_work = np.minimum(done_work, left)
        ends = np.zeros(x.shape, dtype=bool)
        if job.notice_saves:
            # Training stops at the notice: the attempt finishes if it trained all that was
            # left by then (its final save then fits in the notice).
            ends = gain >= left - EPS_S
        else:
            # An attempt can finish only if it trains at least the work left; the exact test
            # (the final save durable too) runs on those few candidates alone.
            cand = np.nonzero(x >= left - EPS_S)
            need_c = finish_s(job, sched, np.maximum(left[cand], EPS_S))
            ends[cand] = x[cand] >= need_c
        finished = ends.any(axis=1)
        last = np.where(finished, np.argmax(ends, axis=1), k)
        before = (np.arange(k)[None, :] < last[:, None]).astype(np.float64)

        def upto(a: Array, before: Array = before) -> Array:
            total: Array = np.einsum("ij,ij->i", a, before)
            return total

        li = np.minimum(last, k - 1)
        fin_left = np.where(finished, left[rows, li], 0.0)
        fin_need = np.where(finished, finish_s(job, sched, np.maximum(fin_left, EPS_S)), 0.0)
        fin_need = np.where(finished, fin_need, 0.0)
        fin_wait = np.where(finished, waits[rows, li], 0.0)
        paid_last = finished & ((last > 0) | ~fresh[active])
        restart_t = np.minimum(windows, restart)
        restart_t[:, 0] = np.where(fresh[active], 0.0, restart_t[:, 0])
        sum_window = upto(windows)
        sum_restart = upto(restart_t)
        sum_xp = upto(xp)
        sum_trained = upto(trained) if job.notice_saves else sum_xp
        sum_done = upto(done_work)
        sum_gain = upto(gain) if not job.notice_saves else sum_done
        sum_wait = upto(waits)
        add = {
            "checkpoint": sum_trained - sum_done + np.where(finished, fin_need - fin_left, 0.0),
            "replayed": sum_done - sum_gain,
            "restore": sum_window - sum_restart - sum_xp + np.where(paid_last, restore, 0.0),
            "restart": sum_restart + np.where(paid_last, restart, 0.0),
            "notice": sum_xp - sum_trained,
            "capacity_wait": sum_wait + fin_wait,
        }
        for kind, value in add.items():
            sums[kind][active] += value
        fin_over = np.where(paid_last, job.overhead_s, 0.0)
        elapsed[active] += sum_wait + sum_window + fin_wait + fin_over + fin_need
        count[active] += np.minimum(last, k)
        remaining[active] -= sum_gain
        fresh[active] = False
        makespan[active[finished]] = elapsed[active[finished]]
        gave_up = ~finished & (elapsed[active] > limit)
        if progress is not None and (finished.any() or gave_up.any()):
            progress(int(finished.sum() + gave_up.sum()))
        active = active[~finished & ~gave_up]
    return makespan, sums, count, int(np.isinf(makespan).sum())
