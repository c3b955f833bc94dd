"""A small but real training run, used to check that resume is bitwise exact.

It draws from every RNG a real job draws from: dropout (torch), augmentation in the dataset
(python ``random``, numpy, torch) in the main process or in loader workers, and the shuffle.
Under torch.distributed (a process group is initialised) the model is DDP, the loader's
sampler a DistributedSampler, and each rank seeds its RNGs with its rank.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
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
    #: dataloader | stateful (bare: TrainState records them), resumable | stateful-wrapped
    #: (in a spotsafe.ResumableLoader), native (a StatefulDataLoader checkpointed by its own
    #: state_dict(), out of spotsafe's sight)
    loader: str = "resumable"
    workers: int = 0
    generator: bool = False  # the loader's own generator=
    sampler_generator: bool = False  # a RandomSampler(generator=...) passed as sampler=
    persistent: bool = False  # persistent_workers=True (with workers > 0)
    batch_size: int = 4
    epochs: int = 3


def make_loader(setup: Setup) -> Any:
    ds = NoisyDataset()
    kwargs: dict[str, Any] = {"batch_size": setup.batch_size, "num_workers": setup.workers}
    if _distributed():
        kwargs["sampler"] = torch.utils.data.DistributedSampler(ds, shuffle=True, seed=3)
    elif setup.sampler_generator:
        g = torch.Generator().manual_seed(55)
        kwargs["sampler"] = torch.utils.data.RandomSampler(ds, generator=g)
    else:
        kwargs["shuffle"] = True
    if setup.generator:
        kwargs["generator"] = torch.Generator().manual_seed(77)
    if setup.persistent:
        kwargs["persistent_workers"] = True
    if setup.loader in ("resumable", "dataloader"):
        loader = torch.utils.data.DataLoader(ds, **kwargs)
        return spotsafe.ResumableLoader(loader) if setup.loader == "resumable" else loader
    from torchdata.stateful_dataloader import StatefulDataLoader

    loader = StatefulDataLoader(ds, **kwargs)
    return spotsafe.ResumableLoader(loader) if setup.loader == "stateful-wrapped" else loader


class OwnState:
    """A loader's own state_dict() under another name: TrainState sees no loader in it."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def state_dict(self) -> Any:
        return self.loader.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.loader.load_state_dict(state)


class Interrupted(Exception):
    """The run stopped where the test asked it to."""


def train(
    store: str | None, setup: Setup, *, stop_at: int | None = None, save_every: int = 3
) -> dict[str, torch.Tensor]:
    """Train from scratch or from the newest checkpoint; return model + optimizer tensors.

    Without a store, the run is a plain one: its loader is in no TrainState.

    With ``stop_at``, save at that step and raise :class:`Interrupted`, as a preempted
    process would. Each call starts like a new process: seeds first, then everything built.
    """
    seed = dist.get_rank() if _distributed() else 0  # per rank: its RNG streams stay apart
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model: nn.Module = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    if _distributed():
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    loader = make_loader(setup)
    held = {"loader": OwnState(loader)} if setup.loader == "native" else {"loader": loader}
    if store is None:
        held = {}  # a plain run, as without spotsafe: nothing records the loader
    state = spotsafe.TrainState(model=model, optimizer=opt, scheduler=sched, **held)
    ckpt = None
    if store is not None:
        ckpt = spotsafe.Checkpointer(store, keep_last=2)
        ckpt.restore(state)
    try:
        _epochs(state, setup, model, opt, sched, loader, ckpt, stop_at, save_every)
    finally:
        if ckpt is not None:
            ckpt.close()
    return final_tensors(model, opt)


def _epochs(
    state: spotsafe.TrainState,
    setup: Setup,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    loader: Any,
    ckpt: spotsafe.Checkpointer | None,
    stop_at: int | None,
    save_every: int,
) -> None:
    sampler = getattr(loader, "sampler", None)
    while state.epoch < setup.epochs:
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(state.epoch)
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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def plain(setup: Setup) -> Setup:
    """The setup of the plain run that ``setup``'s runs must match: a bare loader of the
    same family (torchdata's StatefulDataLoader shuffles with samplers of its own)."""
    family = (
        "stateful" if setup.loader in ("stateful", "stateful-wrapped", "native") else "dataloader"
    )
    return dataclasses.replace(setup, loader=family)


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
