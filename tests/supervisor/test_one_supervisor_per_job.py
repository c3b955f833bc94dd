"""One supervisor per job: a second one is refused while the first lives and takes over
once it is dead; the dead one's child dies with it; the record continues where it stopped."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from spotsafe.errors import ConfigError, LeaseHeld
from spotsafe.lease import LeaseKeeper, LeaseView
from spotsafe.policy import ExitClass
from spotsafe.storage import open_store
from spotsafe.supervisor import JobRecord, Lease, LeaseLost, judge
from tests.supervisor.conftest import CHILD, write_pool


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def child_pid(store: Path, attempt: int) -> int:
    path = store / "job" / "attempts" / f"{attempt:06d}-child.json"
    wait_for(path.exists)
    return int(json.loads(path.read_text())["pid"])


def test_second_supervisor_is_refused_then_takes_over_when_the_first_dies(
    tmp_path: Path, spawn_supervisor: Callable[..., object]
) -> None:
    store, config = tmp_path / "s", write_pool(tmp_path / "c.toml")
    first = spawn_supervisor(store, config, *CHILD, "ckpt:7,grandchild,hang", "exit:0")
    assert first.stdout is not None
    wait_for(lambda: "hanging" in first.stdout.readline())
    pid = child_pid(store, 1)

    second = spawn_supervisor(store, config, *CHILD, "exit:0")
    _, err = second.communicate(timeout=30)
    assert second.returncode == 75  # LeaseHeld is retryable: try again once the first is gone
    assert "the job is run by another supervisor" in err and f"pid {first.pid}" in err

    first.kill()  # SIGKILL: no handler runs, no lease release
    first.wait()
    wait_for(lambda: not alive(pid), timeout_s=2.0)  # the child died with its supervisor

    third = spawn_supervisor(store, config, *CHILD, "exit:0")
    out, err = third.communicate(timeout=30)
    assert third.returncode == 0, err
    record = JobRecord.open(open_store(str(store)))
    first_attempt = record.retry_state().attempts[0]
    # Cut off with its supervisor: no exit recorded, so unclean, with the progress it made.
    assert first_attempt.exit_class is ExitClass.UNCLEAN and first_attempt.returncode is None
    assert first_attempt.end_step == 7
    assert record.end_docs[1]["recovered"] is True
    assert [a.attempt for a in record.retry_state().attempts] == [1, 2]
    assert "attempt 2: exit:0" in out


def test_the_whole_process_group_dies_with_a_killed_supervisor(
    tmp_path: Path, spawn_supervisor: Callable[..., object]
) -> None:
    # PR_SET_PDEATHSIG reaches the direct child only; the watchdog kills the grandchild
    # (think torchrun's workers) by process group.
    store, config = tmp_path / "s", write_pool(tmp_path / "c.toml")
    sup = spawn_supervisor(store, config, *CHILD, "grandchild,hang")
    assert sup.stdout is not None
    grandchild = 0
    for line in sup.stdout:
        if line.startswith("grandchild "):
            grandchild = int(line.split()[1])
        if line.startswith("hanging"):
            break
    child = child_pid(store, 1)
    assert alive(child) and alive(grandchild)
    sup.kill()
    sup.wait()
    wait_for(lambda: not alive(child) and not alive(grandchild), timeout_s=3.0)


def test_sigterm_is_forwarded_and_the_supervisor_exits_75(
    tmp_path: Path, spawn_supervisor: Callable[..., object]
) -> None:
    store, config = tmp_path / "s", write_pool(tmp_path / "c.toml")
    sup = spawn_supervisor(store, config, *CHILD, "term75,ckpt:3,hang")
    assert sup.stdout is not None
    wait_for(lambda: "hanging" in sup.stdout.readline())
    sup.terminate()
    _, err = sup.communicate(timeout=30)
    assert sup.returncode == 75, err
    doc = JobRecord.open(open_store(str(store))).end_docs[1]
    assert doc["exit_class"] == "preempted" and doc["returncode"] == 75
    assert doc["stopped_by"] == "signal:SIGTERM"
    # Stopped on request, the lease is released: the next supervisor starts at once.
    assert (store / "job" / "lease" / "000001" / "released.json").exists()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, spawn_supervisor: Callable[..., object]
) -> None:
    store, config = tmp_path / "s", write_pool(tmp_path / "c.toml", grace_s=0.3)
    sup = spawn_supervisor(store, config, *CHILD, "ckpt:3,ignoreterm,hang")
    assert sup.stdout is not None
    wait_for(lambda: "hanging" in sup.stdout.readline())
    t0 = time.monotonic()
    sup.terminate()
    sup.communicate(timeout=30)
    assert time.monotonic() - t0 >= 0.3
    doc = JobRecord.open(open_store(str(store))).end_docs[1]
    assert doc["returncode"] == -9 and doc["exit_class"] == "unclean"


# ---------------------------------------------------------------- the lease, in-process


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep: Callable[[], None] = lambda: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep()


def test_a_silent_lease_on_another_machine_is_taken_after_one_ttl(memory_url: str) -> None:
    store, t = open_store(memory_url), FakeTime()
    holder = Lease(store, ttl_s=60.0, clock=t.clock, wall_clock=t.clock, sleep=t.sleep)
    assert holder.acquire() == 1
    holder.heartbeat()
    taker = Lease(store, ttl_s=60.0, clock=t.clock, wall_clock=lambda: 0.0, sleep=t.sleep)
    taker.machine = "another machine"  # the holder's pid means nothing here
    start = t.now
    assert taker.acquire() == 2  # wall clocks disagree wildly: our own waiting decides
    assert 60.0 <= t.now - start <= 70.0
    with pytest.raises(LeaseLost, match="took the job over"):
        holder.heartbeat()  # the old holder learns it lost the job at its next heartbeat


def test_a_lease_that_keeps_beating_is_refused(memory_url: str) -> None:
    store, t = open_store(memory_url), FakeTime()
    holder = Lease(store, ttl_s=60.0, clock=t.clock, wall_clock=t.clock, sleep=t.sleep)
    holder.acquire()
    taker = Lease(store, ttl_s=60.0, clock=t.clock, wall_clock=t.clock, sleep=t.sleep)
    taker.machine = "another machine"
    t.on_sleep = holder.heartbeat
    with pytest.raises(LeaseHeld, match="renewed its lease"):
        taker.acquire()
    assert t.now - 1000.0 < 60.0


def test_judge_decides_from_two_looks() -> None:
    a = LeaseView(epoch=3, holder={}, beat=5, beat_wall_s=100.0)
    beat = LeaseView(epoch=3, holder={}, beat=6, beat_wall_s=110.0)
    gone = LeaseView(epoch=3, holder={}, beat=5, beat_wall_s=100.0, released=True)
    kw = {"wall_s": 120.0, "ttl_s": 60.0}
    assert judge(a, a, waited_s=0.0, **kw).action == "wait"
    assert judge(a, beat, waited_s=1.0, **kw).action == "alive"
    assert judge(a, gone, waited_s=0.0, **kw).action == "free"
    assert judge(a, a, waited_s=60.0, **kw).action == "free"
    assert judge(a, a, waited_s=0.0, wall_s=161.0, ttl_s=60.0).action == "free"
    assert judge(a, a, waited_s=0.0, holder_alive=True, **kw).action == "alive"
    assert judge(a, a, waited_s=0.0, holder_alive=False, **kw).action == "free"


@pytest.mark.parametrize("ttl_s", [1e300, math.inf, math.nan, 0.0, -1.0, 86400.5])
def test_a_lease_ttl_past_its_bounds_is_refused(tmp_path: Path, ttl_s: float) -> None:
    # lease_ttl_s = 1e300 was accepted, and the heartbeat thread died of OverflowError in
    # Event.wait(ttl / 4): the lease then went stale under a live supervisor.
    with pytest.raises(ConfigError, match=r"^lease_ttl_s = .*: must be a number > 0 and <= 86400"):
        Lease(open_store(str(tmp_path / "s")), ttl_s=ttl_s)


def test_a_lease_at_its_bound_keeps_heartbeating(tmp_path: Path) -> None:
    lease = Lease(open_store(str(tmp_path / "s")), ttl_s=86400.0)
    lease.acquire()
    keeper = LeaseKeeper(lease).start()
    time.sleep(0.05)
    assert keeper._thread.is_alive() and not keeper.lost.is_set()
    keeper.stop()
    lease.release()
