"""Child process: every Lightning scenario of tests/integrations, in one process.

    python -m tests.support.integrations_lightning WORKDIR STOP_STEP

Importing lightning costs seconds, so this process imports it once and forks one grandchild
per training run (a real process: real signals, its own exit status). The workload: an MLP
with dropout, 48 samples whose ``__getitem__`` adds noise from torch, numpy and python's
``random``, a shuffling loader with 2 workers, batch 4, ``accumulate_grad_batches=2`` (6
optimizer steps an epoch, 3 epochs), validation twice an epoch, a ``ModelCheckpoint`` on
``val_loss`` and an epoch-interval StepLR.

- reference: an uninterrupted run with SpotsafeCallback.
- term: SIGTERM between the two batches of optimizer step STOP_STEP; the same command again
  is SIGKILLed while committing its final checkpoint; then again (resume); and from a copy of
  the store taken after the SIGTERM whose newest checkpoint had a byte flipped.
- native_*: Lightning's own way: ``ModelCheckpoint(every_n_train_steps=3, save_last=True)``,
  SIGTERM at step 8, ``fit(ckpt_path=last.ckpt)``; and its uninterrupted run.

Writes WORKDIR/results.json (exit statuses, steps, digests of the final weights and
optimizer state, each store's checkpoints); the test asserts.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

import spotsafe
from spotsafe.integrations.lightning import SpotsafeCallback
from tests.support.guarded_train import digest

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

STEPS = 18  # 48 samples / (batch 4 x accumulation 2) = 6 optimizer steps an epoch, 3 epochs


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
    """Prints each optimizer step; sends this process a real signal at a chosen point."""

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


def one_run(spec: dict[str, Any], out: Path) -> int:
    pl.seed_everything(0, verbose=False)
    callbacks: list[Any] = [Inject(spec.get("signal"), spec.get("at_step", -1))]
    callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=out / "best", monitor="val_loss"))
    ckpt = None
    if spec["kind"] == "spotsafe":
        ckpt = spotsafe.Checkpointer(spec["store"], keep_last=3)
        kill_at = spec.get("kill_saving")
        if kill_at is not None:
            write = ckpt.store.write_bytes

            def write_bytes(path: str, data: Any) -> int:
                if path.endswith("MANIFEST.json") and f"step-{kill_at:012d}" in path:
                    os.kill(os.getpid(), signal.SIGKILL)
                return write(path, data)

            ckpt.store.write_bytes = write_bytes  # type: ignore[method-assign]
        callbacks.append(SpotsafeCallback(checkpointer=ckpt, every_steps=3))
    elif spec.get("save_steps"):
        callbacks.append(
            pl.callbacks.ModelCheckpoint(
                dirpath=out / "steps", every_n_train_steps=3, save_top_k=-1, save_last=True
            )
        )
    trainer = pl.Trainer(
        max_epochs=3,
        accumulate_grad_batches=2,
        val_check_interval=0.5,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        default_root_dir=str(out),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Model()
    try:
        trainer.fit(model, Data(), ckpt_path=spec.get("ckpt_path"))
    finally:
        if ckpt is not None:
            ckpt.close()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for pid, st in trainer.optimizers[0].state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v
    print(f"final {digest(tensors)}", flush=True)
    return 0


def run(name: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Fork a grandchild for one run; its output goes to a file."""
    log = work / f"{name}.log"
    out = work / spec.get("out", name)
    pid = os.fork()
    if pid == 0:  # the grandchild
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = one_run(spec, out)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = log.read_text()
    lines = text.splitlines()
    return {
        "status": os.waitstatus_to_exitcode(status),
        "final": next((ln.split()[1] for ln in lines if ln.startswith("final ")), None),
        "steps": [int(ln.split()[1]) for ln in lines if ln.startswith("step ")],
        "tail": text[-3000:],
    }


def checkpoints(store: Path) -> list[list[Any]]:
    ckpt = spotsafe.Checkpointer(str(store), read_only=True)
    return [[c.step, c.status.value] for c in ckpt.verify()]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def main() -> None:
    work = Path(sys.argv[1])
    stop = int(sys.argv[2])
    results: dict[str, Any] = {"stop_step": stop}
    store = work / "store"
    term = {"signal": signal.SIGTERM, "at_step": stop}

    results["reference"] = run(
        "reference", {"kind": "spotsafe", "store": str(work / "ref-store")}, work
    )
    results["term"] = run("term", {"kind": "spotsafe", "store": str(store), **term}, work)
    results["term_ckpts"] = checkpoints(store)
    corrupt = work / "corrupt-store"
    shutil.copytree(store, corrupt)
    kill_at = STEPS  # the final save: its data files are written, its manifest is not
    results["kill_at"] = kill_at
    results["resume_killed"] = run(
        "resume_killed", {"kind": "spotsafe", "store": str(store), "kill_saving": kill_at}, work
    )
    results["killed_ckpts"] = checkpoints(store)
    results["resume"] = run("resume", {"kind": "spotsafe", "store": str(store)}, work)
    newest = sorted((corrupt / "checkpoints").glob("step-*"))[-1]
    flip_byte(max(newest.glob("data-*.bin"), key=lambda p: p.stat().st_size))
    results["corrupt_resume"] = run(
        "corrupt_resume", {"kind": "spotsafe", "store": str(corrupt)}, work
    )
    results["corrupt_ckpts"] = checkpoints(corrupt)
    # Lightning's own documented way, for comparison.
    results["native_reference"] = run("native_reference", {"kind": "plain"}, work)
    native = {"kind": "plain", "save_steps": True, "out": "native"}
    # SIGTERM at step 8: Lightning finishes the epoch (step 12) and exits 0.
    native_term = {"signal": signal.SIGTERM, "at_step": 8}
    results["native_term"] = run("native_term", {**native, **native_term}, work)
    last = work / "native" / "steps" / "last.ckpt"
    results["native_resume"] = run("native_resume", {**native, "ckpt_path": str(last)}, work)
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
