"""Checks on what a job (or a fleet) already did: its interval against the advisor's, its
flushes against its grace, and whether every workload shares one policy.

They read the store through the report's accounting (`spotsafe.report.accounting`), never
write, and compare with the optimum of `spotsafe.simulate.theory` (the interval the
simulator's advisor starts from): max(C + P, √(2·C·M)) for a save blocking C seconds and
persisting P more, under a mean time between interruptions M blended from the pool's prior
and the job's own interruptions (`spotsafe.policy.interval.mtbi_estimate`).

Example:
    >>> round(advised_interval_s(blocking_s=2.0, persist_s=0.0, mtbi_s=3600.0,
    ...                          max_lost_work_s=1800.0), 2)  # Daly's √(2·C·M) + refinements
    120.67
    >>> off_by(1200.0, 120.0)
    10.0
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spotsafe.doctor.findings import INTERVAL, ONE_POLICY, Finding, Severity

if TYPE_CHECKING:
    from spotsafe.policy.pools import Pool
    from spotsafe.report.accounting import JobReport

__all__ = [
    "FAR_FACTOR",
    "IntervalFacts",
    "advised_interval_s",
    "interval",
    "interval_facts",
    "off_by",
    "one_policy",
]

# How far from the optimum an interval may be before it is a finding. The expected waste is
# flat near the optimum (a factor 2 either way costs under 25% more waste than the best), so
# only a factor 3 or more is worth a change.
FAR_FACTOR = 3.0
MIN_SAVES = 3  # fewer saves give no interval to speak of


def advised_interval_s(
    *, blocking_s: float, persist_s: float, mtbi_s: float, max_lost_work_s: float
) -> float:
    """The interval between save starts the advisor would pick, capped so that an unclean
    interruption loses at most ``max_lost_work_s``."""
    from spotsafe.simulate.theory import async_interval_s

    best = async_interval_s(checkpoint_s=blocking_s, persist_s=persist_s, mtbi_s=mtbi_s)
    cap = max_lost_work_s - blocking_s - persist_s
    return min(best, cap) if cap > 0 else best


def off_by(actual_s: float, advised_s: float) -> float:
    """How many times too long (or too short) ``actual_s`` is; 1.0 is spot on."""
    if actual_s <= 0 or advised_s <= 0:
        return float("inf")
    return max(actual_s / advised_s, advised_s / actual_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalFacts:
    """A job's measured interval and the advisor's, with what went into it."""

    job_id: str
    pool: str
    interval_s: float
    advised_s: float
    blocking_s: float
    persist_s: float
    mtbi_s: float
    interruptions: int
    saves: int

    def evidence(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "pool": self.pool,
            "interval_s": round(self.interval_s, 3),
            "advised_interval_s": round(self.advised_s, 3),
            "save_blocking_s_p50": round(self.blocking_s, 3),
            "save_persist_s_p50": round(self.persist_s, 3),
            "mtbi_s": round(self.mtbi_s, 1),
            "interruptions": self.interruptions,
            "saves": self.saves,
        }


def interval_facts(report: JobReport, pools: Mapping[str, Pool]) -> IntervalFacts | None:
    """The measured and advised intervals of one job; None with fewer than 3 saves."""
    from spotsafe.policy.interval import DEFAULT_PRIOR_WEIGHT, mtbi_estimate
    from spotsafe.policy.pools import DEFAULT_POOL

    saves = sorted(report.saves, key=lambda s: (s.attempt, s.t))
    gaps = [b.t - a.t for a, b in itertools.pairwise(saves) if a.attempt == b.attempt]
    if len(saves) < MIN_SAVES or not gaps or report.blocking is None:
        return None
    name = report.pool or DEFAULT_POOL
    pool = pools.get(name) or pools[DEFAULT_POOL]
    blocking = report.blocking.p50
    persist = report.persist.p50 if report.persist is not None else 0.0
    mtbi = mtbi_estimate(
        pool.mtbi_prior_s, DEFAULT_PRIOR_WEIGHT, report.interruptions, report.total_s
    )
    return IntervalFacts(
        job_id=report.job_id,
        pool=name,
        interval_s=statistics.median(gaps),
        advised_s=advised_interval_s(
            blocking_s=blocking,
            persist_s=persist,
            mtbi_s=mtbi,
            max_lost_work_s=pool.max_lost_work_s,
        ),
        blocking_s=blocking,
        persist_s=persist,
        mtbi_s=mtbi,
        interruptions=report.interruptions,
        saves=len(saves),
    )


def interval(facts: IntervalFacts) -> Finding | None:
    """Whether a job saves far more or far less often than its costs and history call for."""
    factor = off_by(facts.interval_s, facts.advised_s)
    if factor < FAR_FACTOR:
        return None
    often = "often" if facts.interval_s < facts.advised_s else "rarely"
    return Finding(
        id=INTERVAL,
        severity=Severity.WARNING,
        what=f"job {facts.job_id} saves every {facts.interval_s:.0f} s; for its save cost and "
        f"interruption rate about every {facts.advised_s:.0f} s is best ({factor:.1f}x too "
        f"{often})",
        evidence={**facts.evidence(), "factor": round(factor, 2)},
        fix="let the Guard choose the interval (drop every_steps= / every_s=), or use "
        f"every_s={facts.advised_s:.0f}; `spotsafe advise` shows the trade-off",
    )


def one_policy(reports: Sequence[JobReport], pools: Mapping[str, Pool]) -> Finding | None:
    """Whether a fleet runs every workload under one pool, or with intervals that
    contradict the jobs' own interruption history."""
    from spotsafe.policy.pools import DEFAULT_POOL

    if len(reports) < 2:
        return None
    names = sorted({r.pool or DEFAULT_POOL for r in reports})
    off = []
    for r in reports:
        facts = interval_facts(r, pools)
        if facts is not None and off_by(facts.interval_s, facts.advised_s) >= FAR_FACTOR:
            off.append(facts.evidence())
    if len(names) > 1 and not off:
        return None
    parts = []
    if len(names) == 1:
        parts.append(f"all {len(reports)} jobs run under pool {names[0]!r}")
    if off:
        parts.append(f"{len(off)} job(s) save far from the interval their history calls for")
    return Finding(
        id=ONE_POLICY,
        severity=Severity.WARNING,
        what="; ".join(parts),
        evidence={"jobs": len(reports), "pools": names, "intervals_off": off},
        fix="give each class of workload its pool ([pools.NAME] in spotsafe.toml: critical "
        "retraining, experiments, long runs) and let the Guard pick intervals from history",
    )
