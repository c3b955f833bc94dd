"""The stop file: its appearance is a STOP (Kubernetes preStop hooks, tests)."""

from __future__ import annotations

from pathlib import Path

from spotsafe.interrupt import StopFileWatcher, StopKind

from .conftest import FakeClocks


def test_appearing_file_stops_once_with_a_grace_deadline(
    tmp_path: Path, clocks: FakeClocks
) -> None:
    path = tmp_path / "stop"
    w = StopFileWatcher(path, grace_s=20.0, clock=clocks.mono)
    assert w.poll().requests == ()
    path.write_text("preStop hook\n")
    (r,) = w.poll().requests
    assert r.kind is StopKind.STOP
    assert r.source == f"file:{path}"
    assert r.deadline_s == clocks.mono_s + 20.0
    assert r.detail == {"path": str(path), "reason": "preStop hook"}
    assert w.poll().requests == ()


def test_unreadable_file_is_an_error_not_silence(tmp_path: Path, clocks: FakeClocks) -> None:
    # A directory where the file should be cannot be read, even by root (CI runs as root,
    # so chmod 0 would prove nothing there).
    path = tmp_path / "stop"
    path.mkdir()
    w = StopFileWatcher(path, clock=clocks.mono)
    assert w.poll().requests == ()
    assert w.last_error is not None and "Is a directory" in str(w.last_error)


def test_from_env(tmp_path: Path) -> None:
    assert StopFileWatcher.from_env({}) is None
    w = StopFileWatcher.from_env({"SPOTSAFE_STOP_FILE": str(tmp_path / "s")})
    assert w is not None and w.path == str(tmp_path / "s")
