"""What a running supervisor shows: one status value, and the one line that says it.

The supervisor publishes a `RunStatus` as it waits on its child (`Supervisor.status`, replaced
whole, so a reader on another thread always sees one consistent value); ``spotsafe run`` shows
it as a live line on a terminal or as a periodic log line otherwise (`spotsafe.cli.run`).
Torch-free and rich-free: `format_status` is plain text.

Example:
    >>> s = RunStatus(job_id="llama-ft", phase=Phase.RUNNING, attempt=3, step=1250,
    ...               checkpoint_step=1200, checkpoint_s=940.0, next_save_s=1120.0,
    ...               interruptions=2)
    >>> format_status(s, now_s=1000.0)
    'attempt 3 · step 1250 · checkpoint 1200 (1m00s ago) · next in 2m00s · 2 interruptions'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Phase", "RunStatus", "format_duration", "format_status"]


class Phase(enum.Enum):
    """What the supervisor is doing."""

    STARTING = "starting"  # the attempt runs, no training step yet (imports, restore)
    RUNNING = "running"  # training steps come in
    STOPPING = "stopping"  # a stop was forwarded (SIGTERM), waiting for the child's exit
    HUNG = "hung"  # no step for max_stall_s: stopping the attempt
    WAITING = "waiting"  # backoff before the next attempt
    ENDED = "ended"  # the attempt ended (`RunStatus.ended` says how)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStatus:
    """One look at a supervised job. Times are wall-clock seconds since the epoch."""

    job_id: str
    """The job."""
    phase: Phase
    """What the supervisor is doing."""
    attempt: int | None = None
    """The running (or, while waiting, the next) attempt's number."""
    step: int | None = None
    """The furthest training step of the attempt; None before its first."""
    checkpoint_step: int | None = None
    """The newest checkpoint's step (this attempt's newest commit, else where it started)."""
    checkpoint_s: float | None = None
    """When that checkpoint was committed, when known."""
    next_save_s: float | None = None
    """When the next checkpoint is due, when the interval counts time."""
    next_save_step: int | None = None
    """The step at which it is due, when the interval counts steps."""
    interruptions: int = 0
    """Attempts of this job that ended in an interruption so far."""
    stalled_s: float | None = None
    """Seconds since the attempt's last sign of life (after start-up)."""
    retry_at_s: float | None = None
    """While waiting: when the next attempt starts."""
    ended: str | None = None
    """Once the attempt ended: its exit class (``success``, ``preempted``, ``hung``, ...)."""


def format_duration(seconds: float) -> str:
    """A short duration: ``45s``, ``2m05s``, ``3h20m``, ``2d04h``.

    Example:
        >>> format_duration(125.4), format_duration(12000), format_duration(-3)
        ('2m05s', '3h20m', '0s')
    """
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_status(status: RunStatus, *, now_s: float) -> str:
    """The status as one line, the parts that are known, separated by ``·``.

    Example:
        >>> format_status(RunStatus(job_id="j", phase=Phase.WAITING, attempt=2,
        ...                         retry_at_s=130.0, interruptions=1), now_s=100.0)
        'attempt 2 in 30s · 1 interruption'
    """
    s = status
    parts: list[str] = []
    if s.phase is Phase.WAITING:
        when = "" if s.retry_at_s is None else f" in {format_duration(s.retry_at_s - now_s)}"
        parts.append(f"attempt {s.attempt}{when}")
    elif s.phase is Phase.ENDED:
        parts.append(f"attempt {s.attempt} ended {s.ended}")
        if s.step is not None:
            parts.append(f"step {s.step}")
    else:
        parts.append(f"attempt {s.attempt}")
        if s.step is None:
            parts.append("starting" if s.phase is Phase.STARTING else s.phase.value)
        else:
            parts.append(f"step {s.step}")
        if s.phase in (Phase.STOPPING, Phase.HUNG) and s.step is not None:
            parts.append(s.phase.value)
    if s.checkpoint_step is not None:
        age = "" if s.checkpoint_s is None else f" ({format_duration(now_s - s.checkpoint_s)} ago)"
        parts.append(f"checkpoint {s.checkpoint_step}{age}")
    elif s.phase is not Phase.WAITING:
        parts.append("no checkpoint yet")
    if s.phase in (Phase.RUNNING, Phase.STARTING):
        if s.next_save_s is not None:
            parts.append(f"next in {format_duration(s.next_save_s - now_s)}")
        elif s.next_save_step is not None:
            parts.append(f"next at step {s.next_save_step}")
    if s.phase is Phase.RUNNING and s.stalled_s is not None and s.stalled_s >= 60:
        parts.append(f"no step for {format_duration(s.stalled_s)}")
    n = s.interruptions
    parts.append(f"{n} interruption{'' if n == 1 else 's'}")
    return " · ".join(parts)
