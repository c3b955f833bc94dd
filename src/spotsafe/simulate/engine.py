"""The vectorised Monte Carlo: many trials of one job under one or more save schedules.

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

The loop is over blocks of trials and chunks of attempts (a few per trial at most, each a
handful of numpy passes over the matrix), not over events. Draws depend only on the seed,
the block of trials and the chunk, never on the schedule: every interval sees the same
interruptions (common random numbers), so a sweep compares intervals, not luck. `run_many`
draws each block once and runs every interval on it, reusing what does not depend on the
interval (training time per attempt and the running sums of windows, restarts and training
along each row); only the gains, the work left and where each trial ends are per interval.

Optionally (`Switch`) a run leaves spot for on-demand capacity at an interruption, as the
supervisor's on-demand fallback does at a restart: after N interruptions, or once the slack
before a deadline no longer covers one more interruption. The rest of the job then runs as one
uninterrupted attempt on on-demand capacity (restart, restore, the work left, the final save),
counted in `Outcome.on_demand_s`.

Time is split into useful work and six kinds of waste, which add up to the makespan:
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from spotsafe.errors import ConfigError
from spotsafe.policy.interval import daly_interval_s
from spotsafe.simulate.model import Job, Schedule, schedule
from spotsafe.simulate.processes import Process

__all__ = ["WASTE_KINDS", "Outcome", "Switch", "finish_s", "run_many", "run_trials"]

Array = npt.NDArray[np.float64]
Index = npt.NDArray[np.intp]

WASTE_KINDS = ("checkpoint", "replayed", "restore", "restart", "notice", "capacity_wait")
"""The kinds of waste, in the order reports list them."""

# Elements of one attempt matrix (trials x attempts) per block. A block's cached draws are
# about ten matrices of this size and an interval's pass over them half a dozen more; 2^15
# float64 elements (256 KiB) keeps the working set of one pass within this machine's L2 and
# L3 caches, and blocks large enough that numpy's per-call overhead stays small.
BLOCK_ELEMENTS = 1 << 16
# A trial still running after this many times its work is given up as unfinished: the
# schedule (or the interruption rate) leaves the job practically no way to finish.
LIMIT_FACTOR = 50.0
# Float slack when comparing seconds of work.
EPS_S = 1e-6

Progress = Callable[[int], None]
"""Called with the number of trials just finished."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Switch:
    """When a run leaves spot for on-demand capacity, for the rest of the job. It is decided
    at each interruption, as the supervisor decides at each restart; the first rule that
    holds switches.

    Example:
        >>> Switch(after_interruptions=0)
        Traceback (most recent call last):
        ...
        spotsafe.errors.ConfigError: after_interruptions = 0: must be an integer >= 1 ...
    """

    after_interruptions: int | None = None
    """Fall back once the run has been interrupted this many times (the pool's
    ``on_demand_after``; >= 1, since 0 is simply on-demand from the start)."""
    deadline_s: float | None = None
    """Deadline-aware: fall back at an interruption once the slack left, the deadline less the
    time so far and less what on-demand needs to finish (restart, restore, the work left),
    no longer covers the most one more interruption can lose (restart, restore, a cycle and
    a persist); or, while waiting for spot capacity after an interruption, once the wait has
    used that slack up."""

    def __post_init__(self) -> None:
        n = self.after_interruptions
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(
                f"after_interruptions = {n!r}: must be an integer >= 1 (0 is on-demand only)"
            )
        d = self.deadline_s
        if d is not None and not (math.isfinite(d) and d > 0):
            raise ConfigError(f"deadline_s = {d!r}: must be a finite number of seconds > 0")

    def from_the_start(self, job: Job, sched: Schedule) -> bool:
        """Whether the deadline rule already says on-demand at the start: the slack before
        the deadline does not cover one interruption even then.

        Example:
            >>> job = Job(work_s=3600.0, checkpoint_s=10.0, restart_s=60.0)
            >>> Switch(deadline_s=3700.0).from_the_start(job, schedule(job, 310.0))
            True
        """
        if self.deadline_s is None:
            return False
        need = float(finish_s(job, sched, job.work_s)) + _worst_loss_s(job, sched)
        return need > self.deadline_s


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
    on_demand_s: Array = field(default_factory=lambda: np.zeros(0))
    """Seconds each trial ran on on-demand capacity after a `Switch` (all 0 without one)."""


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


# Rows of `_Chunk.cs`: running sums of windows, restarts, training (x >= 0), training until
# a usable notice, and waits for capacity.
CS_WINDOW, CS_RESTART, CS_XP, CS_TRAINED, CS_WAIT = range(5)
CS_ROWS = 5


@dataclass(slots=True)
class _Chunk:
    """One chunk of attempts for every trial of a block, and what follows from it alone.
    The running sums are along each row (cs[:, j]: attempts 0..j)."""

    waits: Array | None  # None: the process never makes a trial wait (Poisson)
    x: Array  # training time of each attempt: window less restart and restore (< 0: none)
    x_eps: Array  # x + EPS_S, for "trains at least the work left"
    trained: Array  # training until a usable notice, else max(x, 0)
    cs: Array  # running sums, stacked (see the CS_* rows): one gather reads them all
    state: object  # the process's state after this chunk, for the next draw


class _Draws:
    """The interruptions of one block of trials, drawn chunk by chunk on demand and kept,
    so that every schedule run on the block reuses them."""

    def __init__(self, job: Job, process: Process, n: int, k0: int, seed: int, block: int):
        self.job, self.process, self.n, self.k0 = job, process, n, k0
        self.seed, self.block = seed, block
        self.chunks: list[_Chunk] = []

    def get(self, c: int) -> _Chunk:
        while len(self.chunks) <= c:
            self.chunks.append(self._draw(len(self.chunks)))
        return self.chunks[c]

    def _draw(self, c: int) -> _Chunk:
        job = self.job
        k = self.k0 * min(1 << c, 8)
        rng = np.random.default_rng([self.seed, self.block, c])
        state = self.chunks[-1].state if self.chunks else None
        # Drawn for every trial of the block, finished or not: a trial's draws never depend
        # on how its neighbours fared, or on the schedule.
        waits, windows, state = self.process.draw(rng, self.n, k, state)
        waits_or_none = waits if waits.any() else None
        x = windows - job.overhead_s
        restart_t = np.minimum(windows, job.restart_s)
        if c == 0:  # a trial's first attempt pays no restart and no restore
            x[:, 0] = windows[:, 0]
            restart_t[:, 0] = 0.0
        xp = np.maximum(x, 0.0)
        # A usable notice stops training at a step, saves and persists: all work done until
        # the notice is kept; the time after it is lost.
        trained = np.maximum(x - job.notice_s, 0.0) if job.notice_saves else xp
        cs = np.empty((CS_ROWS, self.n, k))
        np.cumsum(windows, axis=1, out=cs[CS_WINDOW])
        np.cumsum(restart_t, axis=1, out=cs[CS_RESTART])
        np.cumsum(xp, axis=1, out=cs[CS_XP])
        np.cumsum(trained, axis=1, out=cs[CS_TRAINED])
        np.cumsum(waits, axis=1, out=cs[CS_WAIT])
        return _Chunk(
            waits=waits_or_none,
            x=x,
            x_eps=x + EPS_S,
            trained=trained,
            cs=cs,
            state=state,
        )


def run_trials(
    job: Job,
    process: Process,
    interval_s: float,
    *,
    trials: int,
    seed: int,
    progress: Progress | None = None,
    switch: Switch | None = None,
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
        switch: when to leave spot for on-demand capacity; None: never.

    Raises:
        ConfigError: an interval the job cannot use (see `schedule`).
    """
    return run_many(
        job, process, [interval_s], trials=trials, seed=seed, progress=progress, switch=switch
    )[0]


def run_many(
    job: Job,
    process: Process,
    intervals: Sequence[float],
    *,
    trials: int,
    seed: int,
    progress: Progress | None = None,
    switch: Switch | None = None,
) -> list[Outcome]:
    """`run_trials` for several intervals on the same interruptions, each block of trials
    drawn once: the same numbers as one `run_trials` per interval, in a fraction of the time.

    Raises:
        ConfigError: an interval the job cannot use, naming it (before anything runs).

    Example:
        >>> from spotsafe.simulate.processes import Poisson
        >>> job = Job(work_s=36000.0, checkpoint_s=20.0, restart_s=60.0)
        >>> a, b = run_many(job, Poisson(7200.0), [300.0, 900.0], trials=50, seed=0)
        >>> a.schedule.interval_s, bool((a.makespan_s == run_trials(
        ...     job, Poisson(7200.0), 300.0, trials=50, seed=0).makespan_s).all())
        (300.0, True)
    """
    scheds = [schedule(job, i) for i in intervals]
    k0 = _chunk_columns(job, process)
    block = max(1, min(trials, BLOCK_ELEMENTS // k0))
    results = [_Result(trials) for _ in scheds]
    for b, lo in enumerate(range(0, trials, block)):
        hi = min(trials, lo + block)
        draws = _Draws(job, process, hi - lo, k0, seed, b)
        for sched, result in zip(scheds, results, strict=True):
            result.put(lo, hi, _run_block(job, sched, draws, switch, progress))
    return [r.outcome(s) for s, r in zip(scheds, results, strict=True)]


_BlockOut = tuple[Array, dict[str, Array], npt.NDArray[np.int64], Array]


class _Result:
    """The per-trial arrays of one schedule, filled block by block."""

    def __init__(self, trials: int) -> None:
        self.makespan = np.empty(trials)
        self.waste = {kind: np.empty(trials) for kind in WASTE_KINDS}
        self.count = np.empty(trials, dtype=np.int64)
        self.on_demand = np.empty(trials)

    def put(self, lo: int, hi: int, out: _BlockOut) -> None:
        self.makespan[lo:hi] = out[0]
        for kind in WASTE_KINDS:
            self.waste[kind][lo:hi] = out[1][kind]
        self.count[lo:hi] = out[2]
        self.on_demand[lo:hi] = out[3]

    def outcome(self, sched: Schedule) -> Outcome:
        return Outcome(
            schedule=sched,
            makespan_s=self.makespan,
            waste_s=self.waste,
            interruptions=self.count,
            unfinished=int(np.isinf(self.makespan).sum()),
            on_demand_s=self.on_demand,
        )


def _upto(cs: Array, rows: Index, last: Index) -> Array:
    """Row sums of the attempts before `last` (an index per row), from running sums `cs`."""
    total: Array = cs[rows, np.maximum(last - 1, 0)]
    total[last == 0] = 0.0
    return total


def _first_per_row(r: Index, c: Index, m: int, k: int) -> Index:
    """The smallest column of each row among the (row-major sorted) hits (r, c); k: none."""
    first: Index = np.full(m, k, dtype=np.intp)
    if len(r):
        lead = np.ones(len(r), dtype=bool)
        lead[1:] = r[1:] != r[:-1]
        first[r[lead]] = c[lead]
    return first


def _first_true(hits: npt.NDArray[np.bool_], rows: Index) -> Index:
    """The first column of each row of `hits` that is True; the width where none is."""
    k = hits.shape[1]
    first: Index = np.argmax(hits, axis=1)
    first[~hits[rows, first]] = k
    return first


def _first_finish(
    job: Job,
    sched: Schedule,
    x: Array,
    cand: npt.NDArray[np.bool_],
    left: Array,
    rows: Index,
) -> tuple[Index, Index, Index]:
    """The attempt in which each trial finishes (the width where none does), and the
    candidates (rows, columns) that trained all the work left without finishing, for the rows
    that have any before their finishing attempt.

    A candidate trained at least the work left; it finishes if its final save is durable too.
    Nearly always a row's first candidate finishes, so that is checked for every row, and
    the rest only for the few rows where it did not."""
    m, k = cand.shape
    first = _first_true(cand, rows)
    some = np.flatnonzero(first < k)
    c1 = first[some]
    need = finish_s(job, sched, np.maximum(left[some, c1], EPS_S))
    ok = x[some, c1] >= need
    last: Index = np.full(m, k, dtype=np.intp)
    last[some[ok]] = c1[ok]
    bad = some[~ok]
    if not len(bad):
        return last, rows[:0], rows[:0]
    r, c = np.nonzero(cand[bad])
    r = bad[r]
    fine = x[r, c] >= finish_s(job, sched, np.maximum(left[r, c], EPS_S))
    last[bad] = _first_per_row(r[fine], c[fine], m, k)[bad]
    return last, r, c


def _run_block(
    job: Job, sched: Schedule, draws: _Draws, switch: Switch | None, progress: Progress | None
) -> _BlockOut:
    n = draws.n
    tau, cycle, p, work = sched.work_s, sched.cycle_s, job.persist_s, job.work_s
    notice = job.notice_saves
    limit = LIMIT_FACTOR * work
    remaining = np.full(n, work)
    elapsed = np.zeros(n)
    sums = {kind: np.zeros(n) for kind in WASTE_KINDS}
    count = np.zeros(n, dtype=np.int64)
    makespan = np.full(n, math.inf)
    on_demand = np.zeros(n)
    active: Index = np.arange(n)
    chunk = 0
    while len(active):
        ch = draws.get(chunk)
        whole = len(active) == n  # every trial still runs: no gathering of rows

        def rows_of(a: Array, whole: bool = whole, active: Index = active) -> Array:
            return a if whole else a[active]

        tr = rows_of(ch.trained)
        m, k = tr.shape
        rows: Index = np.arange(m)
        rem = remaining[active]
        # The work each attempt makes durable, and the work done that it loses.
        cycles = np.floor(tr / cycle)
        part = cycles * cycle
        np.subtract(tr, part, out=part)  # training in the cycle an interruption cut short
        np.minimum(part, tau, out=part)
        if notice:
            gain = cycles * tau
            gain += part  # a usable notice keeps all the work done
            lost = None
        elif p > 0:
            gain = np.maximum(tr - p, 0.0)  # saves are durable k·L + P into training
            gain /= cycle
            np.floor(gain, out=gain)
            gain *= tau
            lost = cycles * tau
            lost += part
            lost -= gain
        else:
            gain = cycles * tau
            lost = part
        cs_gain = np.cumsum(gain, axis=1, out=None if notice else gain)
        left = np.empty_like(cs_gain)  # work left before each attempt
        left[:, 0] = rem
        np.subtract(rem[:, None], cs_gain[:, :-1], out=left[:, 1:])
        if notice:
            # Training stops at the notice: the attempt finishes if it trained all that was
            # left by then (its final save then fits in the notice).
            last = _first_true(gain + EPS_S >= left, rows)
            cand_r = cand_c = rows[:0]
        else:
            last, cand_r, cand_c = _first_finish(
                job, sched, rows_of(ch.x), rows_of(ch.x_eps) >= left, left, rows
            )
        finished = last < k
        li = np.minimum(last, k - 1)
        fin_left = np.where(finished, left[rows, li], 0.0)
        waits = None if ch.waits is None else rows_of(ch.waits)
        fin_wait = np.zeros(m) if waits is None else np.where(finished, waits[rows, li], 0.0)
        paid_last = finished & (last > 0) if chunk == 0 else finished.copy()
        switched = np.zeros(m, dtype=bool)
        if switch is not None:
            s, waited = _switch_column(job, sched, switch, ch, rows_of, active, elapsed,
                                       count, rem, cs_gain, last)  # fmt: skip
            switched = s < last
            if switched.any():
                sw = np.flatnonzero(switched)
                # The run leaves spot at interruption s, or while it waits for spot capacity
                # after it: the rest runs on on-demand capacity, after a restart and a restore.
                last[sw] = s[sw] + 1
                fin_left[sw] = rem[sw] - cs_gain[sw, s[sw]]
                fin_wait[sw] = waited[sw]
                paid_last[sw] = True
                finished |= switched
        fin_need = np.zeros(m)
        done = np.flatnonzero(finished)
        fin_need[done] = finish_s(job, sched, np.maximum(fin_left[done], EPS_S))
        # Training stops once nothing is left: work done in an attempt that trained past the
        # work left (but did not finish) counts only up to it.
        sum_lost = np.zeros(m) if lost is None else _upto(np.cumsum(lost, axis=1), rows, last)
        if lost is not None and len(cand_r):
            before = cand_c < last[cand_r]
            r_b, c_b = cand_r[before], cand_c[before]
            t_b = tr[r_b, c_b]
            cyc_b = np.floor(t_b / cycle)
            done_b = cyc_b * tau + np.minimum(t_b - cyc_b * cycle, tau)
            over = np.maximum(done_b - left[r_b, c_b], 0.0)
            sum_lost -= np.bincount(r_b, weights=over, minlength=m)
        sum_gain = _upto(cs_gain, rows, last)
        sums_cs = ch.cs[:, active, np.maximum(last - 1, 0)]
        sums_cs[:, last == 0] = 0.0
        sum_window, sum_restart, sum_xp = sums_cs[CS_WINDOW], sums_cs[CS_RESTART], sums_cs[CS_XP]
        sum_trained, sum_wait = sums_cs[CS_TRAINED], sums_cs[CS_WAIT]
        final_save = np.where(finished, fin_need - fin_left, 0.0)
        add = {
            "checkpoint": sum_trained - sum_gain - sum_lost + final_save,
            "replayed": sum_lost,
            "restore": sum_window - sum_restart - sum_xp + np.where(paid_last, job.restore_s, 0.0),
            "restart": sum_restart + np.where(paid_last, job.restart_s, 0.0),
            "notice": sum_xp - sum_trained,
            "capacity_wait": sum_wait + fin_wait,
        }
        for kind, value in add.items():
            sums[kind][active] += value
        fin_over = np.where(paid_last, job.overhead_s, 0.0)
        elapsed[active] += sum_wait + sum_window + fin_wait + fin_over + fin_need
        on_demand[active] += np.where(switched, fin_over + fin_need, 0.0)
        count[active] += last
        remaining[active] -= sum_gain
        makespan[active[finished]] = elapsed[active[finished]]
        gave_up = ~finished & (elapsed[active] > limit)
        if progress is not None and (finished.any() or gave_up.any()):
            progress(int(finished.sum() + gave_up.sum()))
        active = active[~finished & ~gave_up]
        chunk += 1
    return makespan, sums, count, on_demand


def _switch_column(
    job: Job,
    sched: Schedule,
    switch: Switch,
    ch: _Chunk,
    rows_of: Callable[[Array], Array],
    active: Index,
    elapsed: Array,
    count: npt.NDArray[np.int64],
    rem: Array,
    cs_gain: Array,
    last: Index,
) -> tuple[Index, Array]:
    """The first interruption of this chunk (a column before `last`) at which `switch` says
    to leave spot (k where none), and how long the run waited for spot capacity after it
    before leaving."""
    m, k = cs_gain.shape
    first: Index = np.full(m, k, dtype=np.intp)
    waited = np.zeros(m)
    if switch.after_interruptions is not None:
        # Attempt j is the run's (count + j + 1)-th interruption; the fallback is at once.
        j = switch.after_interruptions - 1 - count[active]
        j = np.maximum(j, 0).astype(np.intp)
        first = np.where(j < k, j, first)
    if switch.deadline_s is not None:
        # The slack at each interruption: the deadline less the time so far, what on-demand
        # would need from there, and the most one more interruption could lose.
        slack = rows_of(ch.cs[CS_WINDOW]) + elapsed[active][:, None]
        if ch.waits is not None:
            slack += rows_of(ch.cs[CS_WAIT])
        slack += finish_s(job, sched, np.maximum(rem[:, None] - cs_gain, EPS_S))
        slack += job.overhead_s + _worst_loss_s(job, sched)
        np.subtract(switch.deadline_s, slack, out=slack)
        # Waiting for spot capacity spends slack too: the run leaves spot while it waits, once
        # the slack is gone. (The wait after a chunk's last column is in the next chunk,
        # unknown here: taken as none, as if capacity came back at once.)
        wait_next = np.zeros_like(slack)
        if ch.waits is not None:
            wait_next[:, :-1] = rows_of(ch.waits)[:, 1:]
        r, c = np.nonzero(slack < wait_next)
        dl = _first_per_row(r, c, m, k)
        hit = np.flatnonzero(dl < k)
        waited[hit] = np.maximum(slack[hit, dl[hit]], 0.0)
        sooner = dl < first
        first = np.where(sooner, dl, first)
        waited = np.where(sooner, waited, 0.0)
    return np.where(first < last, first, k), waited


def _worst_loss_s(job: Job, sched: Schedule) -> float:
    """The most one interruption can cost: a restart, a restore, and the training since the
    newest durable save (a cycle and a persist, struck just before the next is durable)."""
    return job.overhead_s + sched.cycle_s + job.persist_s
