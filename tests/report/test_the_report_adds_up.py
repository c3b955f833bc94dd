"""On a scripted job (a SIGTERM at step 25, a SIGKILL at step 37, success at 50; saves every
10 steps; known prices) every figure of the report is what the script implies, whether the
supervisor recorded the child's progress or only the event log tells it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spotsafe.lease import Lease
from spotsafe.report import account_job
from spotsafe.report.accounting import JobReport
from spotsafe.storage import open_store
from spotsafe.supervisor.job import JobRecord
from tests.report.scripted import Plan, write_attempt

PRICES = {"spot": 1.0, "on_demand": 4.0, "instances": 2}


def script(root: Path, *, progress: bool, prices: dict[str, Any] = PRICES) -> JobReport:
    store = open_store(str(root))
    record = JobRecord.open(store, job_id="scripted")
    plans = [
        # 1: fresh, steps 1-25 (saves at 10, 20), SIGTERM: clean stop at 25; exits 1 s later.
        Plan(n=1, start=1000.0, boot_s=10.0, restored=None, restore_s=None, last=25,
             how="stop:signal:SIGTERM", tail_s=1.0, end_step=25, progress=progress),
        # 2: 3 s later, restores 25 (2 s), steps 26-37 (save at 30), SIGKILL 0.5 s after 37;
        # its events after step 35 died in its memory.
        Plan(n=2, start=1041.0, boot_s=10.0, restored=25, restore_s=2.0, last=37,
             how="kill", tail_s=0.5, end_step=30, flushed_to=35, progress=progress),
        # 3: 5 s later, restores 30 (1.5 s), steps 31-50 (saves at 40, 50), succeeds.
        Plan(n=3, start=1069.0, boot_s=9.0, restored=30, restore_s=1.5, last=50,
             how="success", tail_s=1.0, end_step=50, progress=progress),
    ]  # fmt: skip
    for plan in plans:
        write_attempt(store, record, plan, prices=prices)
    return account_job(store, now_s=5000.0)


@pytest.fixture(scope="module", params=[False, True], ids=["event-log", "progress"])
def report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> JobReport:
    return script(tmp_path_factory.mktemp("job"), progress=request.param)


def test_interruptions_are_counted_by_source(report: JobReport) -> None:
    doc = report.to_json()
    assert doc["state"] == "succeeded"
    assert doc["interruptions"] == {"total": 2, "by_source": {"sigterm": 1, "unclean": 1}}
    assert [a["interruption_source"] for a in doc["attempts"]] == ["sigterm", "unclean", None]
    assert [a["exit_class"] for a in doc["attempts"]] == ["preempted", "unclean", "success"]


def test_every_resume_restored_the_newest_checkpoint(report: JobReport) -> None:
    assert report.to_json()["resume"] == {
        "attempts": 2, "succeeded": 2, "fell_back": 0, "fresh": 0, "rate": 1.0
    }  # fmt: skip


def test_replayed_work_runs_from_the_restored_step_to_the_furthest(report: JobReport) -> None:
    replayed = report.to_json()["replayed"]
    first, second = replayed["per_interruption"]
    assert (first["from_step"], first["to_step"], first["steps"]) == (25, 25, 0)
    assert first["estimated"] is False  # a clean stop says its step
    assert (second["from_step"], second["to_step"], second["steps"]) == (30, 37, 7)
    assert second["seconds"] == pytest.approx(7.0)
    assert replayed["steps_total"] == 7
    assert replayed["seconds_total"] == pytest.approx(7.0)
    killed = report.attempts[1]
    # Only the supervisor's progress record knows the step exactly; the log's is estimated.
    assert killed.furthest_estimated is (not _has_progress(report))
    assert killed.furthest_step == 37


def test_checkpoint_times_are_distributions(report: JobReport) -> None:
    ckpt = report.to_json()["checkpoint"]
    assert ckpt["count"] == 6  # 10, 20, 25 (the stop's flush), 30, 40, 50
    # blocking: five interval saves of 0.5 s and the 1 s stop flush
    assert ckpt["blocking_s"] == pytest.approx({"p50": 0.5, "p95": 0.875, "max": 1.0})
    assert ckpt["persist_s"] == pytest.approx({"p50": 2.0, "p95": 2.0, "max": 2.0})
    assert ckpt["restore_s"] == pytest.approx({"p50": 1.75, "p95": 1.975, "max": 2.0})


def test_retry_runs_from_the_interruption_to_the_next_first_step(report: JobReport) -> None:
    retry = report.to_json()["retry"]
    first_step = 1.0 if _has_progress(report) else 0.0  # the log knows the Guard's entry
    first, second = retry["per_interruption"]
    # SIGTERM seen at 1036; attempt 2 starts at 1041, restores 2 s, enters the Guard at 1051.
    assert first == pytest.approx({"attempt": 1, "seconds": 15.0 + first_step, "backoff_s": 5.0,
                                   "startup_s": 8.0 + first_step, "restore_s": 2.0})  # fmt: skip
    # Last step at 1063.5; attempt 3 starts at 1069, restores 1.5 s, enters at 1078.
    assert second == pytest.approx({"attempt": 2, "seconds": 14.5 + first_step,
                                    "backoff_s": 5.5, "startup_s": 7.5 + first_step,
                                    "restore_s": 1.5})  # fmt: skip
    assert retry["seconds_total"] == pytest.approx(29.5 + 2 * first_step)


def test_goodput_and_its_badput_sum_to_the_total(report: JobReport) -> None:
    goodput = report.to_json()["goodput"]
    assert goodput["total_s"] == pytest.approx(100.0)  # 1000 -> 1100
    assert goodput["useful_s"] == pytest.approx(50.0)  # 50 steps of 1 s
    assert goodput["ratio"] == pytest.approx(0.5)
    assert goodput["badput_s"] == pytest.approx({
        "startup": 10.0 + 8.0 + 7.5,  # boot less restore, per attempt
        "restore": 3.5,
        "checkpoint_blocking": 3.5,  # five 0.5 s saves and the 1 s stop flush
        "replayed": 7.0,
        "retry_wait": 3.0 + 5.0,
        "other": 2.5,  # the processes' exits after their last steps
    })  # fmt: skip
    assert sum(goodput["badput_s"].values()) + goodput["useful_s"] == pytest.approx(100.0)


def test_cost_is_net_of_replayed_work(report: JobReport) -> None:
    paid = (38.0 + 23.0 + 31.0) / 3600 * 1.0 * 2  # every attempt's wall time at spot, x2
    on_demand = 50.0 / 3600 * 4.0 * 2  # the useful time at the on-demand price
    assert report.to_json()["cost"] == pytest.approx({
        "spot": paid, "on_demand_equivalent": on_demand, "saved": on_demand - paid,
        "saved_ratio": (on_demand - paid) / on_demand,
        "sagemaker_ratio": 1 - paid / ((38.0 + 23.0 + 31.0) / 3600 * 4.0 * 2),
    })  # fmt: skip


def test_the_json_has_the_documented_keys(report: JobReport) -> None:
    doc = json.loads(json.dumps(report.to_json()))
    assert list(doc) == ["schema", "job_id", "store", "pool", "state", "attempts", "saves",
                         "interruptions", "resume", "replayed", "checkpoint", "retry",
                         "goodput", "cost"]  # fmt: skip
    assert doc["schema"] == 1 and doc["job_id"] == "scripted" and doc["pool"] == "standard"
    assert list(doc["attempts"][0]) == [
        "attempt", "started_s", "ended_s", "exit_class", "returncode", "capacity",
        "restored_step", "end_step", "furthest_step", "furthest_estimated",
        "interruption_source", "restore_s", "first_step_s",
    ]  # fmt: skip
    assert [s["step"] for s in doc["saves"]] == [10, 20, 25, 30, 40, 50]


def _has_progress(report: JobReport) -> bool:
    return report.attempts[0].first_step_s != report.attempts[0].entered_s


# ------------------------------------------------------------------ the other shapes


def test_without_prices_cost_is_null(tmp_path: Path) -> None:
    prices = {"spot": None, "on_demand": 4.0, "instances": 1}
    assert script(tmp_path / "job", progress=True, prices=prices).cost is None


def test_instances_multiply_the_cost(tmp_path: Path) -> None:
    one = script(tmp_path / "one", progress=True, prices={**PRICES, "instances": 1}).cost
    four = script(tmp_path / "four", progress=True, prices={**PRICES, "instances": 4}).cost
    assert one is not None and four is not None
    assert four["spot"] == pytest.approx(4 * one["spot"])  # type: ignore[operator]
    assert four["saved_ratio"] == pytest.approx(one["saved_ratio"])


def test_a_fall_back_past_a_corrupt_checkpoint_and_a_fresh_start(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "job"))
    record = JobRecord.open(store, job_id="fallback")
    plans = [
        Plan(n=1, start=0.0, boot_s=5.0, restored=None, restore_s=None, last=12, how="kill",
             tail_s=0.0, end_step=10, progress=True),
        # 10 is corrupt: it falls back to nothing at all, a fresh start
        Plan(n=2, start=20.0, boot_s=5.0, restored=None, restore_s=None, last=24,
             how="kill", tail_s=0.0, end_step=20, progress=True,
             skipped=("checkpoints/step-10",)),
        # 20 is corrupt: falls back to 10 (rewritten by attempt 2)
        Plan(n=3, start=60.0, boot_s=5.0, restored=10, restore_s=1.0, last=30,
             how="success", tail_s=0.0, end_step=30, progress=True,
             skipped=("checkpoints/step-20",)),
    ]  # fmt: skip
    for plan in plans:
        write_attempt(store, record, plan, prices=PRICES)
    doc = account_job(store, now_s=1000.0).to_json()
    assert doc["resume"] == {"attempts": 2, "succeeded": 0, "fell_back": 1, "fresh": 1,
                             "rate": 0.0}  # fmt: skip
    steps = [
        (r["from_step"], r["to_step"], r["steps"]) for r in doc["replayed"]["per_interruption"]
    ]
    assert steps == [(None, 12, 12), (10, 24, 14)]
    g = doc["goodput"]
    assert sum(g["badput_s"].values()) + g["useful_s"] == pytest.approx(g["total_s"])


def test_a_running_job_is_accounted_up_to_now(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "job"))
    record = JobRecord.open(store, job_id="running")
    write_attempt(store, record, Plan(n=1, start=0.0, boot_s=5.0, restored=None,
                                      restore_s=None, last=12, how="stop:aws:instance-action",
                                      tail_s=1.0, end_step=12), prices=PRICES)  # fmt: skip
    # attempt 2 runs: started, no end; its supervisor holds a live lease
    Lease(store, ttl_s=60.0, wall_clock=lambda: 100.0).acquire()
    write_attempt(store, record, Plan(n=2, start=20.0, boot_s=5.0, restored=12,
                                      restore_s=0.5, last=30, how="cutoff", tail_s=0.0,
                                      end_step=None), prices=PRICES)  # fmt: skip
    doc = account_job(store, now_s=110.0).to_json()
    assert doc["state"] == "running"
    running = doc["attempts"][1]
    assert (running["ended_s"], running["exit_class"], running["furthest_step"]) == (None, None, 30)
    assert doc["interruptions"]["by_source"] == {"aws-spot": 1}
    assert doc["goodput"]["total_s"] == pytest.approx(110.0)
    first = 5.0 + 12 + 0.5 + 1.0 + 1.0  # boot, 12 steps, a save, the stop's flush, the exit
    assert doc["cost"]["spot"] == pytest.approx((first + 90.0) / 3600 * 2)


def test_an_attempt_cut_off_with_its_supervisor_is_estimated(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "job"))
    record = JobRecord.open(store, job_id="cutoff")
    write_attempt(store, record, Plan(n=1, start=0.0, boot_s=5.0, restored=None,
                                      restore_s=None, last=27, how="cutoff", tail_s=0.0,
                                      end_step=None, flushed_to=22), prices=PRICES)  # fmt: skip
    doc = account_job(store, now_s=1000.0).to_json()
    assert doc["state"] == "unknown"  # nobody closed it: the next supervisor will
    attempt = doc["attempts"][0]
    assert attempt["exit_class"] == "cut_off" and attempt["furthest_estimated"] is True
    assert attempt["interruption_source"] == "unclean"
    # its last durable sign of life is step 22's heartbeat: nothing later is known
    assert attempt["furthest_step"] == 22
    assert doc["replayed"]["per_interruption"][0]["estimated"] is True
