"""Exit classification and retry decisions as pure functions: budgets, backoff, fallback."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from spotsafe.errors import ConfigError
from spotsafe.policy.pools import PRESETS, Pool
from spotsafe.policy.retry import (
    AttemptRecord,
    Backoff,
    Budget,
    Done,
    ExitClass,
    GiveUp,
    Restart,
    RetryPolicy,
    RetryState,
    classify_exit,
)


class FixedRng:
    """An rng that always returns the same draw."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


NO_JITTER = Backoff(initial_s=10.0, max_s=100.0, multiplier=2.0, jitter=0.0)


def policy(**kw: object) -> RetryPolicy:
    base: dict[str, object] = {
        "preemption_backoff": NO_JITTER,
        "failure_backoff": NO_JITTER,
        "no_progress_backoff": NO_JITTER,
    }
    base.update(kw)
    return RetryPolicy(**base)


def run(classes_and_steps: Sequence[tuple[ExitClass, int | None, int | None]]) -> RetryState:
    """A history from (class, start_step, end_step) triples, one minute per attempt."""
    state = RetryState()
    for i, (cls, start, end) in enumerate(classes_and_steps, start=1):
        code = {ExitClass.CRASH: 1, ExitClass.PREEMPTED: 75, ExitClass.SUCCESS: 0}.get(cls, -9)
        state = state.with_attempt(
            AttemptRecord(
                attempt=i,
                exit_class=cls,
                started_s=60.0 * i,
                ended_s=60.0 * i + 59.0,
                start_step=start,
                end_step=end,
                returncode=code,
            )
        )
    return state


C, P, U, N = ExitClass.CRASH, ExitClass.PREEMPTED, ExitClass.UNCLEAN, ExitClass.NO_PROGRESS


# --- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "clean_stop", "progressed", "expected"),
    [
        (0, False, None, ExitClass.SUCCESS),
        (0, False, False, ExitClass.SUCCESS),
        (75, False, True, ExitClass.PREEMPTED),
        (75, False, None, ExitClass.PREEMPTED),
        (1, True, True, ExitClass.PREEMPTED),  # torchrun: workers exited 75, launcher 1
        (-9, False, True, ExitClass.UNCLEAN),  # SIGKILL
        (-15, False, True, ExitClass.UNCLEAN),  # SIGTERM without a handler
        (137, False, True, ExitClass.UNCLEAN),  # 128 + SIGKILL via a shell or container
        (None, False, True, ExitClass.UNCLEAN),  # no exit recorded: node or supervisor lost
        (1, False, True, ExitClass.CRASH),
        (1, False, False, ExitClass.CRASH),  # crashes spend the failure budget either way
        (-11, False, True, ExitClass.CRASH),  # SIGSEGV is the program's own fault
        (-6, False, True, ExitClass.CRASH),  # SIGABRT likewise
        (75, False, False, ExitClass.NO_PROGRESS),
        (-9, False, False, ExitClass.NO_PROGRESS),
        (None, False, False, ExitClass.NO_PROGRESS),
    ],
)
def test_classify_exit(
    returncode: int | None, clean_stop: bool, progressed: bool | None, expected: ExitClass
) -> None:
    got = classify_exit(returncode, clean_stop_recorded=clean_stop, progressed=progressed)
    assert got is expected


def test_classify_exit_honours_a_configured_preempted_code() -> None:
    assert classify_exit(42, preempted_exit_code=42) is ExitClass.PREEMPTED
    assert classify_exit(75, preempted_exit_code=42) is ExitClass.CRASH


def test_progress_from_recorded_steps() -> None:
    def rec(start: int | None, end: int | None) -> AttemptRecord:
        return AttemptRecord(
            attempt=1, exit_class=P, started_s=0.0, ended_s=1.0, start_step=start, end_step=end
        )

    assert rec(None, 10).progressed is True
    assert rec(10, 20).progressed is True
    assert rec(10, 10).progressed is False
    assert rec(10, None).progressed is False
    # No checkpoint before, none after: no progress (not "unknown", which let a job killed
    # before its first save spend the whole preemption budget).
    assert rec(None, None).progressed is False


def test_attempt_record_rejects_impossible_values() -> None:
    with pytest.raises(ConfigError, match="attempt"):
        AttemptRecord(attempt=0, exit_class=P, started_s=0, ended_s=1, start_step=0, end_step=1)
    with pytest.raises(ConfigError, match="ended_s"):
        AttemptRecord(attempt=1, exit_class=P, started_s=5, ended_s=1, start_step=0, end_step=1)


# --- decisions --------------------------------------------------------------------------------


def test_first_attempt_and_success() -> None:
    assert policy().decide(RetryState(), rng=FixedRng(0.0)) == Restart(
        after_s=0.0, reason="first attempt"
    )
    assert policy().decide(run([(P, 0, 5), (ExitClass.SUCCESS, 5, 9)]), rng=FixedRng(0)) == Done()


def test_crash_loop_stops_at_the_failure_budget() -> None:
    # max_failures=2: the command runs at most 3 times.
    p = policy(max_failures=2)
    assert isinstance(p.decide(run([(C, None, None)]), rng=FixedRng(0)), Restart)
    assert isinstance(p.decide(run([(C, None, None)] * 2), rng=FixedRng(0)), Restart)
    gave_up = p.decide(run([(C, None, None)] * 3), rng=FixedRng(0))
    assert isinstance(gave_up, GiveUp)
    assert gave_up.exit_class is ExitClass.CRASH
    assert "3 crashes" in gave_up.reason and "budget of 2" in gave_up.reason


def test_preemptions_do_not_spend_the_failure_budget() -> None:
    history = [(P, i * 10, i * 10 + 10) for i in range(50)] + [(C, 500, 510)]
    state = run(history)
    assert state.spent(Budget.FAILURES) == 1
    assert state.spent(Budget.PREEMPTIONS) == 50
    assert isinstance(policy(max_failures=1).decide(state, rng=FixedRng(0)), Restart)


def test_unclean_kills_spend_the_preemption_budget() -> None:
    state = run([(U, 0, 10), (P, 10, 20), (U, 20, 30)])
    assert state.spent(Budget.PREEMPTIONS) == 3
    assert isinstance(policy(max_preemptions=3).decide(state, rng=FixedRng(0)), Restart)
    gave_up = policy(max_preemptions=2).decide(state, rng=FixedRng(0))
    assert isinstance(gave_up, GiveUp) and gave_up.exit_class is ExitClass.UNCLEAN


def test_no_progress_budget_counts_attempts_in_a_row() -> None:
    stuck = run([(P, 0, 100)] + [(N, 100, 100)] * 3)
    assert stuck.spent(Budget.NO_PROGRESS) == 3
    assert isinstance(policy(max_no_progress=3).decide(stuck, rng=FixedRng(0)), Restart)
    gave_up = policy(max_no_progress=2).decide(stuck, rng=FixedRng(0))
    assert isinstance(gave_up, GiveUp)
    assert "stuck at step 100" in gave_up.reason
    # One attempt that advances the step refills the budget.
    unstuck = run([(N, 100, 100)] * 2 + [(P, 100, 200), (N, 200, 200)])
    assert unstuck.spent(Budget.NO_PROGRESS) == 1


@pytest.mark.parametrize(("returncode", "cls"), [(75, P), (-9, U), (137, U)])
def test_interruptions_before_the_first_checkpoint_are_no_progress(
    returncode: int, cls: ExitClass
) -> None:
    # No checkpoint before the attempt and none after it: the attempt did not progress. It
    # used to count as "unknown" and spend the preemption budget: 101 attempts of `exit 75`.
    record = AttemptRecord(attempt=1, exit_class=cls, started_s=0.0, ended_s=1.0,
                           start_step=None, end_step=None, returncode=returncode)  # fmt: skip
    got = classify_exit(returncode, progressed=record.progressed)
    assert got is ExitClass.NO_PROGRESS
    # A crash stays a crash: its own budget bounds it.
    assert classify_exit(1, progressed=record.progressed) is ExitClass.CRASH


def test_no_progress_counts_from_the_first_attempt() -> None:
    never_saved = run([(N, None, None)] * 2)
    assert never_saved.spent(Budget.NO_PROGRESS) == 2
    gave_up = policy(max_no_progress=1, max_preemptions=100).decide(never_saved, rng=FixedRng(0))
    assert isinstance(gave_up, GiveUp) and gave_up.exit_class is ExitClass.NO_PROGRESS
    assert "stuck before the first checkpoint" in gave_up.reason
    # The first checkpoint is progress: it refills the budget.
    saved_once = run([(N, None, None), (P, None, 10), (N, 10, 10)])
    assert saved_once.spent(Budget.NO_PROGRESS) == 1


def test_crashes_without_progress_do_not_reset_the_no_progress_streak() -> None:
    state = run([(N, 10, 10), (C, 10, 10), (N, 10, 10)])
    assert state.spent(Budget.NO_PROGRESS) == 2
    assert state.spent(Budget.FAILURES) == 1


def test_backoff_grows_within_a_crash_streak() -> None:
    p = policy(max_failures=10)
    delays = []
    for n in range(1, 6):
        decision = p.decide(run([(C, 10, 10)] * n), rng=FixedRng(0))
        assert isinstance(decision, Restart)
        delays.append(decision.after_s)
    assert delays == [10.0, 20.0, 40.0, 80.0, 100.0]  # capped at max_s


def test_a_crash_after_real_progress_is_not_a_crash_loop() -> None:
    # Three crashes, each after the step advanced: every one waits the initial delay.
    p = policy(max_failures=10)
    state = run([(C, 0, 100), (C, 100, 200), (C, 200, 300)])
    assert state.streak(Budget.FAILURES) == 1
    decision = p.decide(state, rng=FixedRng(0))
    assert isinstance(decision, Restart) and decision.after_s == 10.0
    # ... but each still spends the failure budget: max_failures bounds the runs.
    assert state.spent(Budget.FAILURES) == 3
    assert isinstance(policy(max_failures=2).decide(state, rng=FixedRng(0)), GiveUp)


def test_progress_by_any_attempt_resets_the_crash_streak() -> None:
    state = run([(C, 10, 10), (C, 10, 10), (P, 10, 50), (C, 50, 50)])
    assert state.streak(Budget.FAILURES) == 1
    assert run([(C, 10, 10), (C, 10, 10), (C, 10, 10)]).streak(Budget.FAILURES) == 3


def test_jitter_comes_from_the_injected_rng_only() -> None:
    jittery = Backoff(initial_s=100.0, max_s=1000.0, multiplier=2.0, jitter=0.5)
    p = policy(failure_backoff=jittery)
    state = run([(C, None, None)])
    low = p.decide(state, rng=FixedRng(0.999))
    high = p.decide(state, rng=FixedRng(0.0))
    assert isinstance(low, Restart) and isinstance(high, Restart)
    assert high.after_s == 100.0
    assert low.after_s == pytest.approx(50.05)
    # Same seed, same delays; the global random module is untouched.
    random.seed(1234)
    before = random.getstate()
    a = p.decide(state, rng=random.Random(7))
    b = p.decide(state, rng=random.Random(7))
    assert a == b
    assert random.getstate() == before


def test_jittered_delays_stay_within_bounds() -> None:
    backoff = Backoff(initial_s=10.0, max_s=60.0, multiplier=3.0, jitter=1.0)
    rng = random.Random(0)
    for streak in range(1, 50):
        delay = backoff.delay_s(streak, rng=rng)
        assert 0.0 <= delay <= backoff.base_s(streak) <= 60.0


def test_backoff_does_not_overflow_on_long_streaks() -> None:
    backoff = Backoff(initial_s=1e-300, max_s=86400.0, multiplier=100.0, jitter=0.0)
    assert backoff.base_s(10_000) == 86400.0
    assert backoff.base_s(10**9) == 86400.0


@pytest.mark.parametrize(
    ("kwargs", "field", "bound"),
    [
        ({"max_s": 1e300}, "max_s", "86400"),  # a backoff of 1e300 s waited for ever
        ({"initial_s": 1e300, "max_s": 1e300}, "initial_s", "86400"),
        ({"multiplier": 1e100}, "multiplier", "100"),
    ],
)
def test_backoff_refuses_huge_values_naming_the_bound(
    kwargs: dict[str, float], field: str, bound: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{field} = .*<= {bound}"):
        Backoff(**kwargs)


@pytest.mark.parametrize("field", ["max_preemptions", "max_failures", "max_no_progress",
                                   "on_demand_after"])  # fmt: skip
def test_retry_budgets_have_an_upper_bound(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field} = 1000001: .*<= 1e\+06"):
        RetryPolicy(**{field: 10**6 + 1})
    assert getattr(RetryPolicy(**{field: 10**6}), field) == 10**6


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_s": -1.0}, "initial_s"),
        ({"initial_s": 10.0, "max_s": 5.0}, "max_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_backoff_rejects_bad_settings(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Backoff(**kwargs)


def test_on_demand_after_n_interruptions() -> None:
    p = policy(on_demand_after=2)
    one = p.decide(run([(P, 0, 10)]), rng=FixedRng(0))
    two = p.decide(run([(P, 0, 10), (U, 10, 20)]), rng=FixedRng(0))
    crash = p.decide(run([(P, 0, 10), (U, 10, 20), (C, 20, 30)]), rng=FixedRng(0))
    assert isinstance(one, Restart) and not one.on_demand
    assert isinstance(two, Restart) and two.on_demand
    assert isinstance(crash, Restart) and crash.on_demand  # stays on demand
    assert not policy().decide(run([(P, 0, 10)] * 50), rng=FixedRng(0)).on_demand


def test_from_pool_carries_budgets_and_backoff() -> None:
    pool = Pool(max_failures=1, backoff_initial_s=3.0, backoff_max_s=9.0, jitter=0.0)
    p = RetryPolicy.from_pool(pool)
    assert p.max_failures == 1
    assert p.failure_backoff == Backoff(initial_s=3.0, max_s=9.0, multiplier=2.0, jitter=0.0)
    assert RetryPolicy.from_pool(PRESETS["critical"]).on_demand_after == 2


def test_retry_policy_rejects_negative_budgets() -> None:
    with pytest.raises(ConfigError, match="max_failures"):
        RetryPolicy(max_failures=-1)
    with pytest.raises(ConfigError, match="on_demand_after"):
        RetryPolicy(on_demand_after=-1)
