"""Every stop request ends in exit 75 with a checkpoint at the stop step, or a recorded reason
why not. Real child processes, real signals, a real metadata service on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import spotsafe
from spotsafe.events import read_events
from spotsafe.storage import open_store
from tests.interrupt.metadata_servers import AwsImds

REPO = Path(__file__).resolve().parents[2]


class Child:
    """A guarded training run in a child process, read line by line."""

    def __init__(self, store: Path, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ, PYTHONPATH=str(REPO), SPOTSAFE_CLOUD="none")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.guarded_train", str(store), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=full_env,
        )

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            yield line.strip()

    def run_until_step(self, step: int) -> None:
        for line in self.lines():
            if line == f"step {step}":
                return
        raise AssertionError(f"child ended before step {step}: {self.stderr()}")

    def finish(self, timeout: float = 120) -> tuple[int, list[str]]:
        rest = list(self.lines())
        return self.proc.wait(timeout), rest

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]


def final_digest(lines: list[str]) -> str:
    return next(line.split()[1] for line in lines if line.startswith("final "))


def stop_events(store: Path) -> list[spotsafe.events.Event]:
    return [e for e in read_events(open_store(str(store))) if e.kind == "stop"]


def newest_step(store: Path) -> int:
    listing = spotsafe.Checkpointer(str(store), events=False).checkpoints()
    return max(c.step for c in listing if c.status.value == "valid")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_mid_step_flushes_at_that_step_and_exits_75(tmp_path, sig) -> None:
    child = Child(tmp_path, "--step-s", "0.05", "--every", "1000")
    child.run_until_step(6)
    child.proc.send_signal(sig)
    code, lines = child.finish()
    assert code == 75, child.stderr()
    stopped_at = newest_step(tmp_path)
    assert f"step {stopped_at}" not in lines  # the step that was stopped printed nothing after
    (event,) = stop_events(tmp_path)
    assert event.get("clean") is True and event.get("step") == stopped_at
    assert event.get("source") == f"signal:{signal.Signals(sig).name}"
    assert event.get("deadline_met") is True


def test_stop_in_the_first_step(tmp_path) -> None:
    child = Child(tmp_path, "--step-s", "0.3", "--every", "1000")
    assert next(child.lines()) == "resumed 0"
    assert next(child.lines()) == "guarded"  # the first step is running now
    child.proc.send_signal(signal.SIGTERM)
    code, _ = child.finish()
    assert code == 75, child.stderr()
    assert newest_step(tmp_path) == 1


def test_stop_during_a_save_in_flight_waits_for_it(tmp_path) -> None:
    child = Child(tmp_path, "--step-s", "0.02", "--every", "1")  # a save after every step
    child.run_until_step(5)
    child.proc.send_signal(signal.SIGTERM)
    code, _ = child.finish()
    assert code == 75, child.stderr()
    (event,) = stop_events(tmp_path)
    assert event.get("step") == newest_step(tmp_path)


def test_interrupted_by_signals_and_resumed_ends_bit_for_bit(tmp_path) -> None:
    # The reference runs beside the interrupted runs, which mostly sleep between steps.
    ref = Child(tmp_path / "reference", "--every", "5")
    store = tmp_path / "interrupted"
    try:
        for stop_at in (4, 13, 22):
            child = Child(store, "--every", "5", "--step-s", "0.02")
            child.run_until_step(stop_at)
            child.proc.send_signal(signal.SIGTERM)
            assert child.finish()[0] == 75
    except BaseException:
        ref.proc.kill()  # the test failed: leave no run behind
        raise
    code, lines = ref.finish()
    assert code == 0
    reference = final_digest(lines)
    code, lines = Child(store, "--every", "5").finish()
    assert code == 0
    assert final_digest(lines) == reference


def test_aws_spot_notice_stops_with_the_notice_deadline(tmp_path) -> None:
    with AwsImds() as imds:
        child = Child(
            tmp_path,
            "--step-s",
            "0.05",
            "--every",
            "1000",
            "--epochs",
            "50",
            env={"SPOTSAFE_CLOUD": "aws", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url},
        )
        child.run_until_step(3)
        imds.instance_action = {"action": "terminate", "time": "2099-01-01T00:00:00Z"}
        code, _ = child.finish()
    assert code == 75, child.stderr()
    (event,) = stop_events(tmp_path)
    assert event.get("source") == "aws:instance-action"
    assert event.get("clean") is True
    notices = [e for e in read_events(open_store(str(tmp_path))) if e.kind == "notice"]
    assert notices and notices[0].get("deadline_in_s") > 3600


def test_flush_past_the_deadline_is_recorded(tmp_path) -> None:
    """A notice whose deadline already passed: still flush, and say it did not fit."""
    with AwsImds() as imds:
        imds.instance_action = {"action": "stop", "time": "2000-01-01T00:00:00Z"}
        child = Child(
            tmp_path,
            "--step-s",
            "0.05",
            env={"SPOTSAFE_CLOUD": "aws", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url},
        )
        code, _ = child.finish()
    assert code == 75, child.stderr()
    (event,) = stop_events(tmp_path)
    assert event.get("clean") is True and event.get("deadline_met") is False
    assert json.dumps(event.fields)  # plain JSON, readable by the report


def test_loader_workers_outlive_a_signal_to_the_whole_process_group(tmp_path) -> None:
    """Slurm and `kill -- -PGID` signal every process; workers must not die before the flush."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), SPOTSAFE_CLOUD="none")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.guarded_train", str(tmp_path), "--workers", "2",
         "--step-s", "0.05", "--every", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=full_env,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "step 5":
            break
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert "DataLoader worker" not in err
    (event,) = stop_events(tmp_path)
    assert event.get("clean") is True and event.get("step") == newest_step(tmp_path)


def test_a_supervised_stop_is_recorded_in_the_job_record(tmp_path) -> None:
    from spotsafe.jobrecord import read_stop

    env = {"SPOTSAFE_ATTEMPT": "1", "SPOTSAFE_JOB_ID": "job-stop"}
    child = Child(tmp_path, "--step-s", "0.05", "--every", "1000", env=env)
    child.run_until_step(4)
    child.proc.send_signal(signal.SIGTERM)
    code, _ = child.finish()
    assert code == 75, child.stderr()
    stop = read_stop(open_store(str(tmp_path)), 1)
    assert stop is not None and stop.step == newest_step(tmp_path)
    assert stop.reason == "signal:SIGTERM" and stop.details["exit_code"] == 75
