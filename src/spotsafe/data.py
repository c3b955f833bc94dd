"""Data loaders that resume mid-epoch exactly where they stopped.

The trap: ``iter(loader)`` draws from an RNG (the global torch RNG, or the loader's
``generator``) for the shuffle order and the worker seeds. An uninterrupted run draws once,
at the start of the epoch; a run resumed mid-epoch calls ``iter(loader)`` again and would
draw again, so both the batch order and every later random number (dropout, augmentation)
would differ. :class:`ResumableLoader` records the RNG state at the start of each epoch;
on resume it replays the epoch's start under that state, skips the batches already
consumed, and puts every RNG back to the checkpointed state before the next batch.

Exact by default: :class:`~spotsafe.TrainState` puts every DataLoader it holds under a
ResumableLoader, and the loader's own ``iter()`` goes through it (see `_exact_class`), so the
loop the user wrote, over the loader they built, resumes exactly. What no replay can make
exact (`not_exact_reason`) is said once, at construction, and recorded in the checkpoint.
"""

from __future__ import annotations

import atexit
import functools
import logging
import multiprocessing
import multiprocessing.util  # registers its exit function now, before ours (see _at_exit)
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, SupportsIndex

import torch

from spotsafe import rng
from spotsafe.errors import ConfigError

log = logging.getLogger("spotsafe")

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
    loader = _tracker_of(loader) or loader
    if isinstance(loader, ResumableLoader):
        live, loader._live = loader.live_epoch(), None
        if live is not None:
            _end_workers(live._it, loader.loader)
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


class NotExactWarning(UserWarning):
    """A loader in a :class:`~spotsafe.TrainState` cannot resume bitwise exactly."""


def not_exact_reason(loader: Any) -> str | None:
    """Why ``loader`` (or the loader a ResumableLoader wraps) cannot resume bitwise exactly,
    ending with the one-line fix; None when it can.

    Example:
        >>> import torch, spotsafe
        >>> data = torch.utils.data.TensorDataset(torch.arange(8.0))
        >>> plain = torch.utils.data.DataLoader(data, num_workers=2, persistent_workers=True)
        >>> spotsafe.data.not_exact_reason(plain).split(":")[0]
        'persistent_workers=True'
    """
    if isinstance(loader, ResumableLoader):
        loader = loader.loader
    if not (isinstance(loader, torch.utils.data.DataLoader) and loader.num_workers > 0):
        return None
    if loader.persistent_workers:
        return (
            "persistent_workers=True: its workers' random streams run on from epoch to epoch,"
            " and the new workers of a resumed run cannot continue them (random augmentation"
            " in the dataset would differ); pass persistent_workers=False"
        )
    if getattr(loader, "in_order", True) is False:
        return (
            "in_order=False: batches come in the order the workers finish them, which no"
            " second run repeats; pass in_order=True"
        )
    return None


# Where a DataLoader keeps (a weak reference to) the ResumableLoader that records its
# iteration. Weak: a loader and its recorder that referred to each other would live until a
# garbage collection, and one run in a forked loader worker would finalize their iterators
# there. A loader whose recorder is gone (its TrainState dropped) iterates as it always did.
_TRACKER = "_spotsafe_resumable"


def _tracker_of(loader: Any) -> ResumableLoader | None:
    """The ResumableLoader that records ``loader``'s iteration, if one does."""
    ref = getattr(loader, "__dict__", {}).get(_TRACKER)
    held = ref() if isinstance(ref, weakref.ref) else None
    return held if isinstance(held, ResumableLoader) and held.loader is loader else None


@functools.cache
def _exact_class(base: Any) -> type:
    """``base`` (a DataLoader class) whose ``iter()`` goes through the instance's
    ResumableLoader. The same name, module and methods: only ``__iter__`` differs.

    A loader is made exact by moving it to this class (``loader.__class__ = ...``): Python
    looks ``__iter__`` up on the type, never on the instance, so nothing less reaches the
    ``for batch in loader`` the user wrote. Wrapping the sampler instead sees an epoch start
    but not the batches consumed (the loader prefetches from it), nor the iterator a
    StatefulDataLoader keeps; patching ``_get_iterator`` misses every epoch of a loader with
    persistent workers, which resets its iterator instead.
    """

    def __iter__(self: Any) -> Iterator[Any]:
        tracker = _tracker_of(self)
        if tracker is None:  # a copy, or a loader built by type(loader)(...)
            return base.__iter__(self)  # type: ignore[no-any-return]
        return iter(tracker)

    def __reduce_ex__(self: Any, protocol: SupportsIndex) -> Any:
        # Pickled or copied as the plain class: a copy is in no TrainState.
        state = {k: v for k, v in self.__dict__.items() if k != _TRACKER}
        return (_rebuilt, (base, state))

    namespace = {
        "__iter__": __iter__,
        "__reduce_ex__": __reduce_ex__,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "_spotsafe_base": base,
    }
    return type(base.__name__, (base,), namespace)


def _rebuilt(cls: Any, state: dict[str, Any]) -> Any:
    """An instance of ``cls`` holding ``state``, as unpickling builds one."""
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _plain_iter(loader: Any) -> Any:
    """``iter(loader)`` as its own class would do it, bypassing its ResumableLoader."""
    base = getattr(type(loader), "_spotsafe_base", None)
    return iter(loader) if base is None else base.__iter__(loader)


class ResumableLoader:
    """Records a ``torch.utils.data.DataLoader`` (or torchdata ``StatefulDataLoader``) so
    that it resumes mid-epoch exactly.

    :class:`~spotsafe.TrainState` puts every DataLoader it is given under one of these
    itself, so ``TrainState(loader=loader)`` and iterating ``loader`` as usual is enough.
    Built explicitly, the wrapper and the loader are one: iterate either, and
    ``ResumableLoader(loader)`` again returns the same wrapper.

    Resuming mid-epoch replays the data loading (not the training) of the batches already
    consumed in that epoch, which reproduces the shuffle order and the state of every
    worker's RNG. A bare ``StatefulDataLoader`` skips without loading, which is faster but
    not exact (measured with torchdata 0.11: its ``iter()`` draws again on the restored RNGs,
    and its workers restart their RNG streams; see tests/checkpoint/
    test_resume_is_bitwise_exact.py), so it is recorded like any DataLoader.

    Example:
        >>> import torch, spotsafe
        >>> data = torch.utils.data.TensorDataset(torch.arange(8.0))
        >>> plain = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True)
        >>> loader = spotsafe.ResumableLoader(plain)
        >>> state = spotsafe.TrainState(loader=loader)
        >>> len([batch for batch in loader]), len([batch for batch in plain])
        (4, 4)
    """

    loader: Any

    def __new__(cls, loader: Any = None) -> ResumableLoader:
        held = _tracker_of(loader)
        return held if isinstance(held, cls) else super().__new__(cls)

    def __init__(self, loader: Any) -> None:
        if self.__dict__.get("loader") is loader:
            return  # this loader's own, already recording: keep its position
        self.loader = loader
        shield_workers(loader)
        self._consumed = 0  # batches handed out in the current epoch
        self._in_epoch = False
        self._epoch_start: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None  # loaded state for the next __iter__
        # The epoch in progress, while its iterator is held (weak: dropping it leaves the loop).
        self._live: weakref.ref[_Epoch] | None = None
        self.hooked = False  #: whether iterating ``loader`` itself goes through this wrapper
        if isinstance(loader, torch.utils.data.DataLoader):
            try:
                base: Any = getattr(type(loader), "_spotsafe_base", type(loader))
                exact = _exact_class(base)
                loader.__class__ = exact
                loader.__dict__[_TRACKER] = weakref.ref(self)
                self.hooked = True
            except TypeError as e:  # a class whose instances cannot change class
                log.debug("cannot hook %s's iteration: %s", type(loader).__name__, e)

    def __len__(self) -> int:
        return len(self.loader)

    def live_epoch(self) -> _Epoch | None:
        """The iterator of the epoch in progress, while the loop holds it."""
        return None if self._live is None else self._live()

    def _generators(self) -> list[torch.Generator]:
        """The torch.Generators the loader draws from besides the global RNG: its own (the
        worker seeds, the default sampler) and its samplers' (a sampler built with one)."""
        found: list[torch.Generator] = []
        sampler = getattr(self.loader, "sampler", None)
        batch_sampler = getattr(self.loader, "batch_sampler", None)
        for holder in (
            self.loader,
            sampler,
            batch_sampler,
            getattr(batch_sampler, "sampler", None),
        ):
            g = getattr(holder, "generator", None)
            if isinstance(g, torch.Generator) and all(g is not f for f in found):
                found.append(g)
        return found

    def _capture_rng(self) -> dict[str, Any]:
        return {"global": rng.capture(), "generators": [g.get_state() for g in self._generators()]}

    def _restore_rng(self, saved: dict[str, Any]) -> None:
        rng.restore(saved["global"])
        _set_generators(self._generators(), saved)

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        if pending is not None and pending["in_epoch"]:
            it = self._resume_epoch(pending)
        else:
            it = self._start_epoch()
        epoch = _Epoch(self, it)
        self._live = weakref.ref(epoch)
        return epoch

    def _start_epoch(self) -> Any:
        self._epoch_start = self._capture_rng()
        it = _plain_iter(self.loader)
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
            it = _plain_iter(self.loader)
            for _ in range(consumed):
                if next(it, _END) is _END:
                    break
        finally:
            self._restore_rng(now)
        return it

    def state_dict(self) -> dict[str, Any]:
        """Where the epoch stands, and the RNG (and loader) state it began with."""
        return {
            "in_epoch": self._in_epoch,
            "consumed": self._consumed,
            "epoch_start": self._epoch_start,
            "generators": [g.get_state() for g in self._generators()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state`` at the next ``iter()``."""
        if "in_epoch" not in state and callable(getattr(self.loader, "load_state_dict", None)):
            # A StatefulDataLoader's own state, from a checkpoint written before TrainState
            # recorded bare loaders: it resumes at its position, but not bit for bit.
            log.warning(
                "this checkpoint holds the %s's own position (written before spotsafe"
                " recorded bare loaders): it resumes there, but not bitwise exactly",
                type(self.loader).__name__,
            )
            self.loader.load_state_dict(state)
            self._in_epoch, self._consumed, self._epoch_start, self._pending = (
                False, 0, None, None,
            )  # fmt: skip
            return
        _set_generators(self._generators(), state)
        self._in_epoch = bool(state["in_epoch"])
        self._consumed = int(state["consumed"])
        self._epoch_start = state["epoch_start"]
        self._pending = dict(state)

    def __getattr__(self, name: str) -> Any:
        # batch_size, dataset, ...: the wrapped loader's attributes read through.
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def _set_generators(generators: list[torch.Generator], saved: dict[str, Any]) -> None:
    """Put ``generators`` back to their states in ``saved`` (or, from a checkpoint written
    before samplers' generators were recorded, the loader's own one under "generator")."""
    states = saved.get("generators")
    if states is None:
        states = [saved.get("generator")]
    for g, s in zip(generators, states, strict=False):
        if s is not None:
            g.set_state(s)


class _Epoch:
    """The iterator of one epoch of a ResumableLoader: the loader's own iterator, each batch
    counted. Its attributes read through to that iterator."""

    def __init__(self, owner: ResumableLoader, it: Any) -> None:
        self._owner = owner
        self._it = it
        self._pid = os.getpid()

    def __iter__(self) -> _Epoch:
        return self

    def __next__(self) -> Any:
        try:
            batch = next(self._it)
        except StopIteration:
            if self._owner.live_epoch() is self:
                self._owner._in_epoch = False
            self.close()
            raise
        if self._owner.live_epoch() is self:
            self._owner._consumed += 1
        return batch

    def __len__(self) -> int:
        return len(self._it)

    def close(self) -> None:
        """Leave the epoch: its loader workers go now; the loader keeps its position."""
        owner = self._owner
        if owner.live_epoch() is self:
            owner._live = None
        _end_workers(self._it, owner.loader)

    def __del__(self) -> None:
        # The loop was left (a break, an exception) and dropped this iterator: its workers go
        # now, not when the loader's iterator is collected, which for a StatefulDataLoader
        # (it keeps the iterator) is at interpreter exit, where the exit hook sees to them.
        # Never in a forked worker, which holds a copy of this object: its workers are not
        # that process's to shut down.
        if not sys.is_finalizing() and os.getpid() == self.__dict__.get("_pid"):
            self.close()

    def __getattr__(self, name: str) -> Any:
        if name in ("_it", "_owner"):
            raise AttributeError(name)
        return getattr(self._it, name)


_END = object()
