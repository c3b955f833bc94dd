"""Child process: the training run of tests/support/training.py under a Guard.

    python -m tests.support.guarded_train STORE [--every N] [--step-s S] [--epochs E]

Prints ``step N`` after each step and, at the end, ``final <xxh3 of every weight and
optimizer tensor>``, so a parent can compare runs bit for bit.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
import xxhash
from torch import nn

import spotsafe
from tests.support.training import Setup, final_tensors, make_loader


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = xxhash.xxh3_128()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--step-s", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--sync", action="store_true")
    args = p.parse_args()

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    loader = make_loader(Setup(workers=args.workers, epochs=args.epochs))
    state = spotsafe.TrainState(model=model, optimizer=opt, loader=loader)
    ckpt = spotsafe.Checkpointer(args.store, keep_last=2)
    info = ckpt.restore(state)
    print(f"resumed {info.step if info else 0}", flush=True)
    with spotsafe.Guard(ckpt, state, every_steps=args.every, async_saves=not args.sync) as guard:
        print("guarded", flush=True)  # handlers are installed from here on
        while state.epoch < args.epochs:
            for x, y in loader:
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if args.step_s:
                    time.sleep(args.step_s)  # a slower step, so signals land mid-step
                guard.step()
                print(f"step {state.step}", flush=True)
            guard.end_epoch()
    ckpt.close()
    print(f"final {digest(final_tensors(model, opt))}", flush=True)


if __name__ == "__main__":
    main()
