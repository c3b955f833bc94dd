"""Child for torchrun: a 2-rank DDP run (gloo, CPU) under a Guard.

    torchrun --standalone --nproc-per-node 2 -m tests.support.ddp_train STORE [--step-s S]

Each rank prints ``pid RANK PID`` once guarded; rank 0 prints ``step N`` after each step.
"""

from __future__ import annotations

import argparse
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import spotsafe
from tests.support.training import NoisyDataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--step-s", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # Seeds differ per rank, as they often do: each rank's RNG stream must be kept apart.
    torch.manual_seed(rank)
    random.seed(rank)
    np.random.seed(rank)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    )
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    ds = NoisyDataset()
    sampler = torch.utils.data.DistributedSampler(ds, shuffle=True, seed=3)
    # A bare DataLoader, as torch documents it: TrainState records it (exact by default).
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler)
    state = spotsafe.TrainState(model=model, optimizer=opt, loader=loader)
    ckpt = spotsafe.Checkpointer(args.store, keep_last=2)
    ckpt.restore(state)
    with spotsafe.Guard(ckpt, state, every_steps=4) as guard:
        print(f"pid {rank} {os.getpid()}", flush=True)
        while state.epoch < args.epochs:
            sampler.set_epoch(state.epoch)
            for x, y in loader:
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if args.step_s:
                    time.sleep(args.step_s)
                guard.step()
                if rank == 0:
                    print(f"step {state.step}", flush=True)
            guard.end_epoch()
    ckpt.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
