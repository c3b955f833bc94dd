"""One writer per store: outside the supervisor, the Checkpointer holds the job's lease.

Two writers on one store destroy each other's checkpoints: each one's retention deletes data
files that the other's incremental manifests still use. Under ``spotsafe run`` the supervisor
holds the store's lease (spotsafe.lease) and fences stale attempts; a script run on its own
takes the same lease before its first save, so a second process writing to the store is
refused with a clear error. The lease is released when the Checkpointer is closed or the
process exits; a writer killed without a chance to release it is stale at once on the same
machine (its pid is gone) and after one TTL elsewhere.

Checkpointers of one process share one claim per store: they are one writer's parts (a
training script restarting its loop, a notebook re-running a cell), and retention never
deletes a file that any committed manifest uses.
"""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass

from spotsafe.errors import LeaseHeld, StorageError
from spotsafe.lease import Lease, LeaseKeeper, read_lease
from spotsafe.storage import Store

log = logging.getLogger("spotsafe")

# The default pool's lease_ttl_s: a writer on a reclaimed VM blocks its successor on another
# machine for at most this long (on the same machine, not at all).
WRITER_LEASE_TTL_S = 60.0


@dataclass(slots=True)
class _Claim:
    keeper: LeaseKeeper
    users: int


_claims: dict[str, _Claim] = {}  # store url -> this process's claim
_lock = threading.Lock()


def claim(store: Store, *, ttl_s: float = WRITER_LEASE_TTL_S) -> None:
    """Take ``store``'s lease for this process (or join this process's claim).

    Raises:
        LeaseHeld: another live process writes to the store, or a supervisor runs a job in it.
    """
    with _lock:
        held = _claims.get(store.url)
        if held is not None and not held.keeper.lost.is_set():
            held.users += 1
            return
        lease = Lease(store, ttl_s=ttl_s)
        try:
            lease.acquire()
        except LeaseHeld as e:
            holder = read_lease(store).holder
            raise LeaseHeld(
                f"{store.url} is in use by another writer (host {holder.get('host')!r}, pid"
                f" {holder.get('pid')}): two writers would prune each other's checkpoints."
                " Stop the other process, give this run its own store, or run both through"
                f" `spotsafe run` ({e})"
            ) from e
        _claims[store.url] = _Claim(keeper=LeaseKeeper(lease).start(), users=1)


def check(store: Store) -> None:
    """Raise when this process lost ``store``'s lease: it must not commit any more."""
    held = _claims.get(store.url)
    if held is not None and held.keeper.lost.is_set():
        raise StorageError(
            f"{store.url}: refusing to commit: this process lost the store's lease"
            f" ({held.keeper.reason}); another writer took the store over",
            retryable=False,
        )


def unclaim(store: Store) -> None:
    """Leave this process's claim; the last one out releases the lease."""
    with _lock:
        held = _claims.get(store.url)
        if held is None:
            return
        held.users -= 1
        if held.users > 0:
            return
        del _claims[store.url]
    _release(held)


def _release(held: _Claim) -> None:
    held.keeper.stop()
    try:
        held.keeper.lease.release()
    except StorageError as e:
        # Without the release marker the next writer waits for the heartbeats to age out
        # (at once on this machine): a delay, never a second writer.
        log.warning("could not release the lease of %s: %s", held.keeper.lease.store.url, e)


@atexit.register
def _release_all() -> None:
    with _lock:
        claims = list(_claims.values())
        _claims.clear()
    for held in claims:
        _release(held)
