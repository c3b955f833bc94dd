"""Predict the makespan, waste and cost of a checkpoint policy under interruptions.

A vectorised Monte Carlo (`engine`) of one job (`model.Job`) saving on a schedule, under a
Poisson process, an AWS Spot Advisor band or a recorded trace (`processes`); the Guard's own
interval policies give the schedule (`policies`); `sweep` finds the best interval;
`compare` runs capacity policies (spot, on-demand, fallback, deadline-aware) side by side;
`theory` holds Daly's makespan, against which the tests check the simulator.

``spotsafe simulate --json`` prints one object (schema 1). Keys are stable; hours are ``_h``,
seconds ``_s``; null where unknown::

    schema                1
    trials, seed          the trials run and the seed (same seed, same numbers)
    job                   work_h, step_s, checkpoint_s, persist_s, restore_s, restart_s,
                          notice_s, notice_saves (whether the notice saves the work)
    process               kind (poisson | band | trace), name, mtbi_h (mean capacity between
                          interruptions)
    policy                kind (interval | auto | sweep); for auto, the pool it came from
    interval_s            seconds between save starts that the numbers below are for
    work_between_saves_s  τ: training between saves (whole steps)
    makespan_h            mean, p50, p95, max: start to durable final save, in hours
    goodput               useful work / mean makespan
    waste_h               mean hours of: checkpoint, replayed, restore, restart, notice,
                          capacity_wait (they add up to makespan − work)
    interruptions         mean interruptions per trial
    unfinished            trials that did not finish within 50x the work (left out)
    cost                  total (spot, per run), on_demand_equivalent, saved; null: no price
    theory                young_interval_s, daly_interval_s, async_interval_s (Poisson only),
                          daly_makespan_h (at this interval, for synchronous saves)
    sweep                 with --sweep: one object per interval (interval_s, makespan_h, ...)
    optimum               with --sweep: interval_s, work_s, method (fit | grid |
                          persist-bound), makespan_h, goodput, cost_total
    compare               with --compare: interval_s, deadline_h (null: none),
                          on_demand_after, best (the cheapest policy within 1 point of the
                          fewest deadline misses; null without prices), and policies: spot,
                          on_demand, fallback and (with a deadline) deadline, each with the
                          keys of the top level from interval_s to cost (cost.total counts
                          spot and on-demand hours), on_demand_h and deadline_misses (share
                          of runs finishing after the deadline; null: no deadline)

With ``--sweep`` the top-level numbers are those of the optimum interval.

Example:
    >>> job = Job(work_s=100 * 3600.0, checkpoint_s=60.0, restart_s=300.0)
    >>> s = summarise(job, run_trials(job, Poisson(4 * 3600.0), 1380.0, trials=500, seed=0))
    >>> 0.85 < s.goodput < 0.95
    True
"""

from spotsafe.simulate.engine import WASTE_KINDS, Outcome, Switch, run_many, run_trials
from spotsafe.simulate.model import Job, Schedule, schedule
from spotsafe.simulate.policies import guard_interval_s
from spotsafe.simulate.processes import BANDS, Poisson, Process, Trace, band_process, read_trace
from spotsafe.simulate.summary import Summary, summarise
from spotsafe.simulate.sweep import Optimum, default_grid, optimum, sweep
from spotsafe.simulate.theory import async_interval_s, daly_makespan_s

__all__ = [
    "BANDS",
    "WASTE_KINDS",
    "Job",
    "Optimum",
    "Outcome",
    "Poisson",
    "Process",
    "Schedule",
    "Summary",
    "Switch",
    "Trace",
    "async_interval_s",
    "band_process",
    "daly_makespan_s",
    "default_grid",
    "guard_interval_s",
    "optimum",
    "read_trace",
    "run_many",
    "run_trials",
    "schedule",
    "summarise",
    "sweep",
]
