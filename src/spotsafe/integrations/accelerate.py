"""Accelerate on spot capacity: a TrainState from the prepared objects, and a Guard that
counts optimizer steps, not micro-batches.

    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    state = train_state(accelerator, model=model, optimizer=opt, scheduler=sched, loader=loader)
    ckpt = spotsafe.Checkpointer()                        # $SPOTSAFE_STORE
    ckpt.restore(state)
    with AcceleratedGuard(accelerator, ckpt, state) as guard:
        while state.epoch < epochs:
            for x, y in loader:
                with accelerator.accumulate(model):
                    ...; accelerator.backward(loss); opt.step(); sched.step(); opt.zero_grad()
                guard.step()   # a step only when gradients synced: never inside a window
            guard.end_epoch()

What :func:`train_state` adds to your objects: models unwrapped (their weights, not the
wrapper's), the accelerator's AMP GradScaler when it has one, and the accelerator's own
counters (``accelerator.step``, the micro-batch count that places the accumulation windows,
and each prepared loader's epoch count). A prepared data loader resumes mid-epoch exactly,
as a DataLoader in a :class:`spotsafe.TrainState` does: ``for batch in loader`` goes through
a :class:`spotsafe.ResumableLoader` that records Accelerate's own iteration of it (which
fetches one batch ahead to know where the data ends).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from spotsafe.checkpoint import Checkpointer
from spotsafe.data import NotExactWarning, ResumableLoader, not_exact_reason, shield_workers
from spotsafe.guard import Guard
from spotsafe.integrations import install_hint
from spotsafe.integrations._common import Live
from spotsafe.state import TrainState

try:
    from accelerate import Accelerator
    from accelerate.data_loader import BatchSamplerShard, DataLoaderAdapter
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(install_hint("accelerate")) from e

__all__ = ["AcceleratedGuard", "train_state"]

# Where a prepared loader keeps (a weak reference to) the recorder of its iteration; weak, as
# spotsafe.data keeps its own: a loader and its recorder referring to each other would live
# until a garbage collection.
_RECORDER = "_spotsafe_recorder"


def train_state(
    accelerator: Accelerator, *, config: Mapping[str, Any] | str | None = None, **objects: Any
) -> TrainState:
    """A :class:`spotsafe.TrainState` of objects returned by ``accelerator.prepare``.

    Example:
        >>> import torch
        >>> from accelerate import Accelerator
        >>> from spotsafe.integrations.accelerate import train_state
        >>> accelerator = Accelerator(cpu=True)
        >>> data = torch.utils.data.TensorDataset(torch.arange(8.0))
        >>> loader = torch.utils.data.DataLoader(data, batch_size=2)
        >>> model, loader = accelerator.prepare(torch.nn.Linear(2, 1), loader)
        >>> state = train_state(accelerator, model=model, loader=loader)
        >>> sorted(state.objects), type(state.objects["loader"]).__name__
        (['accelerator', 'loader', 'model'], 'ResumableLoader')
    """
    import torch

    parts: dict[str, Any] = {}
    shards: dict[str, DataLoaderAdapter] = {}
    for name, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            obj = accelerator.unwrap_model(obj)
        elif isinstance(obj, DataLoaderAdapter):
            shards[name] = obj
            obj = _record(obj)
        parts[name] = obj
    if accelerator.scaler is not None and "scaler" not in parts:
        parts["scaler"] = accelerator.scaler

    def counters() -> dict[str, Any]:
        return {"step": accelerator.step, "epochs": {n: s.iteration for n, s in shards.items()}}

    def put_counters(saved: Mapping[str, Any]) -> None:
        accelerator.step = int(saved["step"])
        for n, s in shards.items():
            s.iteration = int(saved["epochs"][n])

    parts["accelerator"] = Live(counters, put_counters)
    state = TrainState(config=config, **parts)
    for name, shard in shards.items():
        reason = not_exact_reason(shard.base_dataloader)
        if reason is not None:
            state.not_exact[name] = reason
            warnings.warn(
                f"train_state({name}=...) will not resume bitwise exactly: {reason}",
                NotExactWarning,
                stacklevel=2,
            )
    return state


class _ShardIteration:
    """A prepared loader as its recorder sees it: iterating it is Accelerate's own iteration
    (device placement, one batch of look-ahead, the end-of-data flag the accumulation windows
    follow); the RNG-holding parts are the base loader's."""

    def __init__(self, shard: DataLoaderAdapter) -> None:
        self.shard = shard

    def __iter__(self) -> Iterator[Any]:
        return _own_class(self.shard).__iter__(self.shard)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self.shard)

    @property
    def generator(self) -> Any:
        return self.shard.base_dataloader.generator

    @property
    def sampler(self) -> Any:
        base = self.shard.base_dataloader
        if isinstance(base.batch_sampler, BatchSamplerShard):
            # Under DDP Accelerate shards the batches: the loader's own `sampler` is then a
            # placeholder, and the shuffle (with the generator Accelerate synchronizes over
            # the ranks at each epoch's start) is the sampler inside the shard.
            inner = getattr(base.batch_sampler.batch_sampler, "sampler", None)
            if inner is not None:
                return inner
        return base.sampler

    @property
    def batch_sampler(self) -> Any:
        return self.shard.base_dataloader.batch_sampler


def _own_class(shard: DataLoaderAdapter) -> Any:
    cls = type(shard)
    return getattr(cls, "_spotsafe_base", cls)


def _record(shard: DataLoaderAdapter) -> ResumableLoader:
    """The recorder of ``shard``'s iteration; from now on ``iter(shard)`` goes through it."""
    held = shard.__dict__.get(_RECORDER)
    recorder = held() if held is not None else None
    if isinstance(recorder, ResumableLoader):
        return recorder
    shield_workers(shard.base_dataloader)  # its workers outlive the signal the Guard flushes on
    recorder = ResumableLoader(_ShardIteration(shard))
    shard.__dict__[_RECORDER] = weakref.ref(recorder)
    # Python looks __iter__ up on the type. Accelerate's adapters answer `__class__` with the
    # base loader's class and have no setter, so the type is set through object's own slot.
    object.__dict__["__class__"].__set__(shard, _recorded_class(_own_class(shard)))
    return recorder


@functools.cache
def _recorded_class(base: type) -> type:
    """``base`` (an Accelerate loader class) whose ``iter()`` goes through the recorder."""

    def __iter__(self: Any) -> Iterator[Any]:
        held = self.__dict__.get(_RECORDER)
        recorder = held() if held is not None else None
        if recorder is None:  # its TrainState is gone: iterate as Accelerate does
            return base.__iter__(self)  # type: ignore[attr-defined,no-any-return]
        return iter(recorder)

    namespace = {
        "__iter__": __iter__,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "_spotsafe_base": base,
    }
    return type(base.__name__, (base,), namespace)


class AcceleratedGuard(Guard):
    """A :class:`spotsafe.Guard` whose ``step()`` counts only micro-batches after which
    gradients synced (``accelerator.sync_gradients``): it saves and stops at optimizer-step
    boundaries, never inside a gradient-accumulation window. Takes the Guard's arguments.

    Example:
        >>> import tempfile, torch, spotsafe
        >>> from accelerate import Accelerator
        >>> from spotsafe.integrations.accelerate import AcceleratedGuard, train_state
        >>> accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
        >>> model = accelerator.prepare(torch.nn.Linear(2, 1))
        >>> state = train_state(accelerator, model=model)
        >>> ckpt = spotsafe.Checkpointer(tempfile.mkdtemp(), allow_ephemeral=True)
        >>> with AcceleratedGuard(accelerator, ckpt, state, every_steps=10, watchers=[]) as g:
        ...     for _ in range(4):
        ...         with accelerator.accumulate(model):
        ...             pass
        ...         g.step()
        >>> state.step
        2
    """

    def __init__(
        self,
        accelerator: Accelerator,
        checkpointer: Checkpointer,
        state: TrainState,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(checkpointer, state, *args, **kwargs)
        self.accelerator = accelerator

    def step(self) -> None:
        """Mark the end of a micro-batch: a training step once gradients synced."""
        if self.accelerator.sync_gradients:
            super().step()
