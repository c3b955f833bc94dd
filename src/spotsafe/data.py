"""Data loaders that resume mid-epoch exactly where they stopped.

The trap: ``iter(loader)`` draws from an RNG (the global torch RNG, or the loader's
``generator``) for the shuffle order and the worker seeds. An uninterrupted run draws once,
at the start of the epoch; a run resumed mid-epoch calls ``iter(loader)`` again and would
draw again, so both the batch order and every later random number (dropout, augmentation)
would differ. :class:`ResumableLoader` records the RNG state at the start of each epoch;
on resume it replays the epoch's start under that state, skips the batches already
consumed, and puts every RNG back to the checkpointed state before the next batch.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch

from spotsafe import rng

# Signals the main process handles by flushing a checkpoint. Workers must not die of them
# first: the main process shuts its workers down itself once the checkpoint is durable.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _ignore_stop_signals(inner: Callable[[int], None] | None, worker_id: int) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if inner is not None:
        inner(worker_id)


def shield_workers(loader: Any) -> None:
    """Make ``loader``'s worker processes ignore SIGTERM, SIGINT and SIGUSR1.

    Slurm and ``kill -- -PGID`` signal every process of a job; without this, data-loader
    workers die before the main process has flushed its checkpoint.
    """
    fn = getattr(loader, "worker_init_fn", None)
    if isinstance(fn, functools.partial) and fn.func is _ignore_stop_signals:
        return
    if hasattr(loader, "worker_init_fn"):
        loader.worker_init_fn = functools.partial(_ignore_stop_signals, fn)


class ResumableLoader:
    """A ``torch.utils.data.DataLoader`` (or torchdata ``StatefulDataLoader``) that resumes
    mid-epoch exactly.

    Put it in the :class:`~spotsafe.TrainState` and iterate it like the loader it wraps.
    Resuming mid-epoch replays the data loading (not the training) of the batches already
    consumed in that epoch, which reproduces the shuffle order and the state of every
    worker's RNG. A bare ``StatefulDataLoader`` skips without loading, which is faster but
    not exact (measured with torchdata 0.11: its ``iter()`` draws again on the restored RNGs,
    and its workers restart their RNG streams; see tests/checkpoint/
    test_resume_is_bitwise_exact.py), so this wrapper treats it like any DataLoader.

    Example:
        >>> import torch, spotsafe
        >>> data = torch.utils.data.TensorDataset(torch.arange(8.0))
        >>> plain = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True)
        >>> loader = spotsafe.ResumableLoader(plain)
        >>> state = spotsafe.TrainState(loader=loader)
        >>> len([batch for batch in loader])
        4
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        shield_workers(loader)
        self._consumed = 0  # batches handed out in the current epoch
        self._in_epoch = False
        self._epoch_start: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None  # loaded state for the next __iter__

    def __len__(self) -> int:
        return len(self.loader)

    def _generator(self) -> torch.Generator | None:
        g = getattr(self.loader, "generator", None)
        return g if isinstance(g, torch.Generator) else None

    def _capture_rng(self) -> dict[str, Any]:
        g = self._generator()
        return {"global": rng.capture(), "generator": None if g is None else g.get_state()}

    def _restore_rng(self, saved: dict[str, Any]) -> None:
        rng.restore(saved["global"])
        g = self._generator()
        if g is not None and saved["generator"] is not None:
            g.set_state(saved["generator"])

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        if pending is not None and pending["in_epoch"]:
            yield from self._resume_epoch(pending)
            return
        self._epoch_start = self._capture_rng()
        it = iter(self.loader)
        if callable(getattr(self.loader, "state_dict", None)):
            # A StatefulDataLoader keeps sampler state of its own across epochs; its state
            # at the start of this epoch (taken after iter(): before it, it describes the
            # end of the previous epoch and would replay that one).
            self._epoch_start["loader"] = self.loader.state_dict()
        self._consumed = 0
        self._in_epoch = True
        for batch in it:
            self._consumed += 1
            yield batch
        self._in_epoch = False

    def _resume_epoch(self, saved: dict[str, Any]) -> Iterator[Any]:
        self._epoch_start = saved["epoch_start"]
        self._consumed = saved["consumed"]
        self._in_epoch = True
        now = self._capture_rng()  # the checkpointed state, restored by TrainState
        it = self._replay(saved["epoch_start"], saved["consumed"], now)
        for batch in it:
            self._consumed += 1
            yield batch
        self._in_epoch = False

    def _replay(self, epoch_start: dict[str, Any], consumed: int, now: dict[str, Any]) -> Any:
        """An iterator positioned after ``consumed`` batches of the epoch that began in
        ``epoch_start`` (the RNGs, and a StatefulDataLoader's own state)."""
        if epoch_start.get("loader") is not None:
            self.loader.load_state_dict(epoch_start["loader"])
        self._restore_rng(epoch_start)
        try:
            it = iter(self.loader)
            for _ in range(consumed):
                if next(it, _END) is _END:
                    break
        finally:
            self._restore_rng(now)
        return it

    def state_dict(self) -> dict[str, Any]:
        """Where the epoch stands, and the RNG (and loader) state it began with."""
        state: dict[str, Any] = {
            "in_epoch": self._in_epoch,
            "consumed": self._consumed,
            "epoch_start": self._epoch_start,
        }
        g = self._generator()
        state["generator"] = None if g is None else g.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state`` at the next ``iter()``."""
        g = self._generator()
        if g is not None and state.get("generator") is not None:
            g.set_state(state["generator"])
        self._in_epoch = bool(state["in_epoch"])
        self._consumed = int(state["consumed"])
        self._epoch_start = state["epoch_start"]
        self._pending = dict(state)

    def __getattr__(self, name: str) -> Any:
        # batch_size, dataset, ...: the wrapped loader's attributes read through.
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


_END = object()
