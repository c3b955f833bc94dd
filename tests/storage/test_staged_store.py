"""Two tiers: a fast local staging directory in front of the durable store. Durable means
"manifest in the durable store"; uploads keep the manifest last; a stop flushes them."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.errors import StorageError
from spotsafe.storage import StagedStore
from spotsafe.storage.local import LocalStore
from tests.support.tiny import perturb, tiny_state, weights


class RecordingStore(LocalStore):
    """A durable store that records the order of writes and can hold or fail them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.order: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.failures = 0

    def write(self, path, chunks):  # type: ignore[no-untyped-def]
        self.gate.wait(timeout=30)
        if self.failures:
            self.failures -= 1
            raise StorageError(f"injected failure writing {path}")
        self.order.append(path)
        return super().write(path, chunks)


def test_write_is_readable_at_once_and_durable_after_flush(tmp_path) -> None:
    durable = RecordingStore(tmp_path / "durable")
    durable.gate.clear()
    staged = StagedStore(durable, tmp_path / "staging")
    staged.write_bytes("a/b.bin", b"hello")
    assert staged.read_bytes("a/b.bin") == b"hello"  # from staging
    assert staged.list("a") == {}  # not durable yet: discovery does not see it
    durable.gate.set()
    staged.flush()
    assert durable.read_bytes("a/b.bin") == b"hello"
    assert not (tmp_path / "staging" / "a" / "b.bin").exists()  # staging is freed
    staged.close()


def test_manifest_reaches_the_durable_store_last(tmp_path) -> None:
    durable = RecordingStore(tmp_path / "durable")
    ckpt = spotsafe.Checkpointer(durable, staging=tmp_path / "staging", shard_bytes=4096,
                                 events=False)  # fmt: skip
    state = tiny_state(width=64)
    state.step = 7
    ckpt.save(state)
    ckpt.flush()
    written = [p for p in durable.order if p.startswith("checkpoints/")]
    assert len(written) > 2 and written[-1].endswith("MANIFEST.json")
    ckpt.close()


def test_a_new_machine_sees_only_durable_checkpoints(tmp_path) -> None:
    durable = RecordingStore(tmp_path / "durable")
    ckpt = spotsafe.Checkpointer(durable, staging=tmp_path / "staging", events=False)
    state = tiny_state()
    state.step = 1
    ckpt.save(state)
    ckpt.flush()
    at_1 = weights(state)
    durable.gate.clear()  # the uploads of the next save stall (a slow link)
    perturb(state)
    state.step = 2
    ckpt.save(state)  # staged: returns before it is durable
    elsewhere = tiny_state(seed=4)
    info = spotsafe.Checkpointer(str(tmp_path / "durable"), events=False).restore(elsewhere)
    assert info is not None and info.step == 1 and not info.fell_back
    assert all(torch.equal(at_1[k], v) for k, v in weights(elsewhere).items())
    durable.gate.set()
    ckpt.close()
    info = spotsafe.Checkpointer(str(tmp_path / "durable"), events=False).restore(tiny_state())
    assert info is not None and info.step == 2


def test_failed_uploads_are_reported_by_flush_and_retried(tmp_path) -> None:
    durable = RecordingStore(tmp_path / "durable")
    durable.failures = 2
    staged = StagedStore(durable, tmp_path / "staging", sleep=lambda s: None)
    staged.write_bytes("x.bin", b"1")
    with pytest.raises(StorageError, match="injected"):
        staged.flush()
    for _ in range(2):  # a flush reports the newest failure; the retries go on behind it
        try:
            staged.flush()
            break
        except StorageError as e:
            assert "injected" in str(e)
    staged.flush()  # the retries went through
    assert durable.read_bytes("x.bin") == b"1"
    staged.close()


def test_retention_keeps_the_data_of_a_checkpoint_still_uploading(tmp_path) -> None:
    durable = RecordingStore(tmp_path / "durable")
    staged = StagedStore(durable, tmp_path / "staging")
    staged.write_bytes("checkpoints/step-000000000002-aaaaaaaa/data-000.bin", b"d")
    staged.flush()
    durable.gate.clear()
    staged.write_bytes("checkpoints/step-000000000002-aaaaaaaa/MANIFEST.json", b"m")
    staged.delete(["checkpoints/step-000000000002-aaaaaaaa/data-000.bin"])
    assert durable.list("checkpoints") != {}  # kept: its manifest is on its way
    durable.gate.set()
    staged.close()


def test_a_stop_request_waits_for_the_uploads(tmp_path) -> None:
    durable = RecordingStore(tmp_path / "durable")
    ckpt = spotsafe.Checkpointer(durable, staging=tmp_path / "staging", events=False)
    state = tiny_state()
    guard = spotsafe.Guard(ckpt, state, every_steps=1000, watchers=[])
    with pytest.raises(SystemExit) as stopped, guard:  # the Guard sees the SystemExit leave
        guard.step()
        durable.gate.clear()  # uploads stall for a while: the exit must wait for them
        threading.Timer(0.5, durable.gate.set).start()
        os.kill(os.getpid(), signal.SIGTERM)
        guard.step()
    assert stopped.value.code == 75
    listing = spotsafe.Checkpointer(str(tmp_path / "durable"), read_only=True).checkpoints()
    assert [c.step for c in listing if c.status.value == "valid"] == [2]
    ckpt.close()


def test_a_staged_file_that_vanished_is_reported_and_the_uploader_lives_on(tmp_path) -> None:
    # Someone cleaned the staging directory before the upload: the upload thread died on
    # the FileNotFoundError, and every later flush hung (or timed out) for good.
    durable = RecordingStore(tmp_path / "durable")
    durable.gate.clear()  # hold the first upload until its file is gone
    staged = StagedStore(durable, tmp_path / "staging", sleep=lambda s: None)
    staged.write_bytes("a/one.bin", b"1")
    staged.write_bytes("a/two.bin", b"2")
    (tmp_path / "staging" / "a" / "two.bin").unlink()
    durable.gate.set()
    with pytest.raises(StorageError, match="vanished before its upload"):
        staged.flush(timeout_s=10)
    staged.write_bytes("b/three.bin", b"3")
    staged.flush(timeout_s=10)  # the uploader still runs
    assert set(durable.list()) == {"a/one.bin", "b/three.bin"}
    staged.close()
