"""Once its block is left, the Guard leaves nothing behind: the previous signal handlers are
back (a SIGTERM ends the process again), and the loaders' workers are shut down in order,
without losing the loader's position. In-process checks; the real exits of real processes are
in test_workers_never_outlive_their_process.py."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

import spotsafe
from spotsafe.data import _disposes_of
from spotsafe.errors import ConfigError

DATA = torch.utils.data.TensorDataset(torch.arange(16.0))  # 8 batches of 2


def previous_handler(signum: int, frame: object) -> None:  # pragma: no cover - never called
    raise AssertionError("not called")


@pytest.fixture
def sigterm_handler() -> Iterator[None]:
    before = signal.signal(signal.SIGTERM, previous_handler)
    yield
    signal.signal(signal.SIGTERM, before)


def guard(tmp_path: Any, **objects: Any) -> spotsafe.Guard:
    state = spotsafe.TrainState(model=torch.nn.Linear(1, 1), **objects)
    ckpt = spotsafe.Checkpointer(str(tmp_path), events=False)
    return spotsafe.Guard(ckpt, state, every_steps=1000, watchers=[])


def test_a_failed_enter_leaves_the_previous_handlers(tmp_path, sigterm_handler, monkeypatch):
    g = guard(tmp_path)
    g._watchers = None  # read $SPOTSAFE_CLOUD in __enter__, after the handlers are in
    monkeypatch.setenv("SPOTSAFE_CLOUD", "no-such-cloud")
    with pytest.raises(ConfigError, match="SPOTSAFE_CLOUD"), g:
        pass  # pragma: no cover
    assert signal.getsignal(signal.SIGTERM) is previous_handler


@pytest.mark.parametrize("how", ["end", "exception", "stop"])
def test_the_block_shuts_the_loaders_workers_down_and_keeps_their_position(
    tmp_path, sigterm_handler, how: str
) -> None:
    loader = StatefulDataLoader(DATA, batch_size=2, num_workers=2)
    g = guard(tmp_path, loader=loader)
    expected = {"end": contextlib.nullcontext(), "exception": pytest.raises(RuntimeError)}
    with expected.get(how, pytest.raises(SystemExit)), g:
        batches = iter(loader)  # held past the block, like a module-level iterator
        next(batches)
        g.step()
        workers = list(batches._workers)  # type: ignore[attr-defined]
        position = loader.state_dict()
        assert all(w.is_alive() for w in workers)
        if how == "exception":
            raise RuntimeError("the loop failed")
        if how == "stop":
            os.kill(os.getpid(), signal.SIGTERM)
            g.step()
    assert signal.getsignal(signal.SIGTERM) is previous_handler
    assert not any(w.is_alive() for w in workers)
    assert loader.state_dict() == position
    with pytest.raises(ConfigError, match="workers were shut down"):
        next(batches)  # not a silent early end of the epoch
    assert len(list(loader)) == 8  # a new iteration works as before


def test_a_resumable_loader_left_by_break_shuts_its_workers_down_at_once() -> None:
    loader = spotsafe.ResumableLoader(StatefulDataLoader(DATA, batch_size=2, num_workers=2))
    for _ in loader:
        workers = list(loader.loader._iterator._workers)
        break
    # The StatefulDataLoader still holds the iterator; only the ResumableLoader could tell.
    assert loader.loader._iterator is not None
    assert not any(w.is_alive() for w in workers)
    assert len(list(loader)) == 8


def test_a_worker_survives_a_stop_signal_only_while_its_main_process_handles_it(
    sigterm_handler,
) -> None:
    loader = StatefulDataLoader(DATA, batch_size=2, num_workers=2)
    spotsafe.TrainState(loader=loader)  # shields its loaders from the start, Guard or not
    batches = iter(loader)
    next(batches)
    first, second = batches._workers  # type: ignore[attr-defined]
    os.kill(first.pid, signal.SIGTERM)  # this process catches SIGTERM (a Guard would flush)
    first.join(timeout=1.0)
    assert first.is_alive()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # now this process would die of it
    os.kill(second.pid, signal.SIGTERM)
    second.join(timeout=10.0)
    assert second.exitcode == 0  # gone at once; 0: torch reports no failed worker
    batches._shutdown_workers()  # type: ignore[attr-defined]


def test_what_a_worker_reads_of_its_main_process(sigterm_handler) -> None:
    """The input of a worker's decision: whether its main process handles a signal."""
    me = os.getpid()
    assert _disposes_of(me, signal.SIGTERM) is True  # caught
    before = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        assert _disposes_of(me, signal.SIGUSR2) is True  # ignored
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        assert _disposes_of(me, signal.SIGUSR2) is False  # would end the process
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert _disposes_of(2**22 + 1, signal.SIGTERM) is None  # no such process: cannot tell


def test_a_resumed_run_with_nothing_left_writes_no_second_checkpoint(tmp_path) -> None:
    """Leaving the block saves the final state unless it is stored already: a run resumed
    at its last step (restored, nothing to train) must not commit the same state again."""
    for _ in range(2):
        state = spotsafe.TrainState(model=torch.nn.Linear(1, 1))
        ckpt = spotsafe.Checkpointer(str(tmp_path), events=False)
        ckpt.restore(state)
        with spotsafe.Guard(ckpt, state, every_steps=1000, watchers=[]) as g:
            while state.step < 3:
                g.step()
    steps = [c.step for c in spotsafe.Checkpointer(str(tmp_path), events=False).checkpoints()]
    assert steps == [3]
