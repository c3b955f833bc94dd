"""Checkpoint interval policies as pure functions: formulas, caps, floors, first save."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spotsafe.errors import ConfigError
from spotsafe.policy.interval import (
    Auto,
    EverySeconds,
    EverySteps,
    IntervalState,
    MaxLostWork,
    SaveNow,
    Wait,
    async_interval_s,
    daly_interval_s,
    mtbi_estimate,
    young_interval_s,
)


def state(**kw: float | int | None) -> IntervalState:
    base: dict[str, float | int | None] = {"now_s": 0.0, "last_save_s": 0.0, "steps_since_save": 0}
    base.update(kw)
    return IntervalState(**base)


# Hand-computed: sqrt(2CM) · [1 + sqrt(C/2M)/3 + (C/2M)/9] − C.
#   C=2,  M=3600:  sqrt(14400)=120;   C/2M=1/3600, sqrt=1/60;  120·(1+1/180+1/32400) − 2
#   C=50, M=10000: sqrt(1e6)=1000;    C/2M=1/400,  sqrt=1/20;  1000·(1+1/60+1/3600) − 50
#   C=8,  M=16:    sqrt(256)=16;      C/2M=1/4,    sqrt=1/2;   16·(1+1/6+1/36) − 8
@pytest.mark.parametrize(
    ("c_s", "m_s", "expected_s"),
    [
        (2.0, 3600.0, 120.0 * (1 + 1 / 180 + 1 / 32400) - 2.0),  # 118.6704
        (50.0, 10_000.0, 1000.0 * (1 + 1 / 60 + 1 / 3600) - 50.0),  # 966.9444
        (8.0, 16.0, 16.0 * (1 + 1 / 6 + 1 / 36) - 8.0),  # 11.1111
    ],
)
def test_daly_matches_hand_computed_values(c_s: float, m_s: float, expected_s: float) -> None:
    assert daly_interval_s(c_s, m_s) == pytest.approx(expected_s, rel=1e-12)


def test_daly_numbers_written_out() -> None:
    assert daly_interval_s(2.0, 3600.0) == pytest.approx(118.6704, abs=1e-4)
    assert daly_interval_s(50.0, 10_000.0) == pytest.approx(966.9444, abs=1e-4)


def test_daly_is_m_when_a_checkpoint_costs_twice_the_mtbi_or_more() -> None:
    assert daly_interval_s(200.0, 100.0) == 100.0
    assert daly_interval_s(200.0, 99.0) == 99.0


def test_young_is_sqrt_2cm_and_daly_is_close_to_it_for_cheap_checkpoints() -> None:
    assert young_interval_s(2.0, 3600.0) == pytest.approx(120.0)
    # For C << M the higher-order terms vanish: Daly -> Young - C.
    assert daly_interval_s(0.01, 36_000.0) == pytest.approx(
        young_interval_s(0.01, 36_000.0) - 0.01, rel=1e-3
    )


@pytest.mark.parametrize(("c_s", "m_s"), [(-1.0, 10.0), (1.0, 0.0), (math.nan, 10.0), (1.0, -5.0)])
def test_formulas_reject_meaningless_inputs(c_s: float, m_s: float) -> None:
    with pytest.raises(ConfigError):
        daly_interval_s(c_s, m_s)
    with pytest.raises(ConfigError):
        young_interval_s(c_s, m_s)


def test_every_steps_counts_steps() -> None:
    policy = EverySteps(n=100)
    assert policy.decide(state(steps_since_save=99)) == Wait(remaining_steps=1)
    assert isinstance(policy.decide(state(steps_since_save=100)), SaveNow)
    with pytest.raises(ConfigError, match="n = 0"):
        EverySteps(n=0)


def test_every_seconds_saves_once_the_interval_passed() -> None:
    policy = EverySeconds(interval_s=60.0)
    assert policy.decide(state(now_s=59.0)) == Wait(remaining_s=1.0)
    assert isinstance(policy.decide(state(now_s=60.0)), SaveNow)
    with pytest.raises(ConfigError, match="interval_s"):
        EverySeconds(interval_s=0.0)


def test_max_lost_work_saves_at_the_last_boundary_inside_the_budget() -> None:
    # Budget 600 s; C=5 s, P=35 s: saves must start within 560 s; steps take 10 s.
    policy = MaxLostWork(max_lost_work_s=600.0)
    measured = {"mean_step_s": 10.0, "save_blocking_s": 5.0, "persist_s": 35.0}
    assert policy.interval_s(state(**measured)) == 560.0
    assert policy.decide(state(now_s=549.0, **measured)) == Wait(remaining_s=1.0)
    # At 551 s the next boundary (561 s) would pass 560 s: save now.
    assert isinstance(policy.decide(state(now_s=551.0, **measured)), SaveNow)


def test_max_lost_work_never_saves_sooner_than_the_persist_time() -> None:
    # C + P = 700 s exceed the 600 s budget; saving sooner than P would only queue saves.
    policy = MaxLostWork(max_lost_work_s=600.0)
    measured = {"save_blocking_s": 100.0, "persist_s": 600.0, "mean_step_s": 1.0}
    assert policy.decide(state(now_s=599.0, **measured)) == Wait(remaining_s=1.0)
    assert isinstance(policy.decide(state(now_s=600.0, **measured)), SaveNow)
    assert policy.interval_s(state(**measured)) == 600.0


def test_auto_uses_daly_plus_c_between_save_starts() -> None:
    policy = Auto(max_lost_work_s=3600.0, mtbi_prior_s=3600.0)
    measured = {"save_blocking_s": 2.0, "persist_s": 10.0, "mean_step_s": 0.5}
    expected = daly_interval_s(2.0, 3600.0) + 2.0  # 120.6704 s
    assert policy.interval_s(state(**measured)) == pytest.approx(expected)
    assert isinstance(policy.decide(state(now_s=120.0, **measured)), Wait)
    assert isinstance(policy.decide(state(now_s=120.7, **measured)), SaveNow)


def test_auto_prefers_the_observed_mtbi_over_its_prior() -> None:
    policy = Auto(max_lost_work_s=1e6, mtbi_prior_s=3600.0)
    observed = state(save_blocking_s=2.0, mtbi_s=4 * 3600.0)
    assert policy.interval_s(observed) == pytest.approx(daly_interval_s(2.0, 14_400.0) + 2.0)


def test_auto_is_capped_by_the_lost_work_budget() -> None:
    # Daly for C=60 s, M=4 h is ~1.3e3 s; the budget of 600 s allows 600 - 60 - 40 = 500 s.
    policy = Auto(max_lost_work_s=600.0, mtbi_prior_s=4 * 3600.0)
    measured = {"save_blocking_s": 60.0, "persist_s": 40.0, "mean_step_s": 1.0}
    assert daly_interval_s(60.0, 4 * 3600.0) > 1000.0
    assert policy.interval_s(state(**measured)) == 500.0
    assert isinstance(policy.decide(state(now_s=499.5, **measured)), SaveNow)
    assert isinstance(policy.decide(state(now_s=498.0, **measured)), Wait)


def test_auto_persist_floor_wins_over_daly_and_cap() -> None:
    # Cheap blocking (0.05 s) but a slow persist (900 s): the previous save is durable only
    # C + P = 900.05 s after it started; saving sooner would queue saves.
    policy = Auto(max_lost_work_s=600.0, mtbi_prior_s=3600.0, min_interval_s=0.0)
    measured = {"save_blocking_s": 0.05, "persist_s": 900.0, "mean_step_s": 1.0}
    assert policy.interval_s(state(**measured)) == 900.05
    wait = policy.decide(state(now_s=900.0, **measured))
    assert isinstance(wait, Wait) and wait.remaining_s == pytest.approx(0.05)
    assert isinstance(policy.decide(state(now_s=900.05, **measured)), SaveNow)


def test_auto_aims_for_the_asynchronous_optimum_the_simulator_checks() -> None:
    """max(C + P, Daly): one function, in policy.interval, used by Auto, simulate and doctor."""
    from spotsafe.simulate import theory

    assert theory.async_interval_s is async_interval_s
    policy = Auto(max_lost_work_s=86400.0, mtbi_prior_s=7200.0)
    for c, p in ((10.0, 600.0), (10.0, 120.0), (60.0, 0.0)):
        measured = {"save_blocking_s": c, "persist_s": p, "mean_step_s": 1.0}
        best = async_interval_s(checkpoint_s=c, persist_s=p, mtbi_s=7200.0)
        assert policy.interval_s(state(**measured)) == best
        assert best == max(c + p, daly_interval_s(c, 7200.0) + c)
    # P bounds the first (√(2·10·7200) = 379 s < C + P = 610 s), Daly the others.
    assert async_interval_s(checkpoint_s=10.0, persist_s=600.0, mtbi_s=7200.0) == 610.0
    with pytest.raises(ConfigError, match=r"persist_s = -1\.0"):
        async_interval_s(checkpoint_s=1.0, persist_s=-1.0, mtbi_s=7200.0)


def test_auto_min_interval_stops_a_tiny_c_from_saving_every_few_seconds() -> None:
    policy = Auto(max_lost_work_s=3600.0, mtbi_prior_s=3600.0, min_interval_s=30.0)
    assert daly_interval_s(0.001, 3600.0) < 3.0
    assert policy.interval_s(state(save_blocking_s=0.001)) == 30.0


def test_auto_saves_early_to_measure_c_before_the_first_save() -> None:
    policy = Auto(max_lost_work_s=1800.0, first_save_s=300.0)
    decision = policy.decide(state(now_s=299.0, mean_step_s=0.1))
    assert decision == Wait(remaining_s=pytest.approx(1.0))
    saved = policy.decide(state(now_s=300.0, mean_step_s=0.1))
    assert isinstance(saved, SaveNow)
    assert "first-save" in saved.reason
    # A budget shorter than the first-save time still wins.
    tight = Auto(max_lost_work_s=120.0, first_save_s=300.0)
    assert isinstance(tight.decide(state(now_s=119.5, mean_step_s=1.0)), SaveNow)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lost_work_s": 0.0},
        {"max_lost_work_s": math.inf},
        {"max_lost_work_s": 60.0, "mtbi_prior_s": -1.0},
        {"max_lost_work_s": 60.0, "min_interval_s": -1.0},
        {"max_lost_work_s": 60.0, "first_save_s": 0.0},
    ],
)
def test_auto_rejects_bad_settings_naming_the_field(kwargs: dict[str, float]) -> None:
    bad = next(k for k in reversed(kwargs) if k)
    with pytest.raises(ConfigError, match=bad):
        Auto(**kwargs)


def test_mtbi_estimate_is_the_prior_without_observations() -> None:
    assert mtbi_estimate(14_400.0, 2.0, 0, 0.0) == 14_400.0


def test_mtbi_estimate_moves_towards_the_observed_rate() -> None:
    # Prior 4 h worth 2 interruptions; observed 10 in 10 h (1 h each): (28800+36000)/12 = 5400.
    assert mtbi_estimate(14_400.0, 2.0, 10, 36_000.0) == pytest.approx(5400.0)
    # Many observations: the observed mean wins.
    assert mtbi_estimate(14_400.0, 2.0, 10_000, 3600.0 * 10_000) == pytest.approx(3600.0, rel=1e-3)
    # A long quiet run raises the estimate above the prior.
    assert mtbi_estimate(14_400.0, 2.0, 0, 86_400.0) == pytest.approx(57_600.0)


def test_mtbi_estimate_rejects_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="prior_weight"):
        mtbi_estimate(14_400.0, 0.0, 0, 0.0)
    with pytest.raises(ConfigError, match="observed_interruptions"):
        mtbi_estimate(14_400.0, 1.0, -1, 0.0)


def run_fake_clock(
    policy: MaxLostWork | Auto, *, step_s: float, c_s: float, p_s: float, steps: int
) -> list[float]:
    """Drive a policy with a fake clock; return the times saves started."""
    now, last, since, starts = 0.0, 0.0, 0, []
    for _ in range(steps):
        now += step_s
        since += 1
        decision = policy.decide(
            IntervalState(
                now_s=now,
                last_save_s=last,
                steps_since_save=since,
                mean_step_s=step_s,
                save_blocking_s=c_s,
                persist_s=p_s,
            )
        )
        if isinstance(decision, SaveNow):
            starts.append(now)
            last, since = now, 0
            now += c_s  # the save blocks training for C
    return starts


@given(
    budget_s=st.floats(min_value=60.0, max_value=7200.0),
    step_s=st.floats(min_value=0.01, max_value=20.0),
    c_s=st.floats(min_value=0.0, max_value=20.0),
    p_s=st.floats(min_value=0.0, max_value=20.0),
)
def test_lost_work_stays_within_budget_on_a_fake_clock(
    budget_s: float, step_s: float, c_s: float, p_s: float
) -> None:
    # Whenever one step fits after a save's blocking time and after the floor (MaxLostWork:
    # P, so 2C + P + step <= budget and C + 2P + step <= budget; Auto: C + P, so
    # 2C + 2P + step <= budget), the worst-case lost work T + C + P fits too, T being the
    # time between save starts. Otherwise the floor wins.
    policies: list[tuple[MaxLostWork | Auto, float, float]] = [
        (MaxLostWork(max_lost_work_s=budget_s), p_s, max(2 * c_s + p_s, c_s + 2 * p_s)),
        (Auto(max_lost_work_s=budget_s), c_s + p_s, 2 * c_s + 2 * p_s),
    ]
    for policy, floor, needs in policies:
        if needs + step_s > budget_s:
            continue
        starts = run_fake_clock(policy, step_s=step_s, c_s=c_s, p_s=p_s, steps=400)
        gaps = [b - a for a, b in itertools.pairwise([0.0, *starts])]
        for gap in gaps:
            assert gap + c_s + p_s <= budget_s * (1 + 1e-9)
            assert gap >= floor - 1e-9  # never before the previous save is durable


@given(
    elapsed=st.floats(min_value=0.0, max_value=1e7),
    step=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e4)),
    c=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e4)),
    p=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e4)),
    m=st.one_of(st.none(), st.floats(min_value=1.0, max_value=1e7)),
)
def test_auto_always_decides_and_respects_the_persist_floor(
    elapsed: float, step: float | None, c: float | None, p: float | None, m: float | None
) -> None:
    s = state(now_s=elapsed, mean_step_s=step, save_blocking_s=c, persist_s=p, mtbi_s=m)
    decision = Auto(max_lost_work_s=600.0).decide(s)
    assert isinstance(decision, SaveNow | Wait)
    if p is not None and elapsed < (c or 0.0) + p:
        assert isinstance(decision, Wait)  # the previous save is not durable yet
    if isinstance(decision, Wait):
        assert decision.remaining_s is not None and decision.remaining_s >= 0.0
