"""The Lightning scenarios of tests/integrations (run by tests/support/integrations_child.py).

The workload: an MLP with dropout, 48 samples whose ``__getitem__`` adds noise from torch,
numpy and python's ``random``, a shuffling loader with 2 workers, batch 4,
``accumulate_grad_batches=2`` (6 optimizer steps an epoch, 2 epochs), validation twice an
epoch, a ``ModelCheckpoint`` on ``val_loss`` and an epoch-interval StepLR.

- reference: an uninterrupted run with SpotsafeCallback.
- term: SIGTERM between the two batches of optimizer step STOP; the same command again is
  SIGKILLed while committing its final checkpoint (after printing its final weights); then,
  with the newest valid checkpoint corrupted, once more (it falls back).
- native_*: Lightning's own way: ``ModelCheckpoint(every_n_train_steps=3, save_last=True)``,
  SIGTERM inside the window of step 5, ``fit(ckpt_path=last.ckpt)``; and its uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from spotsafe.integrations.lightning import SpotsafeCallback
from tests.support import integrations_common as common

EPOCHS = 2
STEPS = 12  # 48 samples / (batch 4 x accumulation 2) = 6 optimizer steps an epoch
EVERY = 3
DDP_STEPS = 6  # 2 ranks: each trains on half the samples, 3 optimizer steps an epoch


class Noisy(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed inputs plus noise drawn from torch, numpy and python in ``__getitem__``."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.01 * torch.randn(8) + float(np.random.rand()) * 0.01 + random.random() * 0.01
        return self.x[i] + noise, self.y[i]


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=0.01)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class Data(pl.LightningDataModule):
    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(Noisy(48, 1), batch_size=4, shuffle=True, num_workers=2)

    def val_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(Noisy(8, 2), batch_size=8)


class Inject(pl.Callback):
    """Prints each optimizer step and the final weights; sends this process a real signal
    at a chosen point."""

    def __init__(self, sig: int | None, step: int) -> None:
        self.sig = sig
        self.step = step
        self.seen = 0

    def on_train_start(self, trainer: Any, module: Any) -> None:
        self.seen = trainer.global_step

    def on_train_batch_end(self, trainer: Any, module: Any, out: Any, b: Any, i: int) -> None:
        if trainer.global_step != self.seen:
            self.seen = trainer.global_step
            print(f"step {trainer.global_step}", flush=True)
        elif self.sig is not None and trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.sig)  # after the window's first batch: inside it

    def on_train_end(self, trainer: Any, module: Any) -> None:
        # Before SpotsafeCallback's (later in the list), which saves the final state: a run
        # killed in that save has printed its result.
        common.print_final(module, trainer.optimizers[0])


def one_run(spec: dict[str, Any], out: Path) -> int:
    pl.seed_everything(0, verbose=False)
    callbacks: list[Any] = [Inject(spec.get("signal"), spec.get("at_step", -1))]
    callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=out / "best", monitor="val_loss"))
    ckpt = None
    if spec["kind"] == "spotsafe":
        ckpt = common.checkpointer(spec)
        callbacks.append(SpotsafeCallback(checkpointer=ckpt, every_steps=EVERY))
    elif spec.get("save_steps"):
        callbacks.append(
            pl.callbacks.ModelCheckpoint(
                dirpath=out / "steps", every_n_train_steps=EVERY, save_top_k=-1, save_last=True
            )
        )
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accumulate_grad_batches=2,
        val_check_interval=0.5,
        accelerator="cpu",
        devices=spec.get("world", 1),
        strategy="ddp" if spec.get("world") else "auto",
        callbacks=callbacks,
        default_root_dir=str(out),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.fit(Model(), Data(), ckpt_path=spec.get("ckpt_path"))
    finally:
        if ckpt is not None:
            ckpt.close()
    return 0


def scenarios(work: Path, stop: int) -> dict[str, Any]:
    def run(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return common.run(one_run, name, spec, work)

    results: dict[str, Any] = {"stop_step": stop, "steps": STEPS, "every": EVERY}
    store = work / "store"
    spotsafe = {"kind": "spotsafe", "store": str(store)}
    results["reference"] = run("reference", {"kind": "spotsafe", "store": str(work / "ref")})
    results["term"] = run("term", {**spotsafe, "signal": signal.SIGTERM, "at_step": stop})
    results["term_ckpts"] = common.checkpoints(store)
    # The same command again resumes; SIGKILL it between the data files and the manifest of
    # its final save.
    results["resume_killed"] = run("resume_killed", {**spotsafe, "kill_saving": STEPS})
    results["killed_ckpts"] = common.checkpoints(store)
    results["fallbacks"] = common.corrupt_newest_valid(store)
    results["corrupt_resume"] = run("corrupt_resume", spotsafe)
    results["corrupt_ckpts"] = common.checkpoints(store)
    # Lightning's own documented way, for comparison. SIGTERM inside the window of step 5:
    # Lightning stops after that batch, before the step, and exits 0; last.ckpt is step 3.
    results["native_reference"] = run("native_reference", {"kind": "plain"})
    native = {"kind": "plain", "save_steps": True, "out": "native"}
    native_term = {"signal": signal.SIGTERM, "at_step": 5}
    results["native_term"] = run("native_term", {**native, **native_term})
    last = work / "native" / "steps" / "last.ckpt"
    results["native_resume"] = run("native_resume", {**native, "ckpt_path": str(last)})
    return results


def ddp_scenarios(work: Path, stop: int) -> dict[str, Any]:
    """The 2-rank DDP scenario of :func:`integrations_common.ddp_scenarios`."""
    reference = {"kind": "spotsafe", "store": str(work / "ref")}
    term = {"signal": signal.SIGTERM}
    return common.ddp_scenarios(
        one_run, work, stop=stop, steps=DDP_STEPS, reference=reference, term=term
    )
