"""Lightning on spot capacity: one callback, ``SpotsafeCallback()``.

A tiny character-level GRU learns the Zen of Python (nothing is downloaded). Stop it at any
step and run it again: ``trainer.fit()`` resumes by itself (no ``ckpt_path``) from the newest
verified checkpoint, with every RNG and the loader's position mid-epoch, and ends with exactly
the weights of an uninterrupted run.

    SPOTSAFE_STORE=./lightning-store python examples/lightning_train.py
    spotsafe run --store ./lightning-store -- python examples/lightning_train.py

On SIGTERM (or a cloud notice) it finishes the optimizer step in progress, saves, and exits 75
(Lightning alone would exit 0, as if the run had finished).
"""

from __future__ import annotations

import codecs
import contextlib
import io

import lightning.pytorch as pl
import torch
from torch import nn

from spotsafe.integrations.lightning import SpotsafeCallback

# --- data: every window of 33 characters of the Zen of Python ----------------------------
with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
    import this
text = codecs.decode(this.s, "rot13")  # stored ROT13-encoded in CPython
vocab = sorted(set(text))
ids = torch.tensor([vocab.index(c) for c in text])
windows = ids.unfold(0, 33, 8)  # 33 characters every 8
dataset = torch.utils.data.TensorDataset(windows[:, :-1], windows[:, 1:])


# --- the model, as any LightningModule ----------------------------------------------------
class CharModel(pl.LightningModule):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n, 32)
        self.gru = nn.GRU(32, 64, batch_first=True)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(64, n)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        h, _ = self.gru(self.embed(x))
        loss = nn.functional.cross_entropy(self.head(self.drop(h)).flatten(0, 1), y.flatten())
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


pl.seed_everything(0)
loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
trainer = pl.Trainer(
    max_epochs=5,
    accumulate_grad_batches=2,  # spotsafe stops between windows, never inside one
    accelerator="cpu",
    callbacks=[SpotsafeCallback()],  # the store: $SPOTSAFE_STORE (or SpotsafeCallback(store))
    logger=False,
    enable_checkpointing=False,  # spotsafe saves; a ModelCheckpoint for the best model works too
    enable_model_summary=False,
)
trainer.fit(CharModel(len(vocab)), loader)  # resumes by itself when the store has a checkpoint
print(f"done at step {trainer.global_step}", flush=True)
