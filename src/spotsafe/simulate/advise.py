"""Advice from a real job: its measured costs and interruptions, simulated, and better settings.

The job's numbers come from the wasted-work report's accounting (`spotsafe.report`, schema
1), never re-derived here: the blocking and persist times of its saves (medians), its restore
time, its restart time (backoff plus start-up, the median per interruption), its useful
work, and its interruptions over the time it held capacity. The mean time between
interruptions is the Guard's own estimate (`policy.interval.mtbi_estimate`): the pool's prior,
worth two interruptions, updated by what the job saw.

The advisor then simulates what the job does now (the median time between its save starts
within an attempt, else its pool's Auto policy), sweeps intervals for the best, and runs every
pool's Auto policy on the same interruptions. It recommends the interval, the
``max_lost_work_s`` that lets the Guard save that rarely (interval + C + P: the worst loss of
an interruption just before a save is durable), and the pool whose policy finishes soonest
(cheapest, when prices are known).

For a fleet (`advise_fleet`), every job that `spotsafe.report.fleet.account_fleet` accounted
is advised in turn from its own report; a job the report could not read, or one that has not
trained yet, is listed with the reason instead.

Example:
    >>> job = {"goodput": {"useful_s": 36000.0, "total_s": 40000.0},
    ...        "checkpoint": {"blocking_s": {"p50": 20.0}, "persist_s": {"p50": 40.0},
    ...                       "restore_s": {"p50": 30.0}},
    ...        "retry": {"seconds_total": 600.0, "per_interruption": [
    ...            {"seconds": 330.0, "restore_s": 30.0}, {"seconds": 290.0, "restore_s": 30.0}]},
    ...        "interruptions": {"total": 2}, "replayed": {"per_interruption": []}, "pool": None}
    >>> m = measure(job)
    >>> m.job.checkpoint_s, m.job.restart_s, round(m.mtbi_s / 3600, 2)
    (20.0, 280.0, 4.74)
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spotsafe.errors import ConfigError
from spotsafe.policy.interval import DEFAULT_PRIOR_WEIGHT, Auto, mtbi_estimate
from spotsafe.policy.pools import DEFAULT_POOL, Pool, get_pool
from spotsafe.simulate.model import Job
from spotsafe.simulate.policies import guard_interval_s
from spotsafe.simulate.processes import Poisson
from spotsafe.simulate.study import Fixed, Sweep, run_study
from spotsafe.simulate.summary import Summary

if TYPE_CHECKING:
    from spotsafe.report.fleet import FleetReport

__all__ = ["Advice", "FleetAdvice", "Measured", "advise", "advise_fleet", "measure"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """What a job's report says about it, as the simulator's inputs.

    Example:
        >>> Measured(job=Job(work_s=1.0), mtbi_s=3600.0, interruptions=0, held_s=0.0,
        ...          interval_now_s=None, pool=None).pool is None
        True
    """

    job: Job
    """The job: useful work and measured costs."""
    mtbi_s: float
    """Mean time between interruptions: the pool's prior updated by the observations."""
    interruptions: int
    """Interruptions the job saw."""
    held_s: float
    """Seconds the job held capacity (its wall time less the time between attempts)."""
    interval_now_s: float | None
    """Median seconds between save starts within an attempt; None: fewer than two saves."""
    pool: str | None
    """The pool the job ran in."""


def _p50(section: Mapping[str, Any] | None, key: str) -> float:
    dist = (section or {}).get(key)
    value = dist.get("p50") if isinstance(dist, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else 0.0


def measure(report: Mapping[str, Any], *, prior: Pool | None = None) -> Measured:
    """Read the simulator's inputs from a job report (`JobReport.to_json()`, schema 1).

    Raises:
        ConfigError: a job that has done no useful work yet (nothing to size a simulation by).
    """
    pool = prior or Pool()
    goodput = report.get("goodput") or {}
    useful = float(goodput.get("useful_s") or 0.0)
    if useful <= 0:
        raise ConfigError(
            f"job {report.get('job_id')!r}: no useful work recorded yet; advise needs a job "
            "that has trained (run it under `spotsafe run` first)"
        )
    ckpt = report.get("checkpoint") or {}
    retry = report.get("retry") or {}
    restarts = [
        max(float(r.get("seconds") or 0.0) - float(r.get("restore_s") or 0.0), 0.0)
        for r in retry.get("per_interruption") or []
    ]
    replays = [r for r in (report.get("replayed") or {}).get("per_interruption") or []]
    steps = [r["seconds"] / r["steps"] for r in replays if r.get("steps") and r.get("seconds")]
    step_s = statistics.median(steps) if steps else 0.0
    interruptions = int((report.get("interruptions") or {}).get("total") or 0)
    held = max(float(goodput.get("total_s") or 0.0) - float(retry.get("seconds_total") or 0.0), 0.0)
    mtbi = mtbi_estimate(pool.mtbi_prior_s, DEFAULT_PRIOR_WEIGHT, interruptions, held)
    gaps: list[float] = []
    saves = sorted(report.get("saves") or [], key=lambda s: (s["attempt"], s["t"]))
    for a, b in itertools.pairwise(saves):
        if a["attempt"] == b["attempt"] and b["t"] > a["t"]:
            gaps.append(float(b["t"] - a["t"]))
    job = Job(
        work_s=useful,
        step_s=min(step_s, useful),
        checkpoint_s=_p50(ckpt, "blocking_s"),
        persist_s=_p50(ckpt, "persist_s"),
        restore_s=_p50(ckpt, "restore_s"),
        restart_s=statistics.median(restarts) if restarts else 0.0,
    )
    return Measured(
        job=job,
        mtbi_s=mtbi,
        interruptions=interruptions,
        held_s=held,
        interval_now_s=statistics.median(gaps) if gaps else None,
        pool=report.get("pool"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Advice:
    """The recommendation, and the numbers behind it.

    Example:
        >>> Advice.__dataclass_fields__["max_lost_work_s"].type
        'float'
    """

    measured: Measured
    """The inputs, from the job's report."""
    now: Summary
    """What the job's current interval gives."""
    now_source: str
    """"observed" (the job's own saves) or "pool auto" (its pool's policy)."""
    best: Summary
    """What the recommended interval gives."""
    max_lost_work_s: float
    """The lost-work budget that lets the Guard save at the recommended interval."""
    pools: dict[str, Summary]
    """Each pool's Auto policy on the same interruptions."""
    pool: str
    """The recommended pool."""

    def to_json(self) -> dict[str, Any]:
        """One JSON object: inputs, now, recommended, and every pool."""
        m, job = self.measured, self.measured.job
        return {
            "schema": 1,
            "measured": {
                "work_h": job.work_s / 3600,
                "step_s": job.step_s,
                "checkpoint_s": job.checkpoint_s,
                "persist_s": job.persist_s,
                "restore_s": job.restore_s,
                "restart_s": job.restart_s,
                "interruptions": m.interruptions,
                "held_h": m.held_s / 3600,
                "mtbi_h": m.mtbi_s / 3600,
                "pool": m.pool,
            },
            "now": {"source": self.now_source, **self.now.to_json()},
            "recommended": {
                "interval_s": self.best.interval_s,
                "max_lost_work_s": self.max_lost_work_s,
                "pool": self.pool,
                **{k: v for k, v in self.best.to_json().items() if k != "interval_s"},
            },
            "pools": {name: s.to_json() for name, s in self.pools.items()},
        }


def advise(
    report: Mapping[str, Any],
    pools: Mapping[str, Pool],
    *,
    trials: int = 1000,
    seed: int = 0,
) -> Advice:
    """Simulate the job of `report` and recommend an interval, a lost-work budget and a pool.

    Args:
        report: the job report's JSON (schema 1).
        pools: the pools to compare (presets and the config file's).
        trials: trials per simulated interval.
        seed: the seed; every policy sees the same interruptions.
    """
    name = report.get("pool") or DEFAULT_POOL
    current = get_pool(name, pools) if name in pools else Pool()
    measured = measure(report, prior=current)
    job, process = measured.job, Poisson(measured.mtbi_s)
    spot = current.spot_price_per_hour
    od = current.on_demand_price_per_hour

    def run(interval_s: float) -> Summary:
        return run_study(
            job, process, Fixed(interval_s=interval_s), trials=trials, seed=seed,
            spot_per_hour=spot, on_demand_per_hour=od, instances=current.instances,
        ).best  # fmt: skip

    def policy_interval(pool: Pool) -> float:
        interval = guard_interval_s(Auto.from_pool(pool), job, mtbi_s=measured.mtbi_s)
        return min(interval, job.work_s + job.checkpoint_s)

    if measured.interval_now_s is not None and measured.interval_now_s > job.checkpoint_s:
        now_interval = min(max(measured.interval_now_s, job.persist_s), job.work_s)
        source = "observed"
    else:
        now_interval, source = policy_interval(current), "pool auto"
    now = run(now_interval)
    swept = run_study(
        job, process, Sweep(points=15), trials=trials, seed=seed,
        spot_per_hour=spot, on_demand_per_hour=od, instances=current.instances,
    ).best  # fmt: skip
    by_pool = {n: run(policy_interval(p)) for n, p in sorted(pools.items())}

    def rank(s: Summary) -> tuple[float, float]:
        cost = s.cost["total"]
        return (cost if cost is not None else 0.0, s.makespan_h["mean"])

    best_pool = min(by_pool, key=lambda n: rank(by_pool[n]))
    if swept.makespan_h["mean"] >= now.makespan_h["mean"]:
        swept = now  # the sweep found nothing better (a short job, a flat curve): keep it
    budget = swept.interval_s + job.checkpoint_s + job.persist_s
    return Advice(
        measured=measured,
        now=now,
        now_source=source,
        best=swept,
        max_lost_work_s=float(max(round(budget), 1)),
        pools=by_pool,
        pool=best_pool,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetAdvice:
    """Advice for every job under a prefix.

    Example:
        >>> FleetAdvice(prefix="runs/", jobs=(), skipped=()).to_json()
        {'schema': 1, 'prefix': 'runs/', 'jobs': [], 'skipped': []}
    """

    prefix: str
    """The prefix searched (credentials redacted)."""
    jobs: tuple[tuple[str, str, Advice], ...]
    """(job id, store, advice) of every job advised, in the fleet report's order."""
    skipped: tuple[tuple[str, str], ...]
    """(job id or store, why) of every job that could not be advised."""

    def to_json(self) -> dict[str, Any]:
        """Schema 1: each job's advice (as `Advice.to_json`, with its job id and store)."""
        return {
            "schema": 1,
            "prefix": self.prefix,
            "jobs": [{"job_id": j, "store": st, **a.to_json()} for j, st, a in self.jobs],
            "skipped": [{"job": j, "reason": why} for j, why in self.skipped],
        }


def advise_fleet(
    fleet: FleetReport,
    pools: Mapping[str, Pool],
    *,
    trials: int = 1000,
    seed: int = 0,
) -> FleetAdvice:
    """`advise` every job of a fleet report (`spotsafe.report.fleet.account_fleet`), each from
    its own job report; the accounting is the report's, never re-derived here.

    Args:
        fleet: the fleet's report.
        pools: the pools to compare.
        trials: trials per simulated interval, per job.
        seed: the seed.
    """
    from spotsafe.redact import redact_url

    done: list[tuple[str, str, Advice]] = []
    skipped = [(store, why) for store, why in fleet.errors]
    for job in fleet.jobs:
        store = redact_url(job.store)
        try:
            advice = advise(job.to_json(), pools, trials=trials, seed=seed)
        except ConfigError as e:
            skipped.append((job.job_id, str(e)))
            continue
        done.append((job.job_id, store, advice))
    return FleetAdvice(prefix=fleet.prefix, jobs=tuple(done), skipped=tuple(skipped))
