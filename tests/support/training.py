"""A small but real training run, used to check that resume is bitwise exact.

It draws from every RNG a real job draws from: dropout (torch), augmentation in the dataset
(python ``random``, numpy, torch) in the main process or in loader workers, and the shuffle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import spotsafe


class NoisyDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed points with random augmentation from all three RNG families."""

    def __init__(self, n: int = 40) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(6) * 0.01 + random.random() * 0.01 + float(np.random.rand()) * 0.01
        return self.x[i] + noise, self.y[i]


@dataclass(frozen=True)
class Setup:
    loader: str = "resumable"  # resumable | stateful | stateful-wrapped
    workers: int = 0
    generator: bool = False
    batch_size: int = 4
    epochs: int = 3


def make_loader(setup: Setup) -> Any:
    ds = NoisyDataset()
    kwargs: dict[str, Any] = {
        "batch_size": setup.batch_size,
        "shuffle": True,
        "num_workers": setup.workers,
    }
    if setup.generator:
        kwargs["generator"] = torch.Generator().manual_seed(77)
    if setup.loader == "resumable":
        return spotsafe.ResumableLoader(torch.utils.data.DataLoader(ds, **kwargs))
    from torchdata.stateful_dataloader import StatefulDataLoader

    loader = StatefulDataLoader(ds, **kwargs)
    return spotsafe.ResumableLoader(loader) if setup.loader == "stateful-wrapped" else loader


class Interrupted(Exception):
    """The run stopped where the test asked it to."""


def train(
    store: str | None, setup: Setup, *, stop_at: int | None = None, save_every: int = 3
) -> dict[str, torch.Tensor]:
    """Train from scratch or from the newest checkpoint; return model + optimizer tensors.

    With ``stop_at``, save at that step and raise :class:`Interrupted`, as a preempted
    process would. Each call starts like a new process: seeds first, then everything built.
    """
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    loader = make_loader(setup)
    state = spotsafe.TrainState(model=model, optimizer=opt, scheduler=sched, loader=loader)
    ckpt = None
    if store is not None:
        ckpt = spotsafe.Checkpointer(store, keep_last=2)
        ckpt.restore(state)
    while state.epoch < setup.epochs:
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x), y) + torch.rand(()) * 1e-3
            opt.zero_grad()
            loss.backward()
            opt.step()
            state.step += 1
            if ckpt is not None and state.step == stop_at:
                ckpt.save(state)
                raise Interrupted(state.step)
            if ckpt is not None and state.step % save_every == 0:
                ckpt.save(state)
        state.epoch += 1
        sched.step()
    return final_tensors(model, opt)


def final_tensors(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    for pid, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            if isinstance(v, torch.Tensor):
                out[f"opt.{pid}.{k}"] = v.clone()
    return out


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"
