"""A stop outside the supervisor tells the person who started the run where the state is and
how to resume, in one line, without credentials; under the supervisor it leaves that to the
supervisor. And the exit status of a stop can never read as success."""

from __future__ import annotations

import logging

import pytest
import torch

import spotsafe
from spotsafe.errors import ConfigError
from spotsafe.interrupt import StopKind, StopRequest


def stop_at_step_2(
    store: str, caplog: pytest.LogCaptureFixture, store_url: str | None = None
) -> list[str]:
    """Run two steps under a Guard, the second with a SIGTERM pending; the WARNING lines."""
    ckpt = spotsafe.Checkpointer(store, events=False)
    if store_url is not None:
        ckpt.store.url = store_url  # what a store opened from a URL with user-info would show
    state = spotsafe.TrainState(model=torch.nn.Linear(2, 2))
    guard = spotsafe.Guard(ckpt, state, every_steps=1000, watchers=[])
    stop = StopRequest(
        source="signal:SIGTERM",
        kind=StopKind.STOP,
        deadline_s=None,
        received_s=0.0,
        detail={"signal": "SIGTERM", "signum": "15"},
    )
    log = caplog.at_level(logging.WARNING, logger="spotsafe")
    with log, pytest.raises(SystemExit) as stopped, guard:
        guard.step()
        guard.flag.request(stop)
        guard.step()
    ckpt.close()
    assert stopped.value.code == 75
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_outside_the_supervisor_one_line_says_where_the_state_is(tmp_path, caplog) -> None:
    (line,) = stop_at_step_2(str(tmp_path), caplog)
    (newest,) = spotsafe.Checkpointer(str(tmp_path), events=False).checkpoints()
    assert newest.step == 2
    assert line == (
        f"spotsafe: stopped at step 2 on SIGTERM; state saved to {tmp_path}/{newest.path};"
        " run the same command to resume"
    )


def test_the_line_never_shows_credentials(tmp_path, caplog) -> None:
    (line,) = stop_at_step_2(str(tmp_path), caplog, store_url="s3://AKIA:secret@bucket/run")
    assert "secret" not in line and "AKIA" not in line
    assert "state saved to s3://***@bucket/run/checkpoints/step-000000000002-" in line


def test_under_the_supervisor_the_guard_says_nothing(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setenv("SPOTSAFE_ATTEMPT", "1")  # the supervisor retries; it reports the stop
    assert stop_at_step_2(str(tmp_path), caplog) == []


@pytest.mark.parametrize("code", [0, -1, 256, 75.0, True])
def test_an_exit_code_that_is_not_a_failure_status_is_refused(tmp_path, code) -> None:
    state = spotsafe.TrainState(model=torch.nn.Linear(2, 2))
    ckpt = spotsafe.Checkpointer(str(tmp_path), events=False)
    with pytest.raises(ConfigError, match=f"exit_code={code!r} must be an exit status from 1"):
        spotsafe.Guard(ckpt, state, exit_code=code, watchers=[])


@pytest.mark.parametrize("code", [1, 75, 255])
def test_exit_codes_from_1_to_255_are_accepted(tmp_path, code: int) -> None:
    state = spotsafe.TrainState(model=torch.nn.Linear(2, 2))
    ckpt = spotsafe.Checkpointer(str(tmp_path), events=False)
    assert spotsafe.Guard(ckpt, state, exit_code=code, watchers=[]).exit_code == code
