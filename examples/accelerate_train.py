"""Accelerate on spot capacity: ``train_state`` and ``AcceleratedGuard`` around your loop.

A tiny character-level GRU learns the Zen of Python (nothing is downloaded), with gradient
accumulation. Stop it at any step and run it again: it resumes from the newest verified
checkpoint, mid-epoch, and ends with exactly the weights of an uninterrupted run.

    SPOTSAFE_STORE=./accelerate-store python examples/accelerate_train.py
    spotsafe run --store ./accelerate-store -- python examples/accelerate_train.py
    SPOTSAFE_STORE=./accelerate-store torchrun --nproc-per-node 2 examples/accelerate_train.py

On SIGTERM (or a cloud notice) it finishes the accumulation window in progress, saves, and
exits 75.
"""

from __future__ import annotations

import codecs
import contextlib
import io

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

import spotsafe
from spotsafe.integrations.accelerate import AcceleratedGuard, train_state

EPOCHS = 5

# --- data: every window of 33 characters of the Zen of Python ----------------------------
with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
    import this
text = codecs.decode(this.s, "rot13")  # stored ROT13-encoded in CPython
vocab = sorted(set(text))
ids = torch.tensor([vocab.index(c) for c in text])
windows = ids.unfold(0, 33, 8)  # 33 characters every 8
dataset = torch.utils.data.TensorDataset(windows[:, :-1], windows[:, 1:])


class CharModel(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n, 32)
        self.gru = nn.GRU(32, 64, batch_first=True)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(64, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.embed(x))
        return self.head(self.drop(h))


# --- the usual Accelerate set-up ------------------------------------------------------------
set_seed(0)
accelerator = Accelerator(gradient_accumulation_steps=2)
model = CharModel(len(vocab))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
steps = EPOCHS * len(loader) // accelerator.gradient_accumulation_steps
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

# --- spotsafe: what to save (the prepared objects), where, and resume if it can -------------
state = train_state(accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                    loader=loader)  # fmt: skip
checkpointer = spotsafe.Checkpointer()  # $SPOTSAFE_STORE; or Checkpointer("s3://bucket/run")
resumed = checkpointer.restore(state)
print(f"resumed from step {resumed.step}" if resumed else "starting fresh", flush=True)

# --- the loop, as Accelerate's docs write it, plus guard.step() after each micro-batch -------
with AcceleratedGuard(accelerator, checkpointer, state) as guard:
    while state.epoch < EPOCHS:
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            guard.step()  # counts optimizer steps only; saves when due; on a stop: exit 75
        guard.end_epoch()
        print(f"epoch {state.epoch} step {state.step} loss {loss.item():.3f}", flush=True)
checkpointer.close()
print(f"done at step {state.step}", flush=True)
