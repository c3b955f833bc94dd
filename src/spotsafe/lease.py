"""One writer per job: a lease in the store, kept alive by heartbeats, with a TTL.

The supervisor holds it for a supervised job; a Checkpointer run without a supervisor holds
it itself, so two writers never share a store. Torch-free and below both.

Layout (create-once objects; only old heartbeats are ever deleted)::

    job/lease/000004/holder.json    epoch 4 taken: by whom (host, pid, machine), when, the TTL
    job/lease/000004/hb-000017.json heartbeat 17 of epoch 4: the holder's wall time
    job/lease/000004/released.json  the holder let go on a clean exit: take over at once

Taking the lease means *creating* the next epoch's ``holder.json`` (`Store.create_exclusive`):
of two supervisors racing, exactly one succeeds. A supervisor that finds a newer epoch than
its own has lost the job and must stop its child.

Whether a lease is alive is decided by `judge`, a pure function of what two looks at the
store showed: a new heartbeat means alive (refuse); a released lease, a heartbeat older than
the TTL, or no new heartbeat for a whole TTL of our own waiting means stale (take over). On
the same machine and pid namespace a dead holder pid is stale at once, a live one alive.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# LeaseLost lives in spotsafe.errors with the rest of the tree; imported here so that
# ``from spotsafe.lease import LeaseLost`` keeps working.
from spotsafe.errors import ConfigError, LeaseHeld, LeaseLost, ObjectMissing, StorageError
from spotsafe.policy.pools import MAX_LEASE_TTL_S
from spotsafe.storage import Store

__all__ = [
    "LEASE_DIR",
    "MAX_TTL_S",
    "Lease",
    "LeaseLost",
    "LeaseView",
    "Verdict",
    "judge",
    "machine_id",
    "read_lease",
]

log = logging.getLogger("spotsafe")

LEASE_DIR = "job/lease"
HEARTBEATS_PER_TTL = 4  # a holder misses three heartbeats before anyone may take over
# The pools' bound on lease_ttl_s (a day). It also keeps the heartbeat thread's wait finite:
# Event.wait(1e300 / 4) raises OverflowError, which killed the thread.
MAX_TTL_S = MAX_LEASE_TTL_S
_ENTRY_RE = re.compile(r"^(\d{6})/(holder|released|hb-(\d{6}))\.json$")


def machine_id() -> str:
    """This machine's boot and pid namespace: where a pid means the same process."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            parts.append(socket.gethostname())
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("")
    return ":".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseView:
    """The lease as one listing of the store showed it."""

    epoch: int | None
    """The newest epoch, or None when the job never had a supervisor."""
    holder: dict[str, Any]
    """The newest epoch's holder.json."""
    released: bool = False
    beat: int = 0
    """The newest heartbeat's number (0: none yet)."""
    beat_wall_s: float | None = None
    """The holder's wall time at its newest heartbeat (or when it took the lease)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What `judge` decided: ``free`` (take it), ``alive`` (refuse) or ``wait`` (look again)."""

    action: str
    reason: str


def judge(
    first: LeaseView,
    now: LeaseView,
    *,
    waited_s: float,
    wall_s: float,
    ttl_s: float,
    holder_alive: bool | None = None,
) -> Verdict:
    """Decide from two looks at the lease whether to take it, refuse, or look again.

    Args:
        first: the lease at the first look.
        now: the lease at this look.
        waited_s: seconds since the first look, on our own monotonic clock.
        wall_s: our wall clock now (compared with the holder's heartbeat time).
        ttl_s: the lease's TTL.
        holder_alive: whether the holder's pid lives, when it runs on this machine; None
            when that cannot be known (another machine).

    Example:
        >>> v = LeaseView(epoch=1, holder={}, beat=3, beat_wall_s=100.0)
        >>> judge(v, v, waited_s=0.0, wall_s=200.0, ttl_s=60.0).action
        'free'
    """
    if now.epoch is None:
        return Verdict(action="free", reason="no lease yet")
    if now.released:
        return Verdict(action="free", reason=f"epoch {now.epoch} was released")
    if now.epoch != first.epoch or now.beat > first.beat:
        return Verdict(action="alive", reason="the holder renewed its lease while we watched")
    if holder_alive is True:
        return Verdict(action="alive", reason="the holder's process runs on this machine")
    if holder_alive is False:
        return Verdict(action="free", reason="the holder's process on this machine is gone")
    if now.beat_wall_s is not None and wall_s - now.beat_wall_s > ttl_s:
        age = wall_s - now.beat_wall_s
        return Verdict(action="free", reason=f"last heartbeat {age:.0f} s ago (TTL {ttl_s:g} s)")
    if waited_s >= ttl_s:
        return Verdict(action="free", reason=f"no heartbeat for {waited_s:.0f} s (TTL {ttl_s:g} s)")
    return Verdict(action="wait", reason="watching for a heartbeat")


def read_lease(store: Store) -> LeaseView:
    """The newest epoch of the lease, from one listing (and two small reads)."""
    for _ in range(5):  # a heartbeat may be deleted between the listing and the read
        epochs: dict[int, dict[str, int]] = {}
        for path in store.list(LEASE_DIR):
            rel = path[len(LEASE_DIR) + 1 :] if path.startswith(LEASE_DIR + "/") else path
            m = _ENTRY_RE.match(rel)
            if m is None:
                continue
            kinds = epochs.setdefault(int(m.group(1)), {})
            kinds[m.group(2)] = int(m.group(3)) if m.group(3) else 0
        with_holder = [e for e, kinds in epochs.items() if "holder" in kinds]
        if not with_holder:
            return LeaseView(epoch=None, holder={})
        epoch = max(with_holder)
        kinds = epochs[epoch]
        beats = [k for k in kinds if k.startswith("hb-")]
        try:
            holder = json.loads(store.read_bytes(f"{LEASE_DIR}/{epoch:06d}/holder.json"))
            beat, beat_wall_s = 0, float(holder.get("acquired_wall_s", 0.0))
            if beats:
                newest = max(beats)
                beat = kinds[newest]
                doc = json.loads(store.read_bytes(f"{LEASE_DIR}/{epoch:06d}/{newest}.json"))
                beat_wall_s = float(doc["wall_s"])
        except ObjectMissing:
            continue
        except (ValueError, KeyError, TypeError) as e:
            raise StorageError(f"{store.url}/{LEASE_DIR}: garbled lease ({e})") from e
        return LeaseView(
            epoch=epoch,
            holder=holder,
            released="released" in kinds,
            beat=beat,
            beat_wall_s=beat_wall_s,
        )
    raise StorageError(f"{store.url}/{LEASE_DIR}: the lease kept changing while read")


def _pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process here (a zombie, killed but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class Lease:
    """This supervisor's claim on a job: acquire, heartbeat, release.

    Args:
        store: the job's store.
        ttl_s: seconds the lease stays valid without a heartbeat (the pool's ``lease_ttl_s``;
            > 0 and at most `MAX_TTL_S`, a day).
        clock / wall_clock / sleep: injectable time.

    Raises:
        ConfigError: `ttl_s` is not a finite number in (0, MAX_TTL_S].

    Example:
        >>> from spotsafe.storage import open_store
        >>> lease = Lease(open_store("memory://spotsafe-lease-doc"), ttl_s=30.0)
        >>> lease.acquire()
        1
        >>> lease.release()
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, (int, float))
            or not math.isfinite(ttl_s)
            or not 0 < ttl_s <= MAX_TTL_S
        ):
            raise ConfigError(f"lease_ttl_s = {ttl_s!r}: must be a number > 0 and <= {MAX_TTL_S:g}")
        self.store = store
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.epoch: int | None = None
        self.taken_over: LeaseView | None = None
        """The stale lease this one replaced: its last heartbeat dates a dead holder's end."""
        self.token = secrets.token_hex(8)
        self.machine = machine_id()
        self._beat = 0
        self._lock = threading.Lock()

    @property
    def interval_s(self) -> float:
        """Seconds between heartbeats."""
        return self.ttl_s / HEARTBEATS_PER_TTL

    def _holder_alive(self, view: LeaseView) -> bool | None:
        holder = view.holder
        if holder.get("machine") != self.machine or not isinstance(holder.get("pid"), int):
            return None
        if holder["pid"] == os.getpid():
            return None  # our own old lease (a test, or a restarted process with our pid)
        return _pid_alive(holder["pid"])

    def acquire(self) -> int:
        """Take the lease, waiting up to one TTL for a silent holder; returns the epoch.

        Raises:
            LeaseHeld: another supervisor holds the lease and is alive.
        """
        first = read_lease(self.store)
        t0 = self.clock()
        poll_s = max(min(self.interval_s / 2, 1.0), 0.01)
        while True:
            view = read_lease(self.store)
            verdict = judge(
                first,
                view,
                waited_s=self.clock() - t0,
                wall_s=self.wall_clock(),
                ttl_s=self.ttl_s,
                holder_alive=self._holder_alive(view),
            )
            if verdict.action == "alive":
                raise LeaseHeld(self._held_message(view, verdict.reason))
            if verdict.action == "free":
                epoch = (view.epoch or 0) + 1
                if self._create(epoch):
                    self.taken_over = view if view.epoch is not None else None
                    if view.epoch is not None:
                        log.warning(
                            "took over the job's lease (epoch %d): %s", epoch, verdict.reason
                        )
                        self._clean(view.epoch)
                    return epoch
                raise LeaseHeld(
                    self._held_message(read_lease(self.store), "another supervisor took it first")
                )
            self.sleep(poll_s)

    def _held_message(self, view: LeaseView, reason: str) -> str:
        h = view.holder
        return (
            f"{self.store.url}: the job is run by another supervisor (host {h.get('host')!r}, "
            f"pid {h.get('pid')}, lease epoch {view.epoch}): {reason}. Stop it first, or wait "
            f"until its lease expires ({self.ttl_s:g} s without a heartbeat) and run again"
        )

    def _create(self, epoch: int) -> bool:
        doc = {
            "epoch": epoch,
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "machine": self.machine,
            "ttl_s": self.ttl_s,
            "acquired_wall_s": self.wall_clock(),
        }
        path = f"{LEASE_DIR}/{epoch:06d}/holder.json"
        if not self.store.create_exclusive(path, json.dumps(doc).encode()):
            return False
        self.epoch = epoch
        self._beat = 0
        return True

    def _clean(self, old_epoch: int) -> None:
        """Delete the old epochs' heartbeats; their holder.json stays as history."""
        stale = [
            p
            for p in self.store.list(LEASE_DIR)
            if "/hb-" in p and int(p.rsplit("/", 2)[-2]) <= old_epoch
        ]
        self.store.delete(f"{LEASE_DIR}/{p}" if not p.startswith(LEASE_DIR) else p for p in stale)

    def heartbeat(self) -> None:
        """Renew the lease; raises LeaseLost when a newer epoch exists."""
        with self._lock:
            epoch = self.epoch
            if epoch is None:
                raise LeaseLost("heartbeat without a lease")
            view = read_lease(self.store)
            if view.epoch != epoch:
                raise LeaseLost(
                    f"{self.store.url}: another supervisor took the job over (lease epoch "
                    f"{view.epoch}, ours {epoch})"
                )
            self._beat += 1
            doc = {"wall_s": self.wall_clock(), "token": self.token}
            base = f"{LEASE_DIR}/{epoch:06d}"
            self.store.write_bytes(f"{base}/hb-{self._beat:06d}.json", json.dumps(doc).encode())
            if self._beat > 1:
                self.store.delete([f"{base}/hb-{self._beat - 1:06d}.json"])

    def release(self) -> None:
        """Let go at a clean exit, so that the next supervisor starts without waiting."""
        with self._lock:
            if self.epoch is None:
                return
            base = f"{LEASE_DIR}/{self.epoch:06d}"
            self.store.create_exclusive(f"{base}/released.json", b"{}")
            self.epoch = None


class LeaseKeeper:
    """Heartbeats a lease from a daemon thread; `lost` is set when it cannot keep it.

    The thread must not die on a storage error (a network hiccup would end the job), so it
    catches per heartbeat, logs, and gives up the lease only when a whole TTL passed without
    a successful heartbeat or a newer epoch appeared.
    """

    def __init__(self, lease: Lease, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease = lease
        self.clock = clock
        self.lost = threading.Event()
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spotsafe-lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_ok = self.clock()
        while not self._stop.wait(self.lease.interval_s):
            try:
                self.lease.heartbeat()
                last_ok = self.clock()
            except LeaseLost as e:
                self.reason = str(e)
                self.lost.set()
                return
            except StorageError as e:
                log.warning("lease heartbeat failed: %s", e)
                if self.clock() - last_ok > self.lease.ttl_s:
                    self.reason = f"no heartbeat reached the store for a TTL: {e}"
                    self.lost.set()
                    return
