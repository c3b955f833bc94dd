"""Policies side by side on the same interruptions (``spotsafe simulate --compare``).

The same job, saving at the same interval, run four ways; every trial sees the same
interruption draws under each (common random numbers), so the differences are the policies':

* ``spot``: spot capacity only, restarting after every interruption.
* ``on_demand``: on-demand capacity only: never interrupted, at the on-demand price.
* ``fallback``: spot until the N-th interruption, then on-demand for the rest of the job (the
  pool's ``on_demand_after``, which the supervisor applies).
* ``deadline``: deadline-aware. The slack is the time to the deadline less what on-demand
  capacity would need to finish from here (a restart, a restore, the work left and its saves).
  At the start and at each interruption (where the supervisor decides how to restart) the run
  stays on spot while the slack covers the most one more interruption can lose (a restart, a
  restore, a cycle between saves and a persist), and moves to on-demand for the rest of the job
  when it does not. Waiting for spot capacity (a trace's unavailable spells) spends slack too:
  the run stops waiting and takes on-demand capacity once the slack is gone. So a run that
  could meet the deadline on on-demand capacity at the start does not miss it. It needs a
  deadline (``--deadline-h``, or the pool's ``deadline_h``).

  *Can't Be Late* (Wu et al., NSDI '24) compares such a rule with "uniform progress", which
  spends the slack evenly over time and goes back to spot once ahead again. A supervisor
  decides only at a restart, and an on-demand attempt runs to the end, so only one-way rules
  fit; uniform progress made one-way moves to on-demand at the first early interruption
  (when any loss is "behind" the line) and so costs far more for no fewer misses.

For each: makespan, cost, hours on on-demand capacity and, with a deadline, the share of runs
that miss it. The best is the cheapest policy whose miss rate is within `MISS_SLACK` of the
lowest; none without prices.

Example:
    >>> from spotsafe.simulate.processes import Poisson
    >>> job = Job(work_s=20 * 3600.0, checkpoint_s=30.0, restart_s=300.0)
    >>> c = compare(job, Poisson(2 * 3600.0), 900.0, trials=200, seed=0, deadline_s=24 * 3600.0,
    ...             on_demand_after=3, spot_per_hour=1.0, on_demand_per_hour=3.0)
    >>> list(c.results), c.results["on_demand"].misses, c.results["spot"].misses > 0
    (['spot', 'on_demand', 'fallback', 'deadline'], 0.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spotsafe.errors import ConfigError
from spotsafe.policy.pools import Pool
from spotsafe.simulate.engine import WASTE_KINDS, Outcome, Switch, finish_s, run_trials
from spotsafe.simulate.model import Job, schedule
from spotsafe.simulate.processes import Process
from spotsafe.simulate.summary import Summary, summarise

__all__ = [
    "DEFAULT_ON_DEMAND_AFTER",
    "MISS_SLACK",
    "Comparison",
    "PolicyResult",
    "compare",
    "compare_pool",
]

H = 3600.0
MISS_SLACK = 0.01  # a policy missing the deadline in 1 point more of runs than the best is as safe
DEFAULT_ON_DEMAND_AFTER = 2  # the fallback compared when the pool sets none: the critical preset's

LABELS = {
    "spot": "spot only",
    "on_demand": "on-demand only",
    "fallback": "fallback after {n}",
    "deadline": "deadline-aware",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyResult:
    """One policy's numbers.

    Example:
        >>> PolicyResult.__dataclass_fields__["misses"].type
        'float | None'
    """

    summary: Summary
    """Makespan, goodput, waste and cost (its ``cost["total"]`` counts spot and on-demand)."""
    on_demand_h: float
    """Mean hours on on-demand capacity per run."""
    misses: float | None
    """Share of runs that end after the deadline (unfinished ones included); None: no deadline."""

    def to_json(self) -> dict[str, Any]:
        """The summary's keys, and ``on_demand_h`` and ``deadline_misses``."""
        return {**self.summary.to_json(), "on_demand_h": self.on_demand_h,
                "deadline_misses": self.misses}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """The policies compared, in the order of `LABELS`, and the best one.

    Example:
        >>> Comparison.__dataclass_fields__["best"].type
        'str | None'
    """

    interval_s: float
    """Seconds between save starts, the same for every policy."""
    deadline_s: float | None
    """The deadline, in seconds from the start; None: none given."""
    on_demand_after: int
    """Interruptions after which ``fallback`` moves to on-demand."""
    results: dict[str, PolicyResult]
    """By policy name: spot, on_demand, fallback, and deadline when a deadline is given."""
    best: str | None
    """The cheapest policy within `MISS_SLACK` of the fewest misses; None without prices."""

    def to_json(self) -> dict[str, Any]:
        """The ``compare`` object of ``spotsafe simulate --compare --json``."""
        return {
            "interval_s": self.interval_s,
            "deadline_h": None if self.deadline_s is None else self.deadline_s / H,
            "on_demand_after": self.on_demand_after,
            "policies": {name: r.to_json() for name, r in self.results.items()},
            "best": self.best,
        }

    def label(self, name: str) -> str:
        """The policy's name in words."""
        return LABELS[name].format(n=self.on_demand_after)


def _on_demand_only(job: Job, interval_s: float, trials: int) -> Outcome:
    """The job on capacity that is never interrupted: the same every trial."""
    sched = schedule(job, interval_s)
    makespan = float(finish_s(job, sched, job.work_s))
    waste = {kind: np.zeros(trials) for kind in WASTE_KINDS}
    waste["checkpoint"] = np.full(trials, makespan - job.work_s)
    return Outcome(
        schedule=sched,
        makespan_s=np.full(trials, makespan),
        waste_s=waste,
        interruptions=np.zeros(trials, dtype=np.int64),
        unfinished=0,
        on_demand_s=np.full(trials, makespan),
    )


def compare(
    job: Job,
    process: Process,
    interval_s: float,
    *,
    trials: int,
    seed: int,
    deadline_s: float | None = None,
    on_demand_after: int | None = None,
    spot_per_hour: float | None = None,
    on_demand_per_hour: float | None = None,
    instances: int = 1,
) -> Comparison:
    """Run `job` under each policy on the same interruptions (see the module docstring).

    Args:
        job, process, interval_s, trials, seed: as for `run_trials`.
        deadline_s: seconds from the start by which the job must finish; None: no deadline
            (the deadline-aware policy is left out and misses are not counted).
        on_demand_after: interruptions before the fallback (None: `DEFAULT_ON_DEMAND_AFTER`;
            0 is on-demand from the start).
        spot_per_hour, on_demand_per_hour, instances: prices, for the cost.

    Raises:
        ConfigError: an interval the job cannot use; a deadline that is not a positive number.
    """
    if deadline_s is not None and not (np.isfinite(deadline_s) and deadline_s > 0):
        raise ConfigError(f"deadline_h = {deadline_s / H!r}: must be a finite number of hours > 0")
    after = DEFAULT_ON_DEMAND_AFTER if on_demand_after is None else on_demand_after
    on_demand = _on_demand_only(job, interval_s, trials)

    def spot(switch: Switch | None) -> Outcome:
        return run_trials(job, process, interval_s, trials=trials, seed=seed, switch=switch)

    outcomes = {
        "spot": spot(None),
        "on_demand": on_demand,
        "fallback": spot(Switch(after_interruptions=after)) if after > 0 else on_demand,
    }
    if deadline_s is not None:
        rule = Switch(deadline_s=deadline_s)
        start = rule.from_the_start(job, on_demand.schedule)
        outcomes["deadline"] = on_demand if start else spot(rule)
    results = {}
    for name, o in outcomes.items():
        s = summarise(job, o, spot_per_hour=spot_per_hour,
                      on_demand_per_hour=on_demand_per_hour, instances=instances)  # fmt: skip
        finished = np.isfinite(o.makespan_s)
        misses = None
        if deadline_s is not None:
            misses = float(np.mean(~(o.makespan_s <= deadline_s)))
        results[name] = PolicyResult(
            summary=s, on_demand_h=float(o.on_demand_s[finished].mean()) / H, misses=misses
        )
    return Comparison(
        interval_s=interval_s,
        deadline_s=deadline_s,
        on_demand_after=after,
        results=results,
        best=_best(results),
    )


def compare_pool(
    job: Job,
    process: Process,
    interval_s: float,
    pool: Pool,
    *,
    trials: int,
    seed: int,
    deadline_h: float | None = None,
    on_demand_after: int | None = None,
    spot_per_hour: float | None = None,
    on_demand_per_hour: float | None = None,
    instances: int | None = None,
) -> Comparison:
    """`compare` with the pool's settings wherever the caller gives none: its ``deadline_h``,
    ``on_demand_after``, prices and instances.

    Example:
        >>> from spotsafe.simulate.processes import Poisson
        >>> job = Job(work_s=36000.0, checkpoint_s=30.0, restart_s=120.0)
        >>> c = compare_pool(job, Poisson(7200.0), 900.0, Pool(deadline_h=12, on_demand_after=1),
        ...                  trials=50, seed=0)
        >>> c.deadline_s, c.on_demand_after, sorted(c.results)
        (43200.0, 1, ['deadline', 'fallback', 'on_demand', 'spot'])
    """
    deadline = deadline_h if deadline_h is not None else pool.deadline_h
    return compare(
        job,
        process,
        interval_s,
        trials=trials,
        seed=seed,
        deadline_s=None if deadline is None else deadline * H,
        on_demand_after=on_demand_after if on_demand_after is not None else pool.on_demand_after,
        spot_per_hour=spot_per_hour if spot_per_hour is not None else pool.spot_price_per_hour,
        on_demand_per_hour=(
            on_demand_per_hour if on_demand_per_hour is not None
            else pool.on_demand_price_per_hour
        ),
        instances=instances if instances is not None else pool.instances,
    )  # fmt: skip


def _best(results: dict[str, PolicyResult]) -> str | None:
    costs = {n: r.summary.cost["total"] for n, r in results.items()}
    if any(c is None for c in costs.values()):
        return None
    fewest = min((r.misses for r in results.values() if r.misses is not None), default=None)
    safe = [
        n
        for n, r in results.items()
        if fewest is None or (r.misses is not None and r.misses <= fewest + MISS_SLACK)
    ]
    return min(safe, key=lambda n: (costs[n] or 0.0, results[n].summary.makespan_h["mean"]))
