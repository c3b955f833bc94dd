"""Every Pool setting has an effect: for each field, two pools that differ only in it lead
to different behaviour of the part that reads it. A key that nothing reads is a bug, and a
new field without a probe here fails the walk."""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spotsafe.interrupt import StopKind, StopRequest
from spotsafe.policy import (
    AttemptRecord,
    Auto,
    ExitClass,
    IntervalState,
    Pool,
    RetryPolicy,
    RetryState,
)
from spotsafe.storage import open_store
from spotsafe.supervisor import JobRecord, Supervisor
from spotsafe.supervisor.runner import sigkill_after_s


class Half:
    """An rng that always draws 0.5."""

    def random(self) -> float:
        return 0.5


def attempts(cls: ExitClass, n: int) -> RetryState:
    """`n` attempts of class `cls` in a row, none of which advanced the step (a streak)."""
    code = 1 if cls is ExitClass.CRASH else 75
    return RetryState(attempts=tuple(
        AttemptRecord(attempt=i, exit_class=cls, started_s=0.0, ended_s=1.0, start_step=5,
                      end_step=5, returncode=code)
        for i in range(1, n + 1)
    ))  # fmt: skip


def gives_up(cls: ExitClass) -> Callable[[Pool, Path], Any]:
    """Whether the retry policy gives up after two attempts of `cls`."""
    return lambda pool, _: type(RetryPolicy.from_pool(pool).decide(attempts(cls, 2), rng=Half()))


def delay_after_crashes(n: int) -> Callable[[Pool, Path], Any]:
    """The restart delay after `n` crashes in a row."""
    return lambda pool, _: (
        RetryPolicy.from_pool(pool).decide(attempts(ExitClass.CRASH, n), rng=Half()).after_s
    )


def on_demand_after_two(pool: Pool, _: Path) -> bool:
    state = attempts(ExitClass.PREEMPTED, 2)
    return RetryPolicy.from_pool(pool).decide(state, rng=Half()).on_demand  # type: ignore[union-attr]


def interval_s(pool: Pool, _: Path) -> float:
    state = IntervalState(now_s=0.0, last_save_s=0.0, steps_since_save=0, save_blocking_s=2.0)
    return Auto.from_pool(pool).interval_s(state)


def sigkill_after_sigterm(pool: Pool, _: Path) -> float:
    stop = StopRequest(source="signal:SIGTERM", kind=StopKind.STOP, deadline_s=None,
                       received_s=0.0)  # fmt: skip
    return sigkill_after_s(stop, now_s=0.0, grace_s=pool.grace_s)


def heartbeat_s(pool: Pool, work: Path) -> float:
    return Supervisor(
        store=open_store(str(work / "s")), command=["true"], pool=pool
    ).lease.interval_s


def supervised(pool: Pool, work: Path) -> dict[str, Any]:
    """Run a job that succeeds at once: what its first attempt recorded, and the hook's mark."""
    store = open_store(str(work / "s"))
    sup = Supervisor(store=store, command=[sys.executable, "-c", "pass"], pool=pool,
                     watchers=[], sleep=lambda s: None, rng=random.Random(0),
                     echo=False)  # fmt: skip
    assert sup.run().exit_code == 0
    info = dict(JobRecord.open(store).starts[1].info)
    return {**info, "hook_ran": (work / "hook-ran").exists()}


def reported_cost(pool: Pool, work: Path) -> float | None:
    """What the report says a job that succeeded at once cost (its reader is the report)."""
    from spotsafe.report import account_job

    supervised(pool, work)
    cost = account_job(open_store(str(work / "s"))).cost
    return None if cost is None else cost["spot"]


def hook_ran(pool: Pool, work: Path) -> bool:
    return bool(supervised(pool, work)["hook_ran"])


def attempt_price(pool: Pool, work: Path) -> float | None:
    price: float | None = supervised(pool, work)["price_per_hour"]
    return price


def hung_after_ten_silent_seconds(pool: Pool, _: Path) -> bool:
    """Whether the supervisor's stall judge calls an attempt hung 10 s after its last step."""
    from spotsafe.progress_channel import Progress, RankProgress, StallClock

    stepped = Progress((RankProgress(slot=0, pid=1, first_step_s=0.0, last_step=1,
                                     last_step_s=0.0),))  # fmt: skip
    clock = StallClock.from_pool(pool)
    clock.stalled_s(stepped, now_s=0.0)
    return clock.hung(stepped, now_s=10.0)


def on_demand_hours_to_meet_the_deadline(pool: Pool, _: Path) -> float:
    """What `spotsafe simulate --compare` says the deadline-aware rule spends on on-demand."""
    from spotsafe.simulate import Job, Poisson
    from spotsafe.simulate.compare import compare_pool

    job = Job(work_s=36000.0, checkpoint_s=30.0, restart_s=120.0)
    c = compare_pool(job, Poisson(3600.0), 600.0, pool, trials=50, seed=0)
    return c.results["deadline"].on_demand_h


PRICED = {"spot_price_per_hour": 3600.0, "on_demand_price_per_hour": 7200.0}  # 1 per second
ON_DEMAND_NOW = {"on_demand_after": 0}  # the first attempt already runs on on-demand capacity
A_LONG_STREAK = {"max_failures": 9}

# field -> (value a, value b, what both pools also set, a probe of the reader's behaviour)
PROBES: dict[str, tuple[Any, Any, dict[str, Any], Callable[[Pool, Path], Any]]] = {
    "max_preemptions": (1, 5, {}, gives_up(ExitClass.PREEMPTED)),
    "max_failures": (1, 5, {}, gives_up(ExitClass.CRASH)),
    "max_no_progress": (1, 5, {}, gives_up(ExitClass.NO_PROGRESS)),
    "backoff_initial_s": (1.0, 7.0, {}, delay_after_crashes(1)),
    "backoff_max_s": (20.0, 40.0, A_LONG_STREAK, delay_after_crashes(6)),
    "backoff_multiplier": (2.0, 3.0, {}, delay_after_crashes(2)),
    "jitter": (0.0, 1.0, {}, delay_after_crashes(1)),
    "on_demand_after": (1, 3, {}, on_demand_after_two),
    "max_lost_work_s": (60.0, 600.0, {}, interval_s),
    "mtbi_prior_s": (3600.0, 36000.0, {"max_lost_work_s": 86400.0}, interval_s),
    "grace_s": (5.0, 30.0, {}, sigkill_after_sigterm),
    "lease_ttl_s": (4.0, 40.0, {}, heartbeat_s),
    "on_demand_command": (None, "touch hook-ran", ON_DEMAND_NOW, hook_ran),
    "spot_price_per_hour": (1.0, 2.0, {}, attempt_price),
    "on_demand_price_per_hour": (3.0, 4.0, ON_DEMAND_NOW, attempt_price),
    # Its reader is the Checkpointer: test_keep_last_comes_from_the_pool, below.
    "keep_last": (2, 4, {}, lambda pool, _: pool.keep_last),
    "instances": (1, 3, PRICED, reported_cost),
    "deadline_h": (11.0, 13.0, {}, on_demand_hours_to_meet_the_deadline),
    "max_stall_s": (5.0, 30.0, {}, hung_after_ten_silent_seconds),
}


def test_every_field_has_a_probe() -> None:
    assert sorted(PROBES) == sorted(f.name for f in dataclasses.fields(Pool))


@pytest.mark.parametrize("field", sorted(PROBES))
def test_the_setting_changes_what_its_reader_does(
    field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, shared, probe = PROBES[field]
    base = {"jitter": 0.0, **shared}
    pools = [Pool(**{**base, field: v}) for v in (a, b)]
    seen = []
    for pool in pools:
        work = tmp_path / f"run-{len(seen)}"
        work.mkdir()
        monkeypatch.chdir(work)  # the on-demand hook runs in the working directory
        seen.append(probe(pool, work))
    assert seen[0] != seen[1], f"{field} = {a!r} and {b!r} behave the same: {seen[0]!r}"


def test_the_prices_are_exposed_together() -> None:
    pool = Pool(spot_price_per_hour=1.1, on_demand_price_per_hour=3.67)
    assert pool.prices.per_hour(on_demand=False) == 1.1
    assert pool.prices.per_hour(on_demand=True) == 3.67
    assert pool.prices.savings_fraction == pytest.approx(1 - 1.1 / 3.67)
    assert Pool().prices.savings_fraction is None


def test_keep_last_comes_from_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import spotsafe

    config = tmp_path / "spotsafe.toml"
    config.write_text("[pools.deep]\nkeep_last = 5\n")
    monkeypatch.setenv("SPOTSAFE_POOL", "deep")
    monkeypatch.setenv("SPOTSAFE_CONFIG", str(config))
    state = spotsafe.TrainState(model=torch.nn.Linear(2, 1))
    pooled = spotsafe.Checkpointer(tmp_path / "pooled", events=False)
    given = spotsafe.Checkpointer(tmp_path / "given", keep_last=2, events=False)
    for step in range(1, 8):
        state.step = step
        pooled.save(state)
        given.save(state)
    assert len(pooled.checkpoints()) == 5  # the pool's keep_last
    assert len(given.checkpoints()) == 2  # an explicit keep_last wins over the pool
