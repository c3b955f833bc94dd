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

import atexit
import functools
import multiprocessing
import multiprocessing.util  # registers its exit function now, before ours (see _at_exit)
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import torch

from spotsafe import rng
from spotsafe.errors import ConfigError

# Signals the main process handles by flushing a checkpoint. Workers must not die of them
# first: the main process shuts its workers down itself once the checkpoint is durable.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

# Worker shutdown, and why it cannot hang.
#
# Slurm and `kill -- -PGID` signal every process of the job at once. A loader worker that
# died of that signal would make torch's SIGCHLD handler raise in the main process, in the
# middle of its flush; so workers are "shielded". Ignoring the signals (SIG_IGN) is not a
# shield but a deadlock: at interpreter exit multiprocessing SIGTERMs its daemonic children
# and joins them without a timeout, so every process whose loader outlived its loop (a
# StatefulDataLoader keeps its live iterator on the loader; a script's module-level loader
# lives until the interpreter exits) waited forever, on the stop path (after its checkpoint)
# as on the normal one.
#
# The rule: a shielded worker shares its main process's fate. On a stop signal it reads how
# its main process disposes of that signal (/proc/PID/status, SigCgt/SigIgn): if the main
# process is alive and catches or ignores it (a Guard is flushing, or the user's own handler
# runs), the worker carries on and the main process shuts it down when it is done; otherwise
# (the main process is gone, or dies of the signal) the worker exits at once, with status 0
# so that torch does not report a failed worker. At interpreter exit, before multiprocessing
# sends its SIGTERMs, the main process restores SIGTERM's default (_at_exit): its work is
# done, so a SIGTERM ends it and, by the rule, its workers. The rule needs no list of
# iterators, so it also covers those spotsafe never sees, under every start method. On top of
# it, the main process shuts workers down in order (torch's done_event, no signal) as soon as
# a loop is left: the ResumableLoader when its iteration ends, the Guard for every loader in
# its state when its block ends (release_workers). Measured (tests/guard/
# test_workers_never_outlive_their_process.py): every way of leaving the loop ends the process
# within 4 s on a busy 2-core machine, torch's own teardown included, with no worker left;
# with SIG_IGN, all of them but one hung forever.

_exit_hook_registered = False


def _disposes_of(pid: int, signum: int) -> bool | None:
    """Whether process ``pid`` catches or ignores ``signum``; None if this OS cannot say."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        handled = int(fields["SigCgt"], 16) | int(fields["SigIgn"], 16)
    except (OSError, KeyError, ValueError):
        return None
    return bool(handled >> (signum - 1) & 1)


def _on_stop_signal(main: BaseProcess, signum: int, frame: FrameType | None) -> None:
    # Runs in the worker's main thread. Where /proc cannot tell (not Linux) the worker keeps
    # the old shield: it carries on while the main process lives.
    if main.is_alive() and _disposes_of(main.pid or 0, signum) is not False:
        return
    os._exit(0)  # no cleanup: queue threads could block on a parent that is gone


def _shield_worker(inner: Callable[[int], None] | None, worker_id: int) -> None:
    main = multiprocessing.parent_process()  # the main process under fork, spawn, forkserver
    # Only a worker process may change its signal handlers (a thread worker runs inside the
    # main process, and only the main thread may install handlers at all).
    if main is not None and threading.current_thread() is threading.main_thread():
        handler = functools.partial(_on_stop_signal, main)
        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
    if inner is not None:
        inner(worker_id)


def _at_exit() -> None:
    # atexit runs hooks last-registered-first: this one (registered after torch imported
    # multiprocessing.util) runs before multiprocessing's exit function, which SIGTERMs the
    # daemonic workers and joins them without a timeout.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def shield_workers(loader: Any) -> None:
    """Make ``loader``'s worker processes outlive SIGTERM, SIGINT and SIGUSR1 while the main
    process handles that signal itself, and end with the main process otherwise.

    Slurm and ``kill -- -PGID`` signal every process of a job; without this, data-loader
    workers die before the main process has flushed its checkpoint. Workers never outlive
    their main process and never block its exit: see the comment above.
    """
    global _exit_hook_registered
    fn = getattr(loader, "worker_init_fn", None)
    if isinstance(fn, functools.partial) and fn.func is _shield_worker:
        return
    if hasattr(loader, "worker_init_fn"):
        loader.worker_init_fn = functools.partial(_shield_worker, fn)
        if not _exit_hook_registered:
            atexit.register(_at_exit)
            _exit_hook_registered = True


def release_workers(loader: Any) -> None:
    """Shut down the worker processes of ``loader``'s iteration in progress, if it has one.

    The Guard calls this for every loader in its state when its block ends. The loader keeps
    its position (``state_dict()`` still describes it), and the next ``iter(loader)`` works
    as before; asking the interrupted iterator for another batch raises, rather than ending
    the epoch early without a word (what torch does on an iterator whose workers are gone).
    Loaders with ``persistent_workers=True`` keep their workers: their next ``iter()`` reuses
    them; they end at interpreter exit.

    Example:
        >>> import torch, spotsafe
        >>> data = torch.utils.data.TensorDataset(torch.arange(8.0))
        >>> loader = spotsafe.ResumableLoader(torch.utils.data.DataLoader(data, batch_size=2))
        >>> batches = iter(loader)
        >>> first = next(batches)
        >>> spotsafe.data.release_workers(loader)
    """
    if isinstance(loader, ResumableLoader):
        live, loader._live = loader._live, None
        _end_workers(live, loader.loader)
        loader = loader.loader
    _end_workers(getattr(loader, "_iterator", None), loader)  # a StatefulDataLoader keeps it


def _end_workers(it: Any, loader: Any) -> None:
    """Shut down the workers of ``loader``'s multi-process iterator ``it``, torch's own
    orderly way (done_event, then a None on each index queue)."""
    if getattr(loader, "persistent_workers", False):
        return  # the next iter() resets this iterator and reuses its workers
    if getattr(it, "_shutdown", True) or not callable(getattr(it, "_shutdown_workers", None)):
        return  # none, single-process, or already shut down (its epoch ran out)
    it._shutdown_workers()
    it._next_data = _workers_released  # shadows the method: __next__ calls self._next_data()


def _workers_released() -> Any:
    raise ConfigError(
        "this data-loader iterator's workers were shut down when its loop was left (the end "
        "of the Guard's block); start a new iteration with iter(loader)"
    )


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
        self._live: Any = None  # the wrapped loader's iterator of the epoch in progress

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
            it = self._resume_epoch(pending)
        else:
            it = self._start_epoch()
        self._live = it
        try:
            for batch in it:
                self._consumed += 1
                yield batch
            self._in_epoch = False
        finally:
            # The loop is left (a break or an exception closes this generator; the epoch may
            # also have run out): its workers go now, not when the iterator is collected,
            # which for a StatefulDataLoader (it keeps the iterator) is at interpreter exit.
            if self._live is it:
                self._live = None
            _end_workers(it, self.loader)

    def _start_epoch(self) -> Any:
        self._epoch_start = self._capture_rng()
        it = iter(self.loader)
        if callable(getattr(self.loader, "state_dict", None)):
            # A StatefulDataLoader keeps sampler state of its own across epochs; its state
            # at the start of this epoch (taken after iter(): before it, it describes the
            # end of the previous epoch and would replay that one).
            self._epoch_start["loader"] = self.loader.state_dict()
        self._consumed = 0
        self._in_epoch = True
        return it

    def _resume_epoch(self, saved: dict[str, Any]) -> Any:
        self._epoch_start = saved["epoch_start"]
        self._consumed = saved["consumed"]
        self._in_epoch = True
        now = self._capture_rng()  # the checkpointed state, restored by TrainState
        return self._replay(saved["epoch_start"], saved["consumed"], now)

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
