"""What interruptions cost one job, computed from its store alone (job record + event log).

`account_job` reads the job record (``job/``: each attempt's start, stop and end objects, see
`spotsafe.jobrecord`), the lease (is a supervisor alive?) and the event log
(`spotsafe.events.read_events`), and returns a `JobReport`; ``JobReport.to_json()`` is the
documented schema (``schema: 1``) that ``spotsafe report --json``, the dashboard, the metrics
and the advisor share. Torch-free, read-only, and fast: one pass over the events.

Definitions (the contract):

* **interruption**: an attempt that ended other than in success or crash (preempted, unclean,
  no progress, hung, or cut off with its supervisor). Its source is the stop request's source
  (`source_name`: ``sigterm``, ``aws-spot``, ``gcp-preempted``, ``stop-file``, ...) when the
  child stopped cleanly, ``hung`` when the supervisor stopped it for not stepping, and
  ``unclean`` when it was killed without a clean stop.
* **furthest step** of an attempt: the supervisor's progress record (``progress.last_step`` in
  its end object) when there is one; else the step of a clean stop or of a success; else
  estimated from the last durable sign of life (heartbeat, save, stop, notice events) plus
  the attempt's step time up to its end, and marked ``furthest_estimated``.
* **resume**: of the attempts that followed an interruption, ``succeeded`` restored the newest
  checkpoint that was valid when the interrupted attempt ended (or a newer one),
  ``fell_back`` restored an older one (past a corrupt checkpoint), ``fresh`` restored
  nothing; ``rate`` = succeeded / attempts (null without any).
* **replayed work** per interruption: from the step the next attempt restored (or, with no
  next attempt yet, the newest valid checkpoint) to the interrupted attempt's furthest step;
  seconds = steps x the attempt's step time (step wall time less checkpoint blocking).
* **checkpoint**: blocking and persist seconds of every save, restore seconds of every
  attempt that restored one: p50 / p95 / max (linear interpolation between ranks).
* **retry** per interruption: from the interruption (the stop request; for an unclean one,
  the last sign of life) to the next attempt's first step, split into ``backoff_s`` (until
  the next attempt's process started), ``restore_s`` and ``startup_s`` (the rest: imports,
  set-up, the first step).
* **goodput** = useful / total: ``total_s`` runs from the first attempt's start to the last
  one's end (now, while running); useful is the step time of the steps that were not
  replayed. Badput: ``startup`` (process start to first step, less the restore),
  ``restore``, ``checkpoint_blocking``, ``replayed`` (interrupted work), ``retry_wait`` (no
  attempt running: backoff, a dead machine) and ``other`` (the rest: work lost in crashes,
  shutdown after the last step, estimation error). The categories and useful sum to total.
* **cost**, from the prices each attempt's start object records (``info.price_per_hour`` of
  its capacity, ``info.on_demand_price_per_hour``, ``info.instances``): ``spot`` = every
  attempt's wall time at its price x instances (what was paid, on-demand fallback attempts
  included); ``on_demand_equivalent`` = useful time at the on-demand price x instances;
  ``saved`` = on_demand_equivalent - spot; ``saved_ratio`` = saved / on_demand_equivalent;
  ``sagemaker_ratio`` = 1 - spot / (all attempts' wall time at the on-demand price), the
  figure SageMaker reports, blind to replayed work. Any price missing: cost is null.

Example:
    >>> from spotsafe.storage import open_store
    >>> store = open_store("memory://spotsafe-accounting-doc")
    >>> account_job(store)
    Traceback (most recent call last):
    ...
    spotsafe.errors.StorageError: memory://spotsafe-accounting-doc: no job here ...
    >>> source_name("signal:SIGTERM"), source_name("aws:instance-action")
    ('sigterm', 'aws-spot')
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spotsafe.errors import ObjectMissing, StorageError
from spotsafe.events import Event, read_events
from spotsafe.jobrecord import ATTEMPTS_DIR, JOB_DIR, attempt_path, parse_record
from spotsafe.lease import read_lease
from spotsafe.redact import redact_url
from spotsafe.storage import Store, open_store

__all__ = [
    "SCHEMA",
    "AttemptReport",
    "Dist",
    "JobReport",
    "Replay",
    "Retry",
    "SaveReport",
    "account_job",
    "dist",
    "source_name",
]

SCHEMA = 1
JOB_FILE = f"{JOB_DIR}/job.json"
# Exit classes that are not interruptions: the job's own end or its own fault.
_NOT_INTERRUPTIONS = frozenset({"success", "crash"})
# Events that carry the step the child had reached when they were written.
_PROGRESS_KINDS = frozenset({"heartbeat", "save", "stop", "notice", "finished"})
_ATTEMPT_RE = re.compile(r"^(\d{6})-(start|child|stop|end)\.json$")
_BADPUT = ("startup", "restore", "checkpoint_blocking", "replayed", "retry_wait", "other")

# A stop request's source (spotsafe.interrupt) -> its name in the report.
_SOURCES = {
    "aws:instance-action": "aws-spot",
    "aws:rebalance-recommendation": "aws-rebalance",
    "gcp:preempted": "gcp-preempted",
    "gcp:maintenance-event": "gcp-maintenance",
    "azure:preempt": "azure-preempt",
    "azure:terminate": "azure-terminate",
    "azure:reboot": "azure-reboot",
    "azure:redeploy": "azure-redeploy",
    "lease lost": "lease-lost",
}


def source_name(raw: str | None) -> str:
    """The report's name for a stop request's source (`spotsafe.interrupt`'s spelling).

    Example:
        >>> [source_name(s) for s in ("signal:SIGUSR1", "file:/run/stop", "gcp:preempted",
        ...                           "azure:Preempt", None)]
        ['sigusr1', 'stop-file', 'gcp-preempted', 'azure-preempt', 'unknown']
    """
    if not raw:
        return "unknown"
    text = raw.strip()
    if text.startswith("signal:"):
        return text[len("signal:") :].lower()
    if text.startswith("file:"):
        return "stop-file"
    known = _SOURCES.get(text.lower())
    if known is not None:
        return known
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# ------------------------------------------------------------------ the report's parts


@dataclass(frozen=True, slots=True, kw_only=True)
class Dist:
    """A distribution of seconds: median, 95th percentile, maximum."""

    p50: float
    p95: float
    max: float

    def to_json(self) -> dict[str, float]:
        return {"p50": self.p50, "p95": self.p95, "max": self.max}


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def dist(values: Iterable[float]) -> Dist | None:
    """p50 / p95 / max of `values` (linear interpolation between ranks); None when empty.

    Example:
        >>> dist([1.0, 2.0, 3.0, 4.0, 5.0])
        Dist(p50=3.0, p95=4.8, max=5.0)
        >>> dist([]) is None
        True
    """
    ordered = sorted(values)
    if not ordered:
        return None
    return Dist(p50=_quantile(ordered, 0.5), p95=_quantile(ordered, 0.95), max=ordered[-1])


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptReport:
    """One attempt, as the report sees it (see the module docstring for each figure)."""

    attempt: int
    started_s: float
    ended_s: float | None
    """None while it runs."""
    exit_class: str | None
    """The supervisor's exit class; ``cut_off`` when it never recorded one; None: running."""
    returncode: int | None
    capacity: str
    restored_step: int | None
    """The step it resumed from; None: a fresh start."""
    end_step: int | None
    furthest_step: int | None
    furthest_estimated: bool
    interruption_source: str | None
    restore_s: float | None
    first_step_s: float | None
    # Not in the JSON: what the figures above were computed from.
    entered_s: float | None = None
    step_s: float | None = None
    """Seconds per training step, checkpoint blocking excluded; None: unknown."""
    interrupted_s: float | None = None
    """When the interruption happened (stop request, or the last sign of life)."""
    blocking_s: float = 0.0
    price_per_hour: float | None = None
    on_demand_price_per_hour: float | None = None
    instances: int = 1
    pool: str | None = None

    @property
    def interrupted(self) -> bool:
        """Whether this attempt is an interruption."""
        return self.exit_class is not None and self.exit_class not in _NOT_INTERRUPTIONS

    def wall_s(self, now_s: float) -> float:
        """Its wall time (to now while it runs)."""
        return max(0.0, (now_s if self.ended_s is None else self.ended_s) - self.started_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "started_s": self.started_s,
            "ended_s": self.ended_s,
            "exit_class": self.exit_class,
            "returncode": self.returncode,
            "capacity": self.capacity,
            "restored_step": self.restored_step,
            "end_step": self.end_step,
            "furthest_step": self.furthest_step,
            "furthest_estimated": self.furthest_estimated,
            "interruption_source": self.interruption_source,
            "restore_s": self.restore_s,
            "first_step_s": self.first_step_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveReport:
    """One committed checkpoint."""

    t: float
    attempt: int
    step: int
    blocking_s: float
    persist_s: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # flat: the fields, in order, are the schema's keys


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """The work one interruption threw away."""

    attempt: int
    source: str
    from_step: int | None
    to_step: int | None
    steps: int
    seconds: float
    estimated: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # flat: the fields, in order, are the schema's keys


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """From one interruption to the next attempt's first step."""

    attempt: int
    seconds: float
    backoff_s: float
    startup_s: float
    restore_s: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # flat: the fields, in order, are the schema's keys


@dataclass(frozen=True, slots=True, kw_only=True)
class JobReport:
    """What interruptions cost one job; ``to_json()`` is the documented schema 1."""

    job_id: str
    store: str
    pool: str | None
    state: str
    attempts: tuple[AttemptReport, ...]
    saves: tuple[SaveReport, ...]
    interruptions_by_source: dict[str, int]
    resume_attempts: int
    resume_succeeded: int
    resume_fell_back: int
    resume_fresh: int
    replayed: tuple[Replay, ...]
    blocking: Dist | None
    persist: Dist | None
    restore: Dist | None
    retries: tuple[Retry, ...]
    useful_s: float
    total_s: float
    badput_s: dict[str, float]
    cost: dict[str, float | None] | None
    now_s: float = field(default=0.0, compare=False)

    @property
    def interruptions(self) -> int:
        """How many attempts were interrupted."""
        return sum(self.interruptions_by_source.values())

    @property
    def resume_rate(self) -> float | None:
        """succeeded / attempts after an interruption; None without any."""
        if not self.resume_attempts:
            return None
        return self.resume_succeeded / self.resume_attempts

    @property
    def goodput(self) -> float | None:
        """useful / total wall time; None before any time passed."""
        return self.useful_s / self.total_s if self.total_s > 0 else None

    @property
    def replayed_steps(self) -> int:
        return sum(r.steps for r in self.replayed)

    @property
    def replayed_s(self) -> float:
        return sum(r.seconds for r in self.replayed)

    def summary_json(self) -> dict[str, Any]:
        """The JSON without the per-attempt and per-save lists (the fleet's entries)."""
        doc = self.to_json()
        del doc["attempts"], doc["saves"]
        return doc

    def to_json(self) -> dict[str, Any]:
        """The report as schema 1 (see the module docstring and README)."""

        def d(x: Dist | None) -> dict[str, float] | None:
            return None if x is None else x.to_json()

        return {
            "schema": SCHEMA,
            "job_id": self.job_id,
            "store": self.store,
            "pool": self.pool,
            "state": self.state,
            "attempts": [a.to_json() for a in self.attempts],
            "saves": [s.to_json() for s in self.saves],
            "interruptions": {
                "total": self.interruptions,
                "by_source": dict(sorted(self.interruptions_by_source.items())),
            },
            "resume": {
                "attempts": self.resume_attempts,
                "succeeded": self.resume_succeeded,
                "fell_back": self.resume_fell_back,
                "fresh": self.resume_fresh,
                "rate": self.resume_rate,
            },
            "replayed": {
                "steps_total": self.replayed_steps,
                "seconds_total": self.replayed_s,
                "per_interruption": [r.to_json() for r in self.replayed],
            },
            "checkpoint": {
                "count": len(self.saves),
                "blocking_s": d(self.blocking),
                "persist_s": d(self.persist),
                "restore_s": d(self.restore),
            },
            "retry": {
                "seconds_total": sum(r.seconds for r in self.retries),
                "per_interruption": [r.to_json() for r in self.retries],
            },
            "goodput": {
                "ratio": self.goodput,
                "useful_s": self.useful_s,
                "total_s": self.total_s,
                "badput_s": {k: self.badput_s[k] for k in _BADPUT},
            },
            "cost": None if self.cost is None else dict(self.cost),
        }


# ------------------------------------------------------------------ reading the store


@dataclass(slots=True)
class _Facts:
    """What the event log says about one attempt (one pass over the events)."""

    points: list[tuple[float, int]] = field(default_factory=list)
    saves: list[SaveReport] = field(default_factory=list)
    restore: Event | None = None
    guard_start_t: float | None = None
    notice_t: float | None = None
    notice_source: str | None = None
    clean_stop: Event | None = None
    finished_step: int | None = None
    last_t: float | None = None
    start_step: int | None = None


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _facts(events: Iterable[Event]) -> dict[int, _Facts]:
    out: dict[int, _Facts] = {}
    for e in events:
        f = out.get(e.attempt)
        if f is None:
            f = out[e.attempt] = _Facts()
        f.last_t = e.t
        kind = e.kind
        fields = e.fields
        if kind in _PROGRESS_KINDS:
            step = fields.get("step")
            if type(step) is int:
                f.points.append((e.t, step))
            if kind == "save" and type(step) is int:
                blocking = _num(fields.get("blocking_s")) or 0.0
                persist = _num(fields.get("persist_s"))
                persist = blocking if persist is None else persist
                f.saves.append(SaveReport(t=e.t, attempt=e.attempt, step=step,
                                          blocking_s=blocking, persist_s=persist))  # fmt: skip
            elif kind == "notice":
                if fields.get("action") in ("stop", "forward_sigterm") and (
                    f.notice_t is None or e.t < f.notice_t
                ):
                    f.notice_t, f.notice_source = e.t, str(fields.get("source") or "")
            elif kind == "stop":
                if fields.get("clean") is True and f.clean_stop is None:
                    f.clean_stop = e
            elif kind == "finished" and type(step) is int:
                f.finished_step = step
        elif kind == "restore":
            # The first restore that loaded something, else the first one (a fresh start).
            if f.restore is None or (f.restore.get("step") is None and fields.get("step")):
                f.restore = e
        elif kind == "guard_start":
            if f.guard_start_t is None:
                f.guard_start_t = e.t
            step = fields.get("step")
            if type(step) is int:
                f.points.append((e.t, step))
        elif kind == "attempt_start":
            f.start_step = _int(fields.get("start_step"))
    return out


@dataclass(slots=True)
class _Raw:
    """The store's record of one job, as read."""

    url: str
    job_id: str
    starts: dict[int, dict[str, Any]]
    ends: dict[int, dict[str, Any]]
    stops: dict[int, dict[str, Any]]
    events: list[Event]
    lease_alive: bool
    lease_released: bool
    lease_seen: bool


def _read_doc(store: Store, path: str) -> dict[str, Any] | None:
    try:
        raw = store.read_bytes(path)
    except ObjectMissing:
        return None
    return parse_record(store, path, raw)


def _read(store: Store, now_s: float) -> _Raw:
    url = redact_url(store.url)
    job = _read_doc(store, JOB_FILE)
    if job is None:
        raise StorageError(
            f"{url}: no job here (no {JOB_FILE}); pass the store of a job run with "
            "`spotsafe run --store STORE -- CMD`, or --fleet PREFIX for many jobs",
            retryable=False,
        )
    kinds: dict[int, set[str]] = {}
    for path in store.list(ATTEMPTS_DIR):
        m = _ATTEMPT_RE.match(path.rsplit("/", 1)[-1])
        if m:
            kinds.setdefault(int(m.group(1)), set()).add(m.group(2))
    starts: dict[int, dict[str, Any]] = {}
    ends: dict[int, dict[str, Any]] = {}
    stops: dict[int, dict[str, Any]] = {}
    for n, have in sorted(kinds.items()):
        for kind, into in (("start", starts), ("end", ends), ("stop", stops)):
            if kind in have:
                doc = _read_doc(store, attempt_path(n, kind))
                if doc is not None:
                    into[n] = doc
    lease = read_lease(store)
    ttl = _num(lease.holder.get("ttl_s")) or 60.0
    alive = (
        lease.epoch is not None
        and not lease.released
        and lease.beat_wall_s is not None
        and now_s - lease.beat_wall_s <= ttl
    )
    return _Raw(url=url, job_id=str(job.get("job_id", "")), starts=starts, ends=ends,
                stops=stops, events=read_events(store), lease_alive=alive,
                lease_released=lease.released, lease_seen=lease.epoch is not None)  # fmt: skip


def account_job(store: Store | str, *, now_s: float | None = None) -> JobReport:
    """Account for the job in `store` (a Store or a URL): see the module docstring.

    Works on running, finished, failed and abandoned jobs; reads only.

    Args:
        store: the job's store.
        now_s: wall time to account up to for a job still running (default: now).

    Raises:
        StorageError: the store holds no job (not retryable), cannot be read, or its job
            record is garbled.
    """
    if isinstance(store, str):
        store = open_store(store)
    now = time.time() if now_s is None else now_s
    return compute(_read(store, now), now_s=now)


# ------------------------------------------------------------------ the arithmetic


def _step_time(points: list[tuple[float, int]], saves: list[SaveReport]) -> float | None:
    """Seconds per step from the first to the last sign of progress, blocking excluded."""
    if len(points) < 2:
        return None
    t1, s1 = points[0]
    t2, s2 = points[-1]
    for t, s in points:  # the earliest point at the last step: time stepping, not idling
        if s == s2:
            t2 = t
            break
    if s2 <= s1 or t2 <= t1:
        return None
    blocking = sum(v.blocking_s for v in saves if t1 < v.t <= t2)
    wall = t2 - t1
    # Blocking larger than the window means the save events straddle it: keep the wall time.
    return (wall - blocking if wall > blocking else wall) / (s2 - s1)


@dataclass(slots=True)
class _Draft:
    """An attempt while it is worked out (AttemptReport is frozen)."""

    n: int
    started_s: float
    ended_s: float | None
    exit_class: str | None
    returncode: int | None
    capacity: str
    restored_step: int | None
    end_step: int | None
    furthest: int | None
    furthest_t: float | None
    exact: bool
    source: str | None
    restore_s: float | None
    first_step_s: float | None
    entered_s: float | None
    step_s: float | None
    interrupted_s: float | None
    saves: list[SaveReport]
    info: dict[str, Any]


def _draft(n: int, raw: _Raw, facts: _Facts, running: bool) -> _Draft:
    start = raw.starts[n]
    end = raw.ends.get(n)
    stop = raw.stops.get(n)
    found = start.get("info")
    info: dict[str, Any] = found if isinstance(found, dict) else {}
    started_s = _num(start.get("started_s")) or 0.0
    prog = end.get("progress") if end is not None else None
    if not isinstance(prog, dict):
        prog = None
    points = sorted(facts.points)
    if end is not None:
        ended_s: float | None = _num(end.get("ended_s"))
        exit_class: str | None = str(end.get("exit_class"))
    elif running:
        ended_s, exit_class = None, None
    else:  # its supervisor died and no later one closed it: it ended at its last sign
        ended_s, exit_class = max(started_s, facts.last_t or started_s), "cut_off"

    # Where it resumed from: the progress channel, the restore event, else the newest valid
    # step when it started (what a Checkpointer restores).
    restore_ev = facts.restore
    if prog is not None and (prog.get("entered_s") is not None or prog.get("restored_step")):
        restored = _int(prog.get("restored_step"))
    elif restore_ev is not None:
        restored = _int(restore_ev.get("step"))
    else:
        restored = _int(start.get("start_step"))
    restore_s = _num(prog.get("restore_s")) if prog is not None else None
    if restore_s is None and restore_ev is not None and restore_ev.get("step") is not None:
        restore_s = _num(restore_ev.get("load_s"))
    entered_s = _num(prog.get("entered_s")) if prog is not None else None
    if entered_s is None:
        entered_s = facts.guard_start_t
    first_step_s = _num(prog.get("first_step_s")) if prog is not None else None
    if first_step_s is None:
        first_step_s = entered_s

    # How far it got, and whether that is known or estimated.
    furthest, furthest_t, exact = None, None, False
    if prog is not None and _int(prog.get("last_step")) is not None:
        furthest, furthest_t, exact = (
            _int(prog.get("last_step")),
            _num(prog.get("last_step_s")),
            True,
        )
    else:
        best = max(points, key=lambda p: (p[1], -p[0])) if points else None
        if best is not None:
            furthest, furthest_t = best[1], best[0]
        clean_step = _int(stop.get("step")) if stop is not None else None
        if clean_step is None and facts.clean_stop is not None:
            clean_step = _int(facts.clean_stop.get("step"))
        for known in (clean_step, facts.finished_step):
            if known is not None and (furthest is None or known >= furthest):
                furthest, exact = known, True
        if exit_class == "success":
            exact = True
            end_step = _int(end.get("end_step")) if end is not None else None
            if end_step is not None and (furthest is None or end_step > furthest):
                furthest = end_step
        if running:
            exact = True  # so far: nothing to estimate yet
    if restored is not None and (furthest is None or furthest < restored):
        furthest, furthest_t = restored, furthest_t

    # When it was interrupted: the stop request, else its last sign of life.
    source: str | None = None
    interrupted_s: float | None = None
    if exit_class is not None and exit_class not in _NOT_INTERRUPTIONS:
        clean = stop is not None or facts.clean_stop is not None
        stopped_by = end.get("stopped_by") if end is not None else None
        if exit_class == "hung":
            source = "hung"
        elif clean:
            reason = stopped_by if isinstance(stopped_by, str) and stopped_by else None
            if reason is None and stop is not None:
                reason = str(stop.get("reason") or "")
            if not reason and facts.clean_stop is not None:
                reason = str(facts.clean_stop.get("source") or "")
            source = source_name(reason or facts.notice_source)
        elif exit_class == "preempted":  # exit 75 without a recorded stop
            source = source_name(stopped_by if isinstance(stopped_by, str) else None)
        else:
            source = "unclean"
        interrupted_s = facts.notice_t
        if interrupted_s is None and stop is not None:
            wall, flush = _num(stop.get("wall_s")), None
            details = stop.get("details")
            if isinstance(details, dict):
                flush = _num(details.get("flush_s"))
            if wall is not None:
                interrupted_s = wall - (flush or 0.0)
    return _Draft(
        n=n, started_s=started_s, ended_s=ended_s, exit_class=exit_class,
        returncode=_int(end.get("returncode")) if end is not None else None,
        capacity=str(info.get("capacity") or "spot"), restored_step=restored,
        end_step=_int(end.get("end_step")) if end is not None else None,
        furthest=furthest, furthest_t=furthest_t, exact=exact, source=source,
        restore_s=restore_s, first_step_s=first_step_s, entered_s=entered_s,
        step_s=_attempt_step_s(prog, points, facts.saves, restored),
        interrupted_s=interrupted_s, saves=facts.saves, info=info,
    )  # fmt: skip


def _attempt_step_s(
    prog: dict[str, Any] | None,
    points: list[tuple[float, int]],
    saves: list[SaveReport],
    restored: int | None,
) -> float | None:
    if prog is not None:
        # From entering the Guard (the first step starts) to the end of the last step; or
        # from the end of the first step, one step fewer.
        first, last = _num(prog.get("entered_s")), _num(prog.get("last_step_s"))
        last_step = _int(prog.get("last_step"))
        steps = None if last_step is None else last_step - (restored or 0)
        if first is None:
            first = _num(prog.get("first_step_s"))
            steps = None if steps is None else steps - 1
        if not (first is None or last is None or steps is None or steps <= 0 or last <= first):
            blocking = sum(v.blocking_s for v in saves if first < v.t <= last)
            return max(0.0, last - first - blocking) / steps
    return _step_time(points, saves)


def _estimate(
    d: _Draft, job_step_s: float | None, startup_s: float | None, save_gap: int | None
) -> None:
    """An interrupted attempt with no exact furthest step: extrapolate from its last sign of
    progress at its step time up to its end, within what its checkpoints prove.

    At least: its newest own checkpoint (the supervisor's listing at its end). At most: one
    save interval past it (less a step), since the next save would have been listed too."""
    if d.exact or d.ended_s is None:
        return
    low = d.furthest
    if d.end_step is not None and d.end_step > (d.restored_step or 0):
        low = d.end_step if low is None else max(low, d.end_step)
    step_s = d.step_s or job_step_s
    base_t, base_step = d.furthest_t, d.furthest
    if base_t is None:  # no sign of progress: it stepped from the end of its start-up
        base_step = d.restored_step or 0
        base_t = d.entered_s
        if base_t is None and startup_s is not None:
            base_t = d.started_s + startup_s
    guess = low
    if step_s is not None and step_s > 0 and base_t is not None and base_step is not None:
        guess = base_step + int(max(0.0, d.ended_s - base_t) / step_s)
    if guess is None:
        return
    if low is not None:
        guess = max(guess, low)
        if save_gap is not None and save_gap > 0:
            guess = min(guess, low + save_gap - 1)
    if guess != d.furthest:
        if step_s is not None and d.furthest is not None and d.furthest_t is not None:
            d.furthest_t += (guess - d.furthest) * step_s
        else:
            d.furthest_t = d.ended_s
        d.furthest = guess


def _median(values: Iterable[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return _quantile(known, 0.5) if known else None


def compute(raw: _Raw, *, now_s: float) -> JobReport:
    """The report of one job from what `_read` found (pure: no store, no clock)."""
    facts = _facts(raw.events)
    numbers = sorted(raw.starts)
    last = numbers[-1] if numbers else None
    running_attempt = raw.lease_alive and last is not None and last not in raw.ends
    drafts = [
        _draft(n, raw, facts.get(n) or _Facts(), running_attempt and n == last) for n in numbers
    ]

    # Job-wide step time and start-up, for attempts that left too little to measure.
    job_step_s = _median([d.step_s for d in drafts if d.step_s])
    startups = [d.entered_s - d.started_s for d in drafts if d.entered_s is not None]
    job_startup_s = _median(startups)
    gaps = [
        b.step - a.step
        for d in drafts
        for a, b in zip(d.saves, d.saves[1:], strict=False)
        if b.step > a.step
    ]
    gap = _median([float(g) for g in gaps])
    for d in drafts:
        _estimate(d, job_step_s, job_startup_s, None if gap is None else round(gap))

    # Resume, replayed work and retries, interruption by interruption.
    by_source: dict[str, int] = {}
    resume = {"attempts": 0, "succeeded": 0, "fell_back": 0, "fresh": 0}
    replays: list[Replay] = []
    retries: list[Retry] = []
    lost_steps: dict[int, int] = {}  # attempt -> its steps that must be done again
    for i, d in enumerate(drafts):
        nxt = drafts[i + 1] if i + 1 < len(drafts) else None
        if d.exit_class is None or d.exit_class == "success":
            continue
        from_step = nxt.restored_step if nxt is not None else d.end_step
        lost = max(0, (d.furthest or 0) - (from_step or 0)) if d.furthest is not None else 0
        lost_steps[d.n] = lost
        if d.exit_class in _NOT_INTERRUPTIONS:
            continue  # a crash: its lost work is "other", not an interruption's
        source = d.source or "unclean"
        by_source[source] = by_source.get(source, 0) + 1
        step_s = d.step_s or job_step_s or 0.0
        replays.append(Replay(attempt=d.n, source=source, from_step=from_step,
                              to_step=d.furthest, steps=lost, seconds=lost * step_s,
                              estimated=not d.exact))  # fmt: skip
        if d.interrupted_s is None:
            d.interrupted_s = d.furthest_t if d.furthest_t is not None else d.ended_s
        if nxt is None:
            continue
        resume["attempts"] += 1
        if nxt.restored_step is None:
            resume["fresh"] += 1
        elif d.end_step is not None and nxt.restored_step < d.end_step:
            resume["fell_back"] += 1
        else:
            resume["succeeded"] += 1
        began = nxt.first_step_s
        if began is None:
            began = nxt.ended_s if nxt.ended_s is not None else now_s
        t_int = d.interrupted_s if d.interrupted_s is not None else nxt.started_s
        seconds = max(0.0, began - t_int)
        backoff = min(seconds, max(0.0, nxt.started_s - t_int))
        restore = min(seconds - backoff, nxt.restore_s or 0.0)
        retries.append(Retry(attempt=d.n, seconds=seconds, backoff_s=backoff,
                             startup_s=seconds - backoff - restore, restore_s=restore))  # fmt: skip

    # Goodput: every second from the first start to the last end, in exactly one category.
    total_s = 0.0
    badput = dict.fromkeys(_BADPUT, 0.0)
    useful_s = 0.0
    if drafts:
        end_all = max(now_s if d.ended_s is None else d.ended_s for d in drafts)
        if raw.lease_alive:
            end_all = max(end_all, now_s)
        total_s = max(0.0, end_all - drafts[0].started_s)
        prev_end: float | None = None
        for d in drafts:
            wall = max(0.0, (now_s if d.ended_s is None else d.ended_s) - d.started_s)
            if prev_end is not None:
                badput["retry_wait"] += max(0.0, d.started_s - prev_end)
            prev_end = now_s if d.ended_s is None else d.ended_s
            restore = min(wall, d.restore_s or 0.0)
            # Training begins when the child enters the Guard (its first step starts).
            began = d.entered_s if d.entered_s is not None else d.first_step_s
            if began is None:
                began = prev_end
            startup = min(wall - restore, max(0.0, began - d.started_s - restore))
            badput["startup"] += startup
            badput["restore"] += restore
            blocking = sum(v.blocking_s for v in d.saves)
            badput["checkpoint_blocking"] += blocking
            step_s = d.step_s or job_step_s or 0.0
            done = max(0, (d.furthest or 0) - (d.restored_step or 0))
            # Lost steps may reach back past this attempt (a fall-back): the earlier
            # attempts counted them as useful, so they come off here.
            useful_s += (done - lost_steps.get(d.n, 0)) * step_s
        badput["replayed"] = sum(r.seconds for r in replays)
        useful_s = max(0.0, useful_s)
        if raw.lease_alive and drafts[-1].ended_s is not None:  # between attempts now
            badput["retry_wait"] += max(0.0, now_s - drafts[-1].ended_s)
        named = sum(badput.values())
        other = total_s - useful_s - named
        if other < 0:  # estimates overshot: the measured badput stands, useful gives way
            useful_s = max(0.0, total_s - named)
            other = max(0.0, total_s - useful_s - named)
        badput["other"] = other

    reports = tuple(
        AttemptReport(
            attempt=d.n, started_s=d.started_s, ended_s=d.ended_s, exit_class=d.exit_class,
            returncode=d.returncode, capacity=d.capacity, restored_step=d.restored_step,
            end_step=d.end_step, furthest_step=d.furthest, furthest_estimated=not d.exact,
            interruption_source=d.source, restore_s=d.restore_s, first_step_s=d.first_step_s,
            entered_s=d.entered_s, step_s=d.step_s, interrupted_s=d.interrupted_s,
            blocking_s=sum(v.blocking_s for v in d.saves),
            price_per_hour=_num(d.info.get("price_per_hour")),
            on_demand_price_per_hour=_num(d.info.get("on_demand_price_per_hour")),
            instances=_int(d.info.get("instances")) or 1,
            pool=str(d.info["pool"]) if d.info.get("pool") else None,
        )
        for d in drafts
    )  # fmt: skip
    saves = tuple(sorted((s for d in drafts for s in d.saves), key=lambda s: s.t))
    return JobReport(
        job_id=raw.job_id,
        store=raw.url,
        pool=next((a.pool for a in reversed(reports) if a.pool), None),
        state=_state(raw, drafts, running_attempt),
        attempts=reports,
        saves=saves,
        interruptions_by_source=by_source,
        resume_attempts=resume["attempts"],
        resume_succeeded=resume["succeeded"],
        resume_fell_back=resume["fell_back"],
        resume_fresh=resume["fresh"],
        replayed=tuple(replays),
        blocking=dist(s.blocking_s for s in saves),
        persist=dist(s.persist_s for s in saves),
        restore=dist(d.restore_s for d in drafts if d.restore_s is not None),
        retries=tuple(retries),
        useful_s=useful_s,
        total_s=total_s,
        badput_s=badput,
        cost=_cost(reports, useful_s, now_s),
        now_s=now_s,
    )


def _state(raw: _Raw, drafts: list[_Draft], running_attempt: bool) -> str:
    if raw.lease_alive:
        return "running"
    if not drafts:
        return "unknown"
    last = drafts[-1]
    if last.exit_class == "success":
        return "succeeded"
    if last.exit_class in (None, "cut_off"):
        return "unknown"
    if raw.lease_seen and not raw.lease_released:
        return "unknown"  # its supervisor died between attempts: the job may go on
    end = raw.ends.get(last.n) or {}
    if isinstance(end.get("stopped_by"), str) and end["stopped_by"] != "lease lost":
        return "stopped"
    return "failed"


def _cost(
    attempts: Sequence[AttemptReport], useful_s: float, now_s: float
) -> dict[str, float | None] | None:
    if not attempts or any(a.price_per_hour is None for a in attempts):
        return None
    newest = next((a for a in reversed(attempts) if a.on_demand_price_per_hour is not None), None)
    if newest is None or newest.on_demand_price_per_hour is None:
        return None
    od_price = newest.on_demand_price_per_hour
    paid = sum(a.wall_s(now_s) / 3600.0 * (a.price_per_hour or 0.0) * a.instances
               for a in attempts)  # fmt: skip
    at_od = sum(a.wall_s(now_s) / 3600.0 * od_price * a.instances for a in attempts)
    od_equivalent = useful_s / 3600.0 * od_price * newest.instances
    saved = od_equivalent - paid
    return {
        "spot": paid,
        "on_demand_equivalent": od_equivalent,
        "saved": saved,
        "saved_ratio": saved / od_equivalent if od_equivalent > 0 else None,
        "sagemaker_ratio": 1.0 - paid / at_od if at_od > 0 else None,
    }


def dumps(report: JobReport) -> str:
    """The report's JSON text (for ``--json``)."""
    return json.dumps(report.to_json(), indent=1)
