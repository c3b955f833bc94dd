"""The job record's attempt numbers, and the fence that keeps a stale attempt from committing.

Torch-free and below both users: the Checkpointer checks the fence before each commit, the
supervisor (spotsafe.supervisor.job) writes the records. Layout::

    job/attempts/000003-start.json     written before attempt 3's child starts
    job/attempts/000003-end.json       written when it ended
"""

from __future__ import annotations

import json
import math
import re

from spotsafe.errors import StaleAttempt
from spotsafe.storage import Store

JOB_DIR = "job"
ATTEMPTS_DIR = f"{JOB_DIR}/attempts"
_ATTEMPT_RE = re.compile(r"^(\d{6})-(start|end)\.json$")


def attempt_files(store: Store) -> dict[int, set[str]]:
    """Attempt number -> which of its records exist ({"start"}, {"start", "end"})."""
    out: dict[int, set[str]] = {}
    for path in store.list(ATTEMPTS_DIR):
        m = _ATTEMPT_RE.match(path.rsplit("/", 1)[-1])
        if m:
            out.setdefault(int(m.group(1)), set()).add(m.group(2))
    return out


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
            doc = json.loads(store.read_bytes(f"{ATTEMPTS_DIR}/{n:06d}-end.json"))
            duration_s = float(doc["ended_s"]) - float(doc["started_s"])
        except (ValueError, KeyError, TypeError):
            continue
        if not math.isfinite(duration_s):
            continue  # garbled ("1e999"): an infinite run time would hide every interruption
        runtime_s += max(0.0, duration_s)
        interruptions += doc.get("exit_class") in _INTERRUPTIONS
    return interruptions, runtime_s
