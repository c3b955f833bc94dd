"""Real signals to real child processes, plus the in-process rules of SignalCatcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from spotsafe.errors import ConfigError
from spotsafe.interrupt import SignalCatcher, StopFlag, StopKind

CHILD = Path(__file__).with_name("signal_child.py")


def start_child(mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise AssertionError(f"child did not start: {line!r} {proc.communicate()[1]}")
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signal_stops_the_child_with_exit_75(sig: signal.Signals) -> None:
    proc = start_child("stop")
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    lines = out.splitlines()
    report = json.loads(lines[0])
    assert report == {"source": f"signal:{sig.name}", "grace_s": 12.5}
    assert lines[-1] == "restored True"
    assert "previous handler ran" not in out  # ours replaced it while installed


def test_second_sigint_raises_keyboard_interrupt() -> None:
    proc = start_child("twice")
    assert proc.stdout is not None
    os.kill(proc.pid, signal.SIGINT)
    assert proc.stdout.readline().strip() == "stopping"
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out.splitlines() == ["KeyboardInterrupt", "restored True"]


def test_handlers_are_restored_in_process() -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGUSR1, mine)
    try:
        flag = StopFlag()
        catcher = SignalCatcher(flag, signals=[signal.SIGUSR1], clock=lambda: 100.0, grace_s=7.0)
        with catcher:
            assert catcher.installed
            assert signal.getsignal(signal.SIGUSR1) is not mine
            os.kill(os.getpid(), signal.SIGUSR1)
            r = flag.wait(timeout_s=5.0)
        assert signal.getsignal(signal.SIGUSR1) is mine
        assert not catcher.installed
        assert r is not None
        assert (r.source, r.kind, r.received_s, r.deadline_s) == (
            "signal:SIGUSR1",
            StopKind.STOP,
            100.0,
            107.0,
        )
        assert r.detail["signum"] == str(int(signal.SIGUSR1))
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_off_the_main_thread_is_a_clear_error() -> None:
    errors: list[BaseException] = []

    def enter() -> None:
        try:
            with SignalCatcher(StopFlag()):
                pass
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=enter)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], ConfigError)
    assert "main thread" in str(errors[0]) and "signals=()" in str(errors[0])


def test_no_signals_is_allowed_off_the_main_thread() -> None:
    done: list[bool] = []

    def enter() -> None:
        with SignalCatcher(StopFlag(), signals=()) as c:
            done.append(c.installed)

    t = threading.Thread(target=enter)
    t.start()
    t.join(10)
    assert done == [False]


def test_negative_grace_is_rejected() -> None:
    with pytest.raises(ConfigError, match="grace_s"):
        SignalCatcher(StopFlag(), grace_s=-1.0)
