"""Job records and event logs written directly, on a script whose arithmetic is known.

The writers are spotsafe's own (JobRecord, EventLog, record_clean_stop) with an injected
wall clock, so the store holds exactly what a supervisor and a Guard would have written at
those times. Steps take `STEP_S`; an interval save blocks `BLOCK_S` (persists `PERSIST_S`);
the flush of a clean stop blocks `STOP_FLUSH_S`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spotsafe.events import EventLog
from spotsafe.jobrecord import record_clean_stop
from spotsafe.policy import AttemptRecord, ExitClass
from spotsafe.storage import Store
from spotsafe.supervisor.job import AttemptStart, JobRecord

STEP_S = 1.0
EVERY = 10
BLOCK_S = 0.5
PERSIST_S = 2.0
STOP_FLUSH_S = 1.0


@dataclass
class Clock:
    t: float = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One attempt of the script."""

    n: int
    start: float
    boot_s: float  # process start to entering the Guard (the restore happens in it)
    restored: int | None
    restore_s: float | None
    last: int  # the furthest step it reaches
    how: str  # "stop:<source>" (clean stop at `last`), "kill", "success", "crash", "cutoff"
    tail_s: float  # from the last step (or the stop flush) to the process's end
    end_step: int | None
    flushed_to: int | None = None  # the last step whose events reached the store
    progress: bool = False  # the end object carries the supervisor's progress record
    skipped: tuple[str, ...] = ()  # corrupt checkpoints its restore fell back past
    capacity: str = "spot"


def info(*, spot: float | None, on_demand: float | None, instances: int, capacity: str,
         pool: str = "standard") -> dict[str, Any]:  # fmt: skip
    """An attempt's start `info` as the supervisor writes it (prices from the pool)."""
    return {"pool": pool, "capacity": capacity,
            "price_per_hour": on_demand if capacity == "on_demand" else spot,
            "spot_price_per_hour": spot, "on_demand_price_per_hour": on_demand,
            "instances": instances}  # fmt: skip


def write_attempt(
    store: Store, record: JobRecord, plan: Plan, *, prices: dict[str, Any]
) -> dict[str, float]:
    """Write `plan` into the store; returns the times it implies (entered, last step, end)."""
    clock = Clock(plan.start)
    events = EventLog(store, job_id=record.job_id, attempt=plan.n, flush_interval_s=0,
                      wall_clock=clock)  # fmt: skip
    record.start(AttemptStart(attempt=plan.n, started_s=plan.start, start_step=plan.restored,
                              info=info(**prices, capacity=plan.capacity)))  # fmt: skip
    events.record("attempt_start", start_step=plan.restored, pid=1, on_demand=False)
    entered = clock.t = plan.start + plan.boot_s
    flushed = plan.last if plan.flushed_to is None else plan.flushed_to
    if plan.restored is None:
        events.record("restore", step=None, path=None, skipped=list(plan.skipped))
    else:
        events.record("restore", step=plan.restored, path=f"checkpoints/step-{plan.restored}",
                      skipped=list(plan.skipped), load_s=plan.restore_s)  # fmt: skip
    events.record("guard_start", step=plan.restored or 0, pool="standard")
    t = entered
    first_step_s = None
    for k in range((plan.restored or 0) + 1, plan.last + 1):
        t += STEP_S
        first_step_s = t if first_step_s is None else first_step_s
        clock.t = t
        if k <= flushed:
            events.record("heartbeat", step=k, epoch=0)
        if k % EVERY == 0:
            t += BLOCK_S
            clock.t = t
            if k <= flushed:
                events.record("save", step=k, path=f"checkpoints/step-{k}", bytes_written=1,
                              bytes_total=1, blocking_s=BLOCK_S, persist_s=PERSIST_S)  # fmt: skip
    last_step_s = t
    how, _, source = plan.how.partition(":")
    if how == "stop":
        events.record("notice", source=source, action="stop", step=plan.last, deadline_in_s=None,
                      detail={})  # fmt: skip
        t += STOP_FLUSH_S
        clock.t = t
        events.record("save", step=plan.last, path=f"checkpoints/step-{plan.last}",
                      bytes_written=1, bytes_total=1, blocking_s=STOP_FLUSH_S,
                      persist_s=STOP_FLUSH_S)  # fmt: skip
        events.record("stop", clean=True, step=plan.last, source=source,
                      flush_s=STOP_FLUSH_S)  # fmt: skip
        record_clean_stop(store, plan.n, step=plan.last, reason=source, wall_clock=clock,
                          flush_s=STOP_FLUSH_S)  # fmt: skip
    if how == "success":
        events.record("finished", step=plan.last, epoch=0)
    end = t + plan.tail_s
    events.close()
    if how != "cutoff":
        exit_class, code = {
            "stop": (ExitClass.PREEMPTED, 75),
            "kill": (ExitClass.UNCLEAN, -9),
            "success": (ExitClass.SUCCESS, 0),
            "crash": (ExitClass.CRASH, 1),
        }[how]
        extra: dict[str, Any] = {"clean_stop": how == "stop", "stopped_by": None}
        if plan.progress:
            extra["progress"] = {
                "entered_s": entered, "restore_s": plan.restore_s,
                "restored_step": plan.restored, "first_step_s": first_step_s,
                "last_step": plan.last, "last_step_s": last_step_s,
            }  # fmt: skip
        record.end(
            AttemptRecord(attempt=plan.n, exit_class=exit_class, started_s=plan.start,
                          ended_s=end, start_step=plan.restored, end_step=plan.end_step,
                          returncode=code),
            **extra,
        )  # fmt: skip
    return {"entered": entered, "first_step": first_step_s or entered, "last_step": last_step_s,
            "end": end}  # fmt: skip
