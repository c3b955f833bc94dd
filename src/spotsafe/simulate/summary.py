"""From per-trial outcomes to the numbers a report shows: makespan, goodput, waste, cost.

Cost counts the hours the job holds capacity (its makespan less any wait for capacity), times
the instances of an attempt, times the price: the spot price, and the on-demand price for the
hours after a switch to on-demand capacity (`engine.Switch`). The on-demand equivalent is the
same job, saving at the same interval, never interrupted, at the on-demand price.

Example:
    >>> from spotsafe.simulate.engine import run_trials
    >>> from spotsafe.simulate.model import Job
    >>> from spotsafe.simulate.processes import Poisson
    >>> job = Job(work_s=7200.0, checkpoint_s=10.0)
    >>> s = summarise(job, run_trials(job, Poisson(1e12), 610.0, trials=4, seed=0),
    ...               spot_per_hour=1.0, on_demand_per_hour=3.0)
    >>> [round(v, 3) for v in (s.makespan_h["mean"], s.cost["total"], s.cost["saved"])]
    [2.033, 2.033, 4.067]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spotsafe.errors import ConfigError
from spotsafe.simulate.engine import WASTE_KINDS, Outcome, finish_s
from spotsafe.simulate.model import Job

__all__ = ["Summary", "summarise"]

H = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """The report of one interval: hours, shares and money, means over the trials.

    Example:
        >>> Summary(interval_s=60.0, work_between_saves_s=50.0, trials=1, unfinished=0,
        ...         makespan_h={"mean": 2.0}, goodput=0.5, waste_h={}, interruptions=0.0,
        ...         cost={"total": None}).to_json()["interval_s"]
        60.0
    """

    interval_s: float
    """Seconds between save starts."""
    work_between_saves_s: float
    """τ: training between saves, in seconds (whole steps)."""
    trials: int
    """Trials simulated."""
    unfinished: int
    """Trials that did not finish within the simulator's limit (excluded from the numbers)."""
    makespan_h: dict[str, float]
    """Hours from start to the durable final save: mean, p50, p95, max."""
    goodput: float
    """Useful work over the mean makespan."""
    waste_h: dict[str, float]
    """Mean hours of each kind of waste."""
    interruptions: float
    """Mean interruptions per trial."""
    cost: dict[str, float | None]
    """total (spot), on_demand_equivalent, saved, per trial on average; None: no price."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this summary (keys documented in `spotsafe.simulate`)."""
        return {
            "interval_s": self.interval_s,
            "work_between_saves_s": self.work_between_saves_s,
            "trials": self.trials,
            "unfinished": self.unfinished,
            "makespan_h": dict(self.makespan_h),
            "goodput": self.goodput,
            "waste_h": dict(self.waste_h),
            "interruptions": self.interruptions,
            "cost": dict(self.cost),
        }


def summarise(
    job: Job,
    outcome: Outcome,
    *,
    spot_per_hour: float | None = None,
    on_demand_per_hour: float | None = None,
    instances: int = 1,
) -> Summary:
    """Summarise `outcome`: means over the finished trials, and the cost at these prices.

    Raises:
        ConfigError: no trial finished.
    """
    ok = np.isfinite(outcome.makespan_s)
    if not ok.any():
        raise ConfigError(
            f"interval_s = {outcome.schedule.interval_s:g}: no trial finished within 50x the "
            f"job's work; interruptions come too often for this schedule, restart and restore"
        )
    makespan = outcome.makespan_s[ok]
    mean = float(makespan.mean())
    switched_h = outcome.on_demand_s[ok] / H if len(outcome.on_demand_s) else np.zeros(0)
    od_h = float(switched_h.mean()) if switched_h.size else 0.0
    spot_h = float(((makespan - outcome.waste_s["capacity_wait"][ok]) / H).mean()) - od_h
    spot = None  # the cost of the run: spot hours, and on-demand hours after a switch
    if (spot_per_hour is not None or spot_h <= 1e-12) and (
        on_demand_per_hour is not None or od_h == 0
    ):
        spot = (spot_h * (spot_per_hour or 0.0) + od_h * (on_demand_per_hour or 0.0)) * instances
    on_demand = None
    if on_demand_per_hour is not None:
        alone = float(finish_s(job, outcome.schedule, job.work_s)) / H
        on_demand = alone * on_demand_per_hour * instances
    saved = None if spot is None or on_demand is None else on_demand - spot
    return Summary(
        interval_s=outcome.schedule.interval_s,
        work_between_saves_s=outcome.schedule.work_s,
        trials=len(outcome.makespan_s),
        unfinished=outcome.unfinished,
        makespan_h={
            "mean": mean / H,
            "p50": float(np.percentile(makespan, 50)) / H,
            "p95": float(np.percentile(makespan, 95)) / H,
            "max": float(makespan.max()) / H,
        },
        goodput=job.work_s / mean,
        waste_h={k: float(outcome.waste_s[k][ok].mean()) / H for k in WASTE_KINDS},
        interruptions=float(outcome.interruptions[ok].mean()),
        cost={"total": spot, "on_demand_equivalent": on_demand, "saved": saved},
    )
