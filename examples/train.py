"""A small real training run under spotsafe: a character-level language model.

It learns to continue the Zen of Python (the text ships with Python, so nothing is downloaded)
with a tiny GRU, dropout and a shuffled loader, and it can be stopped and resumed at any step
without changing its result by a single bit.

    python examples/train.py --store ./demo-store            # train (resumes if it can)
    SPOTSAFE_STORE=./demo-store python examples/train.py      # the same, as the supervisor runs it
    spotsafe run --store ./demo-store -- python examples/train.py

Kill it (Ctrl-C, SIGTERM, a cloud notice) and run it again: it continues where it stopped.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import random

import numpy as np
import torch
from torch import nn

import spotsafe

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--store", default=None, help="checkpoint store (default: $SPOTSAFE_STORE)")
p.add_argument("--epochs", type=int, default=4)
p.add_argument("--seq", type=int, default=32, help="characters per training example")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--max-lost-work-s", type=float, default=None, help="lost-work budget per stop")
p.add_argument("--every", type=int, default=None, help="save every N steps instead")
args = p.parse_args()

# --- the usual set-up: seeds, data, model, optimizer ------------------------------------
torch.manual_seed(args.seed)
random.seed(args.seed)
np.random.seed(args.seed)

with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
    import this
text = codecs.decode(this.s, "rot13")  # stored ROT13-encoded in CPython
vocab = sorted(set(text))
ids = torch.tensor([vocab.index(c) for c in text])
windows = ids.unfold(0, args.seq + 1, 1)  # every window of seq+1 characters
dataset = torch.utils.data.TensorDataset(windows[:, :-1], windows[:, 1:])


class CharModel(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n, 32)
        self.gru = nn.GRU(32, 96, batch_first=True)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(96, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.embed(x))
        return self.head(self.drop(h))


model = CharModel(len(vocab))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True)  # TrainState records it

# --- spotsafe: what to save, where, and resume if there is something to resume ----------
state = spotsafe.TrainState(
    model=model, optimizer=optimizer, scheduler=scheduler, loader=loader, config=vars(args)
)
checkpointer = spotsafe.Checkpointer(args.store, keep_last=3)
resumed = checkpointer.restore(state)
print(f"resumed from step {resumed.step}" if resumed else "starting fresh", flush=True)

interval = {"every_steps": args.every} if args.every else {}
if args.max_lost_work_s:
    interval = {"max_lost_work_s": args.max_lost_work_s}

# --- the training loop: a plain loop, with guard.step() after each optimizer step ------
with spotsafe.Guard(checkpointer, state, **interval) as guard:
    while state.epoch < args.epochs:
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            guard.step()  # saves when due; on a stop request: flush, exit 75
            if state.step % 50 == 0:
                print(f"epoch {state.epoch} step {state.step} loss {loss.item():.3f}", flush=True)
        scheduler.step()
        guard.end_epoch()
checkpointer.close()
print(f"done at step {state.step}", flush=True)
