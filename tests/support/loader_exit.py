"""Child: a nanoGPT-style script (all at module level) whose loaders have worker processes.

    python -m tests.support.loader_exit STORE --leave break|raise|stop|end [--guard]
        [--loaders dataloader,persistent,stateful-wrapped,stateful,bare]
    torchrun --standalone --nproc-per-node 2 -m tests.support.loader_exit STORE --ddp ...

Builds one loader of each kind named by ``--loaders`` with ``num_workers=2``: ``dataloader``
(a torch DataLoader in a spotsafe.ResumableLoader), ``persistent`` (the same with
``persistent_workers=True``), ``stateful-wrapped`` (a torchdata StatefulDataLoader in a
ResumableLoader), ``stateful`` (a bare StatefulDataLoader; it keeps its live iterator, and
so its workers, on the loader object) and ``bare`` (a bare torch DataLoader; TrainState
records both bare ones itself). Module-level names hold
them until the interpreter exits, as a script's globals or a trainer object would. One loop
draws a batch from every loader per step and is left mid-epoch as ``--leave`` says: ``break``
or ``raise`` (RuntimeError) after step 3, ``stop``: keep stepping until a signal ends the run,
``end``: run the epochs out. With ``--guard`` the loop runs under a Guard and every loader is
in the TrainState. Prints ``pid RANK PID`` once the loaders exist and ``step N`` after each
step (rank 0 only), and ``workers RANK PID...`` (its child processes, found in /proc) after
step 3, before the loop is left.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import spotsafe
from tests.support.training import NoisyDataset

LIMIT_S = 60.0  # a stop the parent never sends ends the run as a failure, not a hang

p = argparse.ArgumentParser()
p.add_argument("store")
p.add_argument("--leave", choices=["break", "raise", "stop", "end"], required=True)
p.add_argument("--guard", action="store_true")
p.add_argument("--ddp", action="store_true")
p.add_argument("--loaders", default="dataloader,persistent,stateful-wrapped,stateful,bare")
p.add_argument("--epochs", type=int, default=2)
args = p.parse_args()

rank = 0
if args.ddp:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
torch.manual_seed(rank)


def children() -> list[int]:
    """This process's child processes: its loader workers."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone meanwhile
        if ppid == me:
            found.append(int(entry))
    return sorted(found)


def make(kind: str) -> Any:
    ds = NoisyDataset(n=40)  # 10 batches of 4 per epoch (per rank under DDP: 5)
    kwargs: dict[str, Any] = {"batch_size": 4, "num_workers": 2}
    if args.ddp:
        kwargs["sampler"] = torch.utils.data.DistributedSampler(ds, shuffle=True, seed=3)
    else:
        kwargs["shuffle"] = True
    if kind == "bare":
        return torch.utils.data.DataLoader(ds, **kwargs)
    if kind in ("dataloader", "persistent"):
        kwargs["persistent_workers"] = kind == "persistent"
        return spotsafe.ResumableLoader(torch.utils.data.DataLoader(ds, **kwargs))
    from torchdata.stateful_dataloader import StatefulDataLoader

    loader = StatefulDataLoader(ds, **kwargs)
    return spotsafe.ResumableLoader(loader) if kind == "stateful-wrapped" else loader


loaders = {kind.replace("-", "_"): make(kind) for kind in args.loaders.split(",")}
model: nn.Module = nn.Linear(6, 1)
if args.ddp:
    model = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
state = spotsafe.TrainState(model=model, optimizer=opt, **loaders)
ckpt = spotsafe.Checkpointer(args.store, keep_last=2)
guard = spotsafe.Guard(ckpt, state, every_steps=1000) if args.guard else None
print(f"pid {rank} {os.getpid()}", flush=True)
epochs = 10_000 if args.leave == "stop" else args.epochs
deadline = time.monotonic() + LIMIT_S

with guard if guard is not None else nullcontext():
    while state.epoch < epochs:
        for batches in zip(*loaders.values(), strict=True):
            loss = sum(nn.functional.mse_loss(model(x), y) for x, y in batches)
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            if guard is not None:
                guard.step()
            else:
                state.step += 1
            if rank == 0:
                print(f"step {state.step}", flush=True)
            if state.step == 3:
                print(f"workers {rank} {' '.join(map(str, children()))}", flush=True)
            if args.leave == "stop":
                time.sleep(0.05)  # the parent's signal lands mid-epoch
                if time.monotonic() > deadline:
                    sys.exit("no stop signal came")
            if state.step == 3 and args.leave == "raise":
                raise RuntimeError("the loop failed at step 3")
            if state.step == 3 and args.leave == "break":
                break
        else:
            if guard is not None:
                guard.end_epoch()
            else:
                state.epoch += 1
            continue
        break
ckpt.close()
if args.ddp:
    dist.destroy_process_group()
print(f"done {state.step}", flush=True)
