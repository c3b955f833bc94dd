"""A sweep of intervals, and the optimum read from it.

Every interval runs on the same interruptions (the engine's common random numbers), so the
curve of mean makespan against interval is smooth up to the trials' noise. The optimum is
not the best grid point, which the noise moves along a flat bottom: near its minimum the
expected waste is nearly symmetric in log τ (Young: C/τ + τ/2M), so a cubic in log τ, fitted
to the points whose waste is within `FIT_BAND` of the least, has its minimum at the optimum.
Intervals below C + P, where saves queue, are a regime of their own: when the curve rises from
C + P on, the optimum is C + P ("persist-bound"). When the bottom is at an end of the grid or
the fit is not convex, the best grid point stands.

Example:
    >>> from spotsafe.simulate.model import Job
    >>> from spotsafe.simulate.processes import Poisson
    >>> job = Job(work_s=200 * 3600.0, checkpoint_s=60.0)
    >>> grid = default_grid(job, Poisson(6 * 3600.0), points=9)
    >>> best = optimum(job, sweep(job, Poisson(6 * 3600.0), grid, trials=300, seed=1))
    >>> 0.9 < best.work_s / 1610 < 1.1  # Daly: 1610 s of work between saves
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spotsafe.errors import ConfigError
from spotsafe.policy.interval import daly_interval_s
from spotsafe.simulate.engine import Outcome, Progress, run_many
from spotsafe.simulate.model import Job
from spotsafe.simulate.processes import Process

__all__ = ["FIT_BAND", "Optimum", "default_grid", "optimum", "sweep"]

FIT_BAND = 1.3  # fit the points whose waste is within 30 % of the least (τ within ~2x)
SPAN = 4.0  # the default grid reaches from theory / SPAN to theory * SPAN


@dataclass(frozen=True, slots=True, kw_only=True)
class Optimum:
    """The interval a sweep found best.

    Example:
        >>> Optimum(interval_s=70.0, work_s=60.0, method="grid").method
        'grid'
    """

    interval_s: float
    """Seconds between save starts."""
    work_s: float
    """τ: seconds of training between saves (Daly's τ)."""
    method: str
    """"fit" (minimum of the cubic in log τ), "grid" (best grid point) or "persist-bound"
    (C + P: saving more often would queue behind the persist)."""


def default_grid(job: Job, process: Process, *, points: int = 25) -> list[float]:
    """Intervals from a quarter to four times the theoretical optimum, evenly in log, within
    what the job allows (above C and the persist time P, below the whole job).

    Example:
        >>> from spotsafe.simulate.processes import Poisson
        >>> g = default_grid(Job(work_s=1e6, checkpoint_s=2.0), Poisson(3600.0), points=3)
        >>> [round(x) for x in g]
        [30, 121, 483]
    """
    c, p = job.checkpoint_s, job.persist_s
    m = process.mean_window_s
    theory = max(c + p, daly_interval_s(c, m) + c if c > 0 else math.sqrt(m))
    low = max(theory / SPAN, p, c + max(job.step_s, 1e-3 * theory, 1e-6))
    high = min(theory * SPAN, job.work_s + c)
    if high <= low:
        return [high]
    return [float(x) for x in np.geomspace(low, high, max(points, 2))]


def sweep(
    job: Job,
    process: Process,
    intervals: list[float],
    *,
    trials: int,
    seed: int,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Run every interval on the same interruptions (`run_many`: each block of trials is
    drawn once and every interval runs on it).

    Raises:
        ConfigError: an interval the job cannot use, naming it (before any runs).
    """
    return run_many(job, process, intervals, trials=trials, seed=seed, progress=progress)


def optimum(job: Job, outcomes: list[Outcome]) -> Optimum:
    """The best interval of a sweep: the vertex of a parabola in log τ through the bottom of
    the curve, else the best grid point (see the module docstring).

    Raises:
        ConfigError: no interval finished every trial.
    """
    rows = [
        (o.schedule.interval_s, o.schedule.work_s, float(o.makespan_s.mean()))
        for o in outcomes
        if o.unfinished == 0
    ]
    if not rows:
        raise ConfigError(
            "no interval of the sweep finished every trial within 50x the job's work: "
            "interruptions come too often for its save, restart and restore times"
        )
    rows.sort()
    # Below C + P saves queue behind the previous persist: a regime of its own, with a kink
    # at C + P that no smooth fit may straddle. When the best point that does not queue is
    # the first one (or a queueing point is best), the optimum is the persist bound itself.
    bound = job.checkpoint_s + job.persist_s
    all_means = np.array([r[2] for r in rows])
    free = [r for r in rows if r[0] >= bound]
    if job.persist_s > 0 and (not free or all_means.argmin() < len(rows) - len(free)):
        i = int(all_means.argmin())
        return Optimum(interval_s=rows[i][0], work_s=rows[i][1], method="grid")
    queued = len(rows) - len(free)
    if job.persist_s > 0 and queued and int(np.argmin([r[2] for r in free])) == 0:
        # Only when the grid straddles the bound: a grid that starts above it says nothing
        # about the curve between the bound and its first point.
        return Optimum(interval_s=bound, work_s=job.persist_s, method="persist-bound")
    rows = free if job.persist_s > 0 else rows
    means = np.array([r[2] for r in rows])
    best = int(np.argmin(means))
    grid = Optimum(interval_s=rows[best][0], work_s=rows[best][1], method="grid")
    waste = means - job.work_s
    if best in (0, len(rows) - 1) or waste[best] <= 0:
        return grid
    near = np.flatnonzero(waste <= FIT_BAND * waste[best])
    # The band must be one run of points around the best, with some on both sides.
    lo, hi = best, best
    while lo - 1 in near:
        lo -= 1
    while hi + 1 in near:
        hi += 1
    if hi - lo + 1 < 5:
        lo, hi = max(0, best - 2), min(len(rows) - 1, best + 2)
    if lo == best or hi == best:
        return grid
    u = np.log([r[1] for r in rows[lo : hi + 1]])
    # A cubic follows the curve's skew (waste grows faster towards long intervals as M gets
    # close to τ) where a parabola's vertex would lean towards short ones; on Daly's own
    # curve it puts the vertex within 0.6 % of the exact minimum for the paper's cases.
    coeffs = np.polyfit(u, means[lo : hi + 1], 3 if len(u) >= 5 else 2)
    slope, bend = np.polyder(coeffs), np.polyder(coeffs, 2)
    roots = [float(r.real) for r in np.roots(slope) if abs(r.imag) < 1e-12]
    minima = [r for r in roots if np.polyval(bend, r) > 0 and u[0] <= r <= u[-1]]
    if not minima:
        return grid
    vertex = min(minima, key=lambda r: float(np.polyval(coeffs, r)))
    tau = float(math.exp(vertex))
    return Optimum(interval_s=tau + job.checkpoint_s, work_s=tau, method="fit")
