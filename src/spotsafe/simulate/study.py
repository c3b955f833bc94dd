"""One simulation study: a job, a process, a policy, and the report (`spotsafe simulate`).

The policy is an enum of three modes: a fixed interval, the Guard's `Auto` policy (asked as
the Guard asks it, see `policies`), or a sweep that reports the optimum. `Study.to_json` is
the schema documented in `spotsafe.simulate`.

Example:
    >>> from spotsafe.simulate.model import Job
    >>> from spotsafe.simulate.processes import Poisson
    >>> job = Job(work_s=50 * 3600.0, checkpoint_s=30.0, restart_s=120.0)
    >>> s = run_study(job, Poisson(4 * 3600.0), Fixed(interval_s=900.0), trials=200, seed=0)
    >>> s.to_json()["interval_s"], s.to_json()["process"]["mtbi_h"]
    (900.0, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotsafe.policy.interval import Auto, daly_interval_s, young_interval_s
from spotsafe.simulate.engine import Outcome, Progress, run_trials
from spotsafe.simulate.model import Job
from spotsafe.simulate.policies import guard_interval_s
from spotsafe.simulate.processes import Poisson, Process, Trace
from spotsafe.simulate.summary import Summary, summarise
from spotsafe.simulate.sweep import Optimum, default_grid, optimum, sweep
from spotsafe.simulate.theory import async_interval_s, daly_makespan_s

__all__ = ["AutoPolicy", "Fixed", "Study", "Sweep", "run_study"]

H = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixed:
    """Save every `interval_s` seconds.

    Example:
        >>> Fixed(interval_s=60.0).interval_s
        60.0
    """

    interval_s: float
    """Seconds between save starts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoPolicy:
    """The Guard's `Auto` policy, with the process's mean time between interruptions as M.

    Example:
        >>> AutoPolicy(policy=Auto(max_lost_work_s=600), pool="critical").pool
        'critical'
    """

    policy: Auto
    """The policy object the Guard would use (e.g. ``Auto.from_pool(pool)``)."""
    pool: str | None = None
    """The pool it came from, for the report."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """Try `intervals` (default: around theory) and report the best.

    Example:
        >>> Sweep(points=5).points
        5
    """

    intervals: tuple[float, ...] | None = None
    """Seconds between save starts to try; None: `default_grid`."""
    points: int = 25
    """Grid points when `intervals` is None."""


PolicyMode = Fixed | AutoPolicy | Sweep


@dataclass(frozen=True, slots=True, kw_only=True)
class Study:
    """The result of `run_study`.

    Example:
        >>> Study.__dataclass_fields__["best"].type
        'Summary'
    """

    job: Job
    """The job simulated."""
    process: Process
    """The interruption process."""
    mode: PolicyMode
    """The policy mode."""
    trials: int
    """Trials per interval."""
    seed: int
    """The seed."""
    best: Summary
    """The numbers of the interval chosen (fixed, auto, or the sweep's optimum)."""
    grid: list[Summary] = field(default_factory=list)
    """With a sweep: every interval tried, in order."""
    found: Optimum | None = None
    """With a sweep: how the optimum was found."""

    def theory(self) -> dict[str, float | None] | None:
        """Young's, Daly's and the asynchronous optimum, and Daly's makespan at the chosen
        interval; None unless the process is Poisson."""
        if not isinstance(self.process, Poisson):
            return None
        job, m = self.job, self.process.mtbi_s
        c, p = job.checkpoint_s, job.persist_s
        sync = p == 0 and not job.notice_saves
        tau = self.best.work_between_saves_s
        return {
            "young_interval_s": young_interval_s(c, m) + c if c > 0 else None,
            "daly_interval_s": daly_interval_s(c, m) + c if c > 0 else None,
            "async_interval_s": async_interval_s(checkpoint_s=c, persist_s=p, mtbi_s=m),
            "daly_makespan_h": daly_makespan_s(
                work_s=job.work_s, tau_s=tau, delta_s=c, restart_s=job.overhead_s, mtbi_s=m
            )
            / H
            if sync
            else None,
        }

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON object (schema 1, see `spotsafe.simulate`)."""
        job, proc = self.job, self.process
        kind = "poisson"
        if isinstance(proc, Trace):
            kind = "trace"
        elif proc.name != "poisson":
            kind = "band"
        policy: dict[str, Any]
        if isinstance(self.mode, Fixed):
            policy = {"kind": "interval"}
        elif isinstance(self.mode, AutoPolicy):
            a = self.mode.policy
            policy = {
                "kind": "auto",
                "pool": self.mode.pool,
                "max_lost_work_s": a.max_lost_work_s,
                "min_interval_s": a.min_interval_s,
            }
        else:
            policy = {"kind": "sweep", "points": len(self.grid)}
        doc: dict[str, Any] = {
            "schema": 1,
            "trials": self.trials,
            "seed": self.seed,
            "job": {
                "work_h": job.work_s / H,
                "step_s": job.step_s,
                "checkpoint_s": job.checkpoint_s,
                "persist_s": job.persist_s,
                "restore_s": job.restore_s,
                "restart_s": job.restart_s,
                "notice_s": job.notice_s,
                "notice_saves": job.notice_saves,
            },
            "process": {"kind": kind, "name": proc.name, "mtbi_h": proc.mean_window_s / H},
            "policy": policy,
            **self.best.to_json(),
            "theory": self.theory(),
        }
        if isinstance(self.mode, Sweep) and self.found is not None:
            doc["sweep"] = [s.to_json() for s in self.grid]
            doc["optimum"] = {
                "interval_s": self.best.interval_s,
                "work_s": self.found.work_s,
                "method": self.found.method,
                "makespan_h": self.best.makespan_h["mean"],
                "goodput": self.best.goodput,
                "cost_total": self.best.cost["total"],
            }
        return doc


def run_study(
    job: Job,
    process: Process,
    mode: PolicyMode,
    *,
    trials: int,
    seed: int,
    spot_per_hour: float | None = None,
    on_demand_per_hour: float | None = None,
    instances: int = 1,
    progress: Progress | None = None,
) -> Study:
    """Simulate `job` under `process` with the policy `mode`.

    Raises:
        ConfigError: an interval the job cannot use, or a schedule under which no trial
            finishes.
    """

    def summary(o: Outcome) -> Summary:
        return summarise(
            job,
            o,
            spot_per_hour=spot_per_hour,
            on_demand_per_hour=on_demand_per_hour,
            instances=instances,
        )

    if isinstance(mode, Sweep):
        intervals = list(mode.intervals or default_grid(job, process, points=mode.points))
        outcomes = sweep(job, process, intervals, trials=trials, seed=seed, progress=progress)
        grid = [summary(o) for o in outcomes if o.unfinished < trials]
        found = optimum(job, outcomes)
        # The optimum re-run on the same interruptions: its own numbers, not the fit's.
        at = run_trials(job, process, found.interval_s, trials=trials, seed=seed)
        best = summary(at)
        return Study(
            job=job,
            process=process,
            mode=mode,
            trials=trials,
            seed=seed,
            best=best,
            grid=grid,
            found=found,
        )
    if isinstance(mode, Fixed):
        interval = mode.interval_s
    else:
        interval = guard_interval_s(mode.policy, job, mtbi_s=process.mean_window_s)
    out = run_trials(job, process, interval, trials=trials, seed=seed, progress=progress)
    return Study(
        job=job,
        process=process,
        mode=mode,
        trials=trials,
        seed=seed,
        best=summary(out),
    )
