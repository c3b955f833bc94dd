"""Each exit class spends its own budget, and the class comes from the exit code *and* the
store. The supervisor runs in-process with real child processes and an injected sleep."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from spotsafe.policy import ExitClass, Pool, load_pools
from spotsafe.storage import open_store
from spotsafe.supervisor import EXIT_GAVE_UP, JobRecord, Outcome, Supervisor
from tests.supervisor.conftest import CHILD, child_env, write_pool


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)


def supervise(store: Path, pool: Pool, *plans: str) -> tuple[Outcome, list[float]]:
    slept: list[float] = []
    sup = Supervisor(store=open_store(str(store)), command=[*CHILD, *plans], pool=pool,
                     watchers=[], sleep=slept.append, rng=random.Random(0),
                     echo=False)  # fmt: skip
    return sup.run(), slept


def classes(store: Path) -> list[ExitClass]:
    return [r.exit_class for r in JobRecord.open(open_store(str(store))).retry_state().attempts]


def fast(tmp_path: Path, **settings: object) -> Pool:
    return load_pools(write_pool(tmp_path / "spotsafe.toml", **settings))["fast"]


def test_a_crash_loop_runs_max_failures_plus_one_times(tmp_path: Path) -> None:
    outcome, slept = supervise(tmp_path / "s", fast(tmp_path, max_failures=2), "exit:3")
    assert outcome.exit_code == EXIT_GAVE_UP
    assert "3 crashes, budget of 2 restarts after crashes spent" in outcome.reason
    assert classes(tmp_path / "s") == [ExitClass.CRASH] * 3
    assert slept == [0.01, 0.02]  # exponential per streak, capped at backoff_max_s


def test_preemptions_do_not_spend_the_failure_budget(tmp_path: Path) -> None:
    pool = fast(tmp_path, max_failures=1, max_preemptions=10)
    plans = [f"ckpt:{10 * n},exit:75" for n in range(1, 5)] + ["ckpt:45,exit:3", "exit:0"]
    outcome, _ = supervise(tmp_path / "s", pool, *plans)
    assert outcome.exit_code == 0, outcome.reason
    assert classes(tmp_path / "s") == [ExitClass.PREEMPTED] * 4 + [
        ExitClass.CRASH,
        ExitClass.SUCCESS,
    ]


def test_exit_1_after_a_recorded_clean_stop_is_a_preemption(tmp_path: Path) -> None:
    # torchrun turns its workers' 75 into 1; the Guard's clean `stop` event tells the truth.
    # With no failure budget at all, counting it as a crash would end the job.
    pool = fast(tmp_path, max_failures=0)
    outcome, _ = supervise(tmp_path / "s", pool, "ckpt:5,cleanstop,exit:1", "exit:0")
    assert outcome.exit_code == 0, outcome.reason
    assert classes(tmp_path / "s") == [ExitClass.PREEMPTED, ExitClass.SUCCESS]


def test_exit_1_without_a_clean_stop_is_a_crash(tmp_path: Path) -> None:
    outcome, _ = supervise(tmp_path / "s", fast(tmp_path, max_failures=0), "ckpt:5,exit:1")
    assert outcome.exit_code == EXIT_GAVE_UP
    assert classes(tmp_path / "s") == [ExitClass.CRASH]


def test_interruptions_that_never_advance_the_step_are_no_progress(tmp_path: Path) -> None:
    pool = fast(tmp_path, max_no_progress=2, max_preemptions=100)
    outcome, _ = supervise(tmp_path / "s", pool, "ckpt:10,exit:75")
    assert outcome.exit_code == EXIT_GAVE_UP
    assert "stuck at step 10" in outcome.reason
    # The first attempt made progress (none -> 10); then 3 in a row did not: 2 restarts.
    assert classes(tmp_path / "s") == [ExitClass.PREEMPTED] + [ExitClass.NO_PROGRESS] * 3


def test_budgets_come_from_the_record_not_from_the_supervisor(tmp_path: Path) -> None:
    first, _ = supervise(tmp_path / "s", fast(tmp_path, max_failures=1), "exit:3")
    assert first.exit_code == EXIT_GAVE_UP and len(first.attempts) == 2
    # A new supervisor (another machine) with a larger budget: one restart left, not three.
    second, _ = supervise(tmp_path / "s", fast(tmp_path, max_failures=2), "exit:3")
    assert second.exit_code == EXIT_GAVE_UP
    assert [a.attempt for a in second.attempts] == [1, 2, 3]
    store = open_store(str(tmp_path / "s"))
    logs = sorted(p for p in store.list("logs"))
    assert logs == [f"logs/attempt-00000{n}.log" for n in (1, 2, 3)]
    assert store.read_bytes("logs/attempt-000003.log") == b"attempt 3: exit:3\n"


@pytest.mark.parametrize("script", ["exit 75", "kill -9 $$"], ids=["exit-75", "sigkill"])
def test_a_job_interrupted_before_its_first_save_spends_the_no_progress_budget(
    tmp_path: Path, script: str
) -> None:
    # OOM-killed (or preempted) before the first checkpoint, every time: no checkpoint before,
    # none after, is no progress. It used to spend the preemption budget: 101 attempts.
    pool = fast(tmp_path, max_no_progress=1, max_preemptions=100)
    slept: list[float] = []
    sup = Supervisor(store=open_store(str(tmp_path / "s")), command=["sh", "-c", script],
                     pool=pool, watchers=[], sleep=slept.append, rng=random.Random(0),
                     echo=False)  # fmt: skip
    outcome = sup.run()
    assert outcome.exit_code == EXIT_GAVE_UP
    assert "2 attempts without progress in a row, stuck before the first checkpoint" in (
        outcome.reason
    )
    assert classes(tmp_path / "s") == [ExitClass.NO_PROGRESS] * 2


def test_a_first_save_ends_the_no_progress_streak(tmp_path: Path) -> None:
    pool = fast(tmp_path, max_no_progress=1, max_preemptions=100)
    outcome, _ = supervise(tmp_path / "s", pool, "exit:75", "ckpt:5,exit:75", "exit:75",
                           "ckpt:9,exit:0")  # fmt: skip
    assert outcome.exit_code == 0, outcome.reason
    assert classes(tmp_path / "s") == [ExitClass.NO_PROGRESS, ExitClass.PREEMPTED,
                                       ExitClass.NO_PROGRESS, ExitClass.SUCCESS]  # fmt: skip


def test_a_successful_attempt_is_logged_at_info_an_interrupted_one_at_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="spotsafe"):
        outcome, _ = supervise(tmp_path / "s", fast(tmp_path), "ckpt:5,exit:75", "ckpt:20,exit:0")
    assert outcome.exit_code == 0, outcome.reason
    ended = {r.getMessage(): r.levelno for r in caplog.records if " ended: " in r.getMessage()}
    assert ended == {
        "attempt 1 ended: preempted (exit 75), steps None -> 5": logging.WARNING,
        "attempt 2 ended: success (exit 0), steps 5 -> 20": logging.INFO,
    }
