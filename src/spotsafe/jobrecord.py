"""The job record: every attempt's lifecycle, kept in the store as create-once objects.

Torch-free and below all its users: the supervisor writes an attempt's start, child and end
(spotsafe.supervisor.job reads them back as the retry policy's history), the Guard writes its
clean stop, the Checkpointer checks the fence before each commit, and the chaos harness and
the Guard's interval read it. Object stores cannot append or overwrite safely, so each fact
is one object, created once and never rewritten::

    job/attempts/000003-start.json     attempt 3 began: when, where, the step it started from
    job/attempts/000003-child.json     its child process: pid and process group
    job/attempts/000003-stop.json      the child stopped cleanly on request: state flushed
                                       (written by the Guard before it exits 75)
    job/attempts/000003-end.json       it ended: return code, exit class, steps, timings

The exit class is decided from this record alone: a launcher such as torchrun turns its
workers' 75 into 1, and the stop object says "preempted" where the code cannot. The event log
(spotsafe.events) keeps telling the same story in more detail, for reports.

Example:
    >>> from spotsafe.storage import open_store
    >>> store = open_store("memory://spotsafe-jobrecord-doc")
    >>> record_clean_stop(store, 3, step=1200, reason="signal:SIGTERM")
    True
    >>> record_clean_stop(store, 3, step=1200, reason="signal:SIGTERM")  # once per attempt
    False
    >>> clean_stop_recorded(store, 3), read_stop(store, 3).step
    (True, 1200)
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from spotsafe.errors import ObjectMissing, StaleAttempt, StorageError
from spotsafe.events import read_events
from spotsafe.storage import Store

__all__ = [
    "ATTEMPTS_DIR",
    "JOB_DIR",
    "KINDS",
    "ChildInfo",
    "StopRecord",
    "attempt_files",
    "attempt_path",
    "check_fence",
    "clean_stop_recorded",
    "current_generation",
    "observed_interruptions",
    "read_attempt",
    "read_child",
    "read_stop",
    "record_child",
    "record_clean_stop",
]

log = logging.getLogger("spotsafe")
T = TypeVar("T")

JOB_DIR = "job"
ATTEMPTS_DIR = f"{JOB_DIR}/attempts"
KINDS = ("start", "child", "stop", "end")  # an attempt's objects, in the order they appear
_ATTEMPT_RE = re.compile(r"^(\d{6})-(start|child|stop|end)\.json$")


def attempt_path(attempt: int, kind: str) -> str:
    """The store path of attempt `attempt`'s `kind` object (one of `KINDS`).

    Example:
        >>> attempt_path(3, "stop")
        'job/attempts/000003-stop.json'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown attempt object {kind!r}; one of {', '.join(KINDS)}")
    return f"{ATTEMPTS_DIR}/{attempt:06d}-{kind}.json"


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def attempt_files(store: Store) -> dict[int, set[str]]:
    """Attempt number -> which of its objects exist (e.g. {"start", "child", "end"}).

    One listing of ``job/attempts``; errors propagate ("could not read" is never "none").
    """
    out: dict[int, set[str]] = {}
    for path in store.list(ATTEMPTS_DIR):
        m = _ATTEMPT_RE.match(path.rsplit("/", 1)[-1])
        if m:
            out.setdefault(int(m.group(1)), set()).add(m.group(2))
    return out


def read_attempt(store: Store, attempt: int, kind: str) -> dict[str, Any] | None:
    """Attempt `attempt`'s `kind` object, or None when it was not written.

    Raises:
        StorageError: the store could not be read, or the object is not a JSON object
            (garbled: not retryable).
    """
    path = attempt_path(attempt, kind)
    try:
        raw = store.read_bytes(path)
    except ObjectMissing:
        return None
    return parse_record(store, path, raw)


def parse_record(store: Store, path: str, raw: bytes) -> dict[str, Any]:
    """One job-record object read from ``path``; a fatal StorageError if it is garbled."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise StorageError(
            f"{store.url}/{path}: the job record is garbled ({e}); inspect it or start a new "
            "job in another store",
            retryable=False,
        ) from e
    if not isinstance(doc, dict):
        raise StorageError(f"{store.url}/{path}: not a JSON object", retryable=False)
    return doc


def _field(store: Store, attempt: int, kind: str, parse: Callable[[], T]) -> T:
    try:
        return parse()
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(
            f"{store.url}/{attempt_path(attempt, kind)}: the job record is garbled "
            f"({type(e).__name__}: {e}); inspect it or start a new job in another store",
            retryable=False,
        ) from e


def _int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"{value!r} is not an integer")
    return value


# ------------------------------------------------------------------ the child


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildInfo:
    """The process an attempt ran in: what the chaos harness and an operator signal."""

    pid: int
    """The child's process id (the launcher: python, torchrun, a shell)."""
    pgid: int
    """Its process group: the launcher and every worker it started."""


def record_child(store: Store, attempt: int, *, pid: int, pgid: int) -> bool:
    """Record attempt `attempt`'s child process; False when it was recorded before."""
    doc = {"attempt": attempt, "pid": pid, "pgid": pgid}
    return store.create_exclusive(attempt_path(attempt, "child"), _dumps(doc))


def read_child(store: Store, attempt: int) -> ChildInfo | None:
    """Attempt `attempt`'s child process, or None before it started (or never did)."""
    doc = read_attempt(store, attempt, "child")
    if doc is None:
        return None
    return _field(
        store, attempt, "child", lambda: ChildInfo(pid=_int(doc["pid"]), pgid=_int(doc["pgid"]))
    )


# ------------------------------------------------------------------ a clean stop


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRecord:
    """An attempt that stopped cleanly on request: its newest state at `step` is durable."""

    attempt: int
    step: int
    """The step the state was flushed at."""
    reason: str
    """What asked for the stop: the request's source (``signal:SIGTERM``, ``aws``, ...)."""
    wall_s: float
    """When the state was durable, in seconds since the epoch."""
    details: dict[str, Any] = field(default_factory=dict)
    """Anything else the writer recorded (exit code, flush time, deadline met)."""


def record_clean_stop(
    store: Store,
    attempt: int | None,
    *,
    step: int,
    reason: str,
    wall_clock: Callable[[], float] = time.time,
    **details: Any,
) -> bool:
    """Record that `attempt` stopped cleanly at `step` with its state durable.

    The Guard calls this after the flush and before it exits 75 (or its configured code):
    the supervisor then classifies the attempt as preempted whatever code reaches it (a
    launcher such as torchrun reports 1). Create-once: of several ranks, the first wins.

    Never raises for the store: a stop whose record cannot be written still exits 75 (it is
    logged; the supervisor then judges by the code, and the event log still says so).

    Args:
        store: the job's store.
        attempt: the attempt's number (``$SPOTSAFE_ATTEMPT``); None outside the supervisor,
            where there is no job record and nothing is written.
        step: the step whose state was flushed.
        reason: what asked for the stop (the request's source).
        wall_clock: injectable wall time.
        details: JSON values kept with it (exit code, flush time, whether the deadline held).

    Returns:
        Whether this call created the record.
    """
    if attempt is None:
        return False
    doc = {
        "attempt": attempt,
        "clean": True,
        "step": step,
        "reason": reason,
        "wall_s": wall_clock(),
        "details": dict(details),
    }
    try:
        return store.create_exclusive(attempt_path(attempt, "stop"), _dumps(doc))
    except StorageError as e:
        log.warning("could not record attempt %d's clean stop in the job record: %s", attempt, e)
        return False


def read_stop(store: Store, attempt: int) -> StopRecord | None:
    """Attempt `attempt`'s clean-stop record, or None when it wrote none."""
    doc = read_attempt(store, attempt, "stop")
    if doc is None:
        return None

    def parse() -> StopRecord:
        if doc["clean"] is not True:
            raise ValueError("a stop record is written for clean stops only")
        details = doc.get("details") or {}
        if not isinstance(details, dict):
            raise TypeError(f"details {str(details)[:40]!r} is not an object")
        wall_s = doc["wall_s"]
        if isinstance(wall_s, bool) or not isinstance(wall_s, (int, float)):
            raise TypeError(f"wall_s {wall_s!r} is not a time")
        return StopRecord(attempt=attempt, step=_int(doc["step"]), reason=str(doc["reason"]),
                          wall_s=float(wall_s), details=details)  # fmt: skip

    return _field(store, attempt, "stop", parse)


def clean_stop_recorded(store: Store, attempt: int) -> bool:
    """Whether attempt `attempt` stopped cleanly on request (its state flushed).

    From the job record's stop object. Children built before the stop object existed
    record a clean stop only as the Guard's ``stop`` event (``clean: true``); so that their
    stores stay readable, an attempt without a stop object falls back to its events.

    Example:
        >>> from spotsafe.storage import open_store
        >>> clean_stop_recorded(open_store("memory://spotsafe-stop-doc"), 1)
        False
    """
    if read_stop(store, attempt) is not None:
        return True
    # Compatibility: an older child wrote only the event (see the docstring).
    return any(
        e.kind == "stop" and e.get("clean") is True for e in read_events(store, attempt=attempt)
    )


# ------------------------------------------------------------------ generations


def current_generation(store: Store) -> int | None:
    """The newest attempt the job record knows of, or None outside the supervisor.

    A checkpoint written by an older generation must not commit: that writer is a stale
    attempt whose supervisor lost the job. One listing of ``job/attempts``.

    Example:
        >>> from spotsafe.storage import open_store
        >>> current_generation(open_store("memory://spotsafe-gen-doc")) is None
        True
    """
    numbers = [n for n, kinds in attempt_files(store).items() if "start" in kinds]
    return max(numbers) if numbers else None


def check_fence(store: Store, generation: int | None) -> None:
    """Raise `StaleAttempt` (a fatal StorageError) when a newer attempt than `generation`
    has started.

    The Checkpointer calls this right before it writes a manifest: a stale attempt's commit
    never lands over a newer generation's. None (not under the supervisor) always passes.

    Example:
        >>> from spotsafe.storage import open_store
        >>> check_fence(open_store("memory://spotsafe-fence-doc"), 3)
    """
    if generation is None:
        return
    current = current_generation(store)
    if current is not None and current > generation:
        raise StaleAttempt(
            f"{store.url}: refusing to commit a checkpoint of attempt {generation}: attempt "
            f"{current} has started since (another supervisor took the job over); this "
            "process is stale and must stop"
        )


# Exit classes that count as an interruption (the supervisor's ExitClass values).
_INTERRUPTIONS = {"preempted", "unclean", "no_progress"}


def observed_interruptions(store: Store) -> tuple[int, float]:
    """(interruptions, seconds of run time) over the job's finished attempts.

    The Guard blends them with the pool's prior into the mean time between interruptions
    that its checkpoint interval uses. A garbled record is skipped: it only costs precision.
    """
    interruptions, runtime_s = 0, 0.0
    for n, kinds in attempt_files(store).items():
        if "end" not in kinds:
            continue
        try:
            doc = json.loads(store.read_bytes(attempt_path(n, "end")))
            duration_s = float(doc["ended_s"]) - float(doc["started_s"])
        except (ValueError, KeyError, TypeError):
            continue
        if not math.isfinite(duration_s):
            continue  # garbled ("1e999"): an infinite run time would hide every interruption
        runtime_s += max(0.0, duration_s)
        interruptions += doc.get("exit_class") in _INTERRUPTIONS
    return interruptions, runtime_s
