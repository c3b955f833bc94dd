"""What the store says about a job's progress, read without torch.

The supervisor starts fast and never imports torch: it reads the store through
``spotsafe.checkpoint.discovery``, the same torch-free code ``Checkpointer.checkpoints()`` uses.

The store is read while the job writes it: a listing can race a prune, a request can be
throttled. `look_again` retries such a read a few times, with the caller's (injected) sleep,
so that one unlucky look never kills the supervisor; a failure that persists still raises,
because "could not read" is never "no progress".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from spotsafe.backoff import Backoff, retry_call
from spotsafe.checkpoint.discovery import discover
from spotsafe.errors import ObjectMissing, StorageError
from spotsafe.storage import Store

__all__ = [
    "LOOKS",
    "LOOK_AGAIN",
    "LOOK_AGAIN_S",
    "FinalState",
    "final_state",
    "look_again",
    "newest_valid_step",
]

log = logging.getLogger("spotsafe")

T = TypeVar("T")

# Pauses between looks at a store that failed to answer: a prune finishes in well under a
# second, a throttling burst or a connection reset in a few. 4 looks, 0.5 + 2 + 5 s apart
# (~7.5 s in all); no jitter: one supervisor looks at its own job's store.
LOOK_AGAIN = Backoff(initial_s=0.5, max_s=5.0, multiplier=4.0, jitter=0.0)
LOOKS = 4
LOOK_AGAIN_S = tuple(LOOK_AGAIN.base_s(n) for n in range(1, LOOKS))  # (0.5, 2.0, 5.0)


def _transient(e: Exception) -> bool:
    # A retryable StorageError (network, throttling), or ObjectMissing: a file or directory
    # deleted between a listing and the next look, because the writer pruned.
    return isinstance(e, StorageError) and (e.retryable or isinstance(e, ObjectMissing))


def look_again(
    read: Callable[[], T],
    *,
    sleep: Callable[[float], object],
    what: str,
    backoff: Backoff = LOOK_AGAIN,
    looks: int = LOOKS,
) -> T:
    """``read()``, looked at again (at most `looks` times in all) when it fails transiently.

    Transient: a retryable `StorageError` (network, throttling) or `ObjectMissing` (a file
    or directory deleted between a listing and the next look: the writer pruned). Any other
    error, and the last failure, propagate. The pauses come from `backoff` through
    spotsafe's one retry loop (`spotsafe.backoff.retry_call`).

    Example:
        >>> looks = iter([ObjectMissing("list x: no such file"), None])
        >>> def read() -> str:
        ...     error = next(looks)
        ...     if error is not None:
        ...         raise error
        ...     return "listed"
        >>> look_again(read, sleep=lambda s: None, what="judge progress")
        'listed'
    """

    def warn(e: Exception, attempt: int, delay_s: float, elapsed_s: float) -> None:
        log.warning("could not %s (%s); looking again in %g s", what, e, delay_s)

    return retry_call(
        lambda _attempt: read(),
        backoff=backoff,
        transient=_transient,
        max_attempts=looks,
        sleep=sleep,
        on_retry=warn,
    )


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
