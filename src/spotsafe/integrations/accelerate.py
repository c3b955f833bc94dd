"""Accelerate on spot capacity: a TrainState from the prepared objects, and a Guard that
counts optimizer steps, not micro-batches.

    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    state = train_state(accelerator, model=model, optimizer=opt, scheduler=sched, loader=loader)
    ckpt = spotsafe.Checkpointer()                        # $SPOTSAFE_STORE
    ckpt.restore(state)
    with AcceleratedGuard(accelerator, ckpt, state) as guard:
        for batch in loader:
            with accelerator.accumulate(model):
                ...; accelerator.backward(loss); opt.step(); sched.step(); opt.zero_grad()
            guard.step()       # a step only when gradients synced: never inside a window

What :func:`train_state` adds to your objects: models unwrapped (their weights, not the
wrapper's), the accelerator's AMP GradScaler when it has one, and the accelerator's own
micro-batch counter (``accelerator.step``, which places the accumulation windows). Prepared
data loaders are recorded like any DataLoader (:class:`spotsafe.ResumableLoader`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spotsafe.checkpoint import Checkpointer
from spotsafe.guard import Guard
from spotsafe.integrations import install_hint
from spotsafe.integrations._common import Live
from spotsafe.state import TrainState

try:
    from accelerate import Accelerator
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(install_hint("accelerate")) from e

__all__ = ["AcceleratedGuard", "train_state"]


def train_state(
    accelerator: Accelerator, *, config: Mapping[str, Any] | str | None = None, **objects: Any
) -> TrainState:
    """A :class:`spotsafe.TrainState` of objects returned by ``accelerator.prepare``.

    Example:
        >>> import torch
        >>> from accelerate import Accelerator
        >>> from spotsafe.integrations.accelerate import train_state
        >>> accelerator = Accelerator(cpu=True)
        >>> model = accelerator.prepare(torch.nn.Linear(2, 1))
        >>> sorted(train_state(accelerator, model=model).objects)
        ['accelerator', 'model']
    """
    import torch

    parts: dict[str, Any] = {}
    for name, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            obj = accelerator.unwrap_model(obj)
        parts[name] = obj
    if accelerator.scaler is not None and "scaler" not in parts:
        parts["scaler"] = accelerator.scaler
    parts["accelerator"] = Live(
        lambda: {"step": accelerator.step},
        lambda saved: setattr(accelerator, "step", int(saved["step"])),
    )
    return TrainState(config=config, **parts)


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
