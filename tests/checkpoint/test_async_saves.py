"""save_async: the snapshot is of the moment of the call, errors surface, flushes wait."""

from __future__ import annotations

import threading

import pytest
import torch

import spotsafe
from spotsafe.errors import StorageError
from spotsafe.storage.local import LocalStore
from tests.support.tiny import perturb, tiny_state, weights


class SlowStore(LocalStore):
    """Holds every write until released, so the test can act while a save is in flight."""

    def __init__(self, root, fail: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(root)
        self.release = threading.Event()
        self.fail = fail

    def write(self, path, chunks):  # type: ignore[no-untyped-def]
        self.release.wait(timeout=30)
        if self.fail:
            raise StorageError(f"injected failure writing {path}")
        return super().write(path, chunks)


def test_snapshot_holds_the_values_of_the_call(tmp_path) -> None:
    store = SlowStore(tmp_path)
    ckpt = spotsafe.Checkpointer(store)
    state = tiny_state()
    state.step = 1
    expected = weights(state)
    pending = ckpt.save_async(state)
    perturb(state)  # training moves on while the save is in flight
    assert not pending.done()
    store.release.set()
    assert pending.wait().step == 1
    restored = tiny_state(seed=5)
    spotsafe.Checkpointer(str(tmp_path)).restore(restored)
    assert all(torch.equal(expected[k], v) for k, v in weights(restored).items())


def test_background_error_surfaces_from_wait_and_from_the_next_save(tmp_path) -> None:
    store = SlowStore(tmp_path, fail=True)
    store.release.set()
    ckpt = spotsafe.Checkpointer(store)
    state = tiny_state()
    state.step = 1
    with pytest.raises(StorageError, match="injected"):
        ckpt.save_async(state).wait()
    pending = ckpt.save_async(state)
    while not pending.done():
        pending._future.exception(timeout=10)
    state.step = 2
    with pytest.raises(StorageError, match="injected"):
        ckpt.save_async(state)  # the previous failure is reported here, once
    store.fail = False
    assert ckpt.save(state).step == 2


def test_save_waits_for_the_save_in_flight(tmp_path) -> None:
    store = SlowStore(tmp_path)
    ckpt = spotsafe.Checkpointer(store)
    state = tiny_state()
    state.step = 1
    first = ckpt.save_async(state)
    state.step = 2
    threading.Timer(0.2, store.release.set).start()
    info = ckpt.save(state)  # a flush: it must not overtake the first save
    assert first.done() and first.wait().step == 1
    assert info.step == 2
    steps = [c.step for c in ckpt.checkpoints()]
    assert steps == [2, 1]


def test_a_state_over_the_memory_budget_is_saved_synchronously(tmp_path, caplog) -> None:
    ckpt = spotsafe.Checkpointer(str(tmp_path), host_buffer_bytes=1024)
    state = tiny_state()  # ~20 KB of tensors
    state.step = 1
    pending = ckpt.save_async(state)
    assert pending.done() and pending.wait().step == 1  # committed before it returned
    assert "host_buffer_bytes" in caplog.text
    assert ckpt._host_buffers.nbytes == 0  # no snapshot memory held
