"""What the store says about a job's progress, read without torch.

The supervisor starts fast and never imports torch: it reads the store through
``spotsafe.checkpoint.discovery``, the same torch-free code ``Checkpointer.checkpoints()`` uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from spotsafe.checkpoint.discovery import discover
from spotsafe.events import read_events
from spotsafe.storage import Store

__all__ = ["FinalState", "clean_stop_recorded", "final_state", "newest_valid_step"]


def newest_valid_step(store: Store, *, job_id: str | None = None) -> int | None:
    """The step of the newest checkpoint that looks valid, or None when there is none.

    Raises StorageError when the store cannot be listed: "unknown" is never "no progress".

    Example:
        >>> from spotsafe.storage import open_store
        >>> newest_valid_step(open_store("memory://spotsafe-progress-doc")) is None
        True
    """
    newest = discover(store, job_id=job_id).newest_valid()
    return None if newest is None else newest.step


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalState:
    """The newest checkpoint's content, minus when, where and by whom it was written."""

    step: int
    epoch: int
    tensors: tuple[tuple[str, tuple[int, ...], str], ...]
    """(dtype, shape, xxh3 of the bytes) of every tensor, in order."""
    tree: str
    """The encoded structure and non-tensor values, as canonical JSON."""


def final_state(store: Store, *, job_id: str | None = None) -> FinalState | None:
    """The content of the newest valid checkpoint, for bit-for-bit comparison of two runs."""
    newest = discover(store, job_id=job_id).newest_valid()
    if newest is None or newest.manifest is None:
        return None
    m = newest.manifest
    return FinalState(
        step=m.step,
        epoch=m.epoch,
        tensors=tuple((t.dtype, tuple(t.shape), t.xxh3) for t in m.tensors),
        tree=json.dumps(m.tree, sort_keys=True, separators=(",", ":")),
    )


def clean_stop_recorded(store: Store, attempt: int) -> bool:
    """Whether attempt `attempt` recorded a clean stop (state flushed on a stop request).

    The Guard writes a ``stop`` event with ``clean: true`` before it exits 75; launchers such
    as torchrun report that exit as 1, so this, not the code, says "preempted".
    """
    return any(
        e.kind == "stop" and e.get("clean") is True for e in read_events(store, attempt=attempt)
    )
