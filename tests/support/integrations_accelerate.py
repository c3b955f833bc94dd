"""The Accelerate scenarios of tests/integrations (run by tests/support/integrations_child.py).

The workload: an MLP with dropout, 32 samples whose ``__getitem__`` adds noise from torch,
numpy and python's ``random``, a shuffling loader with 2 workers, batch 4,
``gradient_accumulation_steps=2`` (4 optimizer steps an epoch, 2 epochs), AdamW and a StepLR
stepped per optimizer step, the loop Accelerate's docs show (``accelerator.accumulate``).

- reference: the plain loop, uninterrupted, without spotsafe.
- term: with ``train_state`` + ``AcceleratedGuard`` (saves every 3 steps), SIGTERM between the
  two micro-batches of optimizer step STOP; then the same command again, SIGKILLed while
  committing its final checkpoint (after printing its final weights); then, with the newest
  valid checkpoint corrupted, once more (it falls back).
- native_*: Accelerate's own way: ``save_state`` every 3 steps, the same SIGTERM at step 6,
  ``load_state`` + ``skip_first_batches``.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from spotsafe.integrations.accelerate import AcceleratedGuard, train_state
from tests.support import integrations_common as common

EPOCHS = 2
STEPS = 8  # 32 samples / (batch 4 x accumulation 2) = 4 optimizer steps an epoch
EVERY = 3


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


def one_run(spec: dict[str, Any], out: Path) -> int:
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    set_seed(0, device_specific=True)  # under DDP, seed 0 + rank: each rank its own streams
    model: Any = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))
    opt: Any = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched: Any = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.8)
    # Under DDP each of the 2 ranks trains on half: twice the samples, the same steps.
    data = torch.utils.data.DataLoader(
        Noisy(32 * accelerator.num_processes, 1), batch_size=4, shuffle=True, num_workers=2
    )
    model, opt, loader, sched = accelerator.prepare(model, opt, data, sched)
    sig, at_step = spec.get("signal"), spec.get("at_step", -1)

    def micro_batch(x: torch.Tensor, y: torch.Tensor, step: int) -> None:
        with accelerator.accumulate(model):
            accelerator.backward(nn.functional.mse_loss(model(x), y))
            opt.step()
            sched.step()
            opt.zero_grad()
        if accelerator.sync_gradients:
            print(f"step {step + 1}", flush=True)
        elif sig is not None and step == at_step - 1:
            signal.raise_signal(sig)  # after the window's first micro-batch: inside it

    if spec["kind"] == "spotsafe":
        state = train_state(accelerator, model=model, optimizer=opt, scheduler=sched, loader=loader)
        ckpt = common.checkpointer(spec)
        ckpt.restore(state)
        with AcceleratedGuard(accelerator, ckpt, state, every_steps=EVERY, watchers=[]) as guard:
            while state.epoch < EPOCHS:
                for x, y in loader:
                    micro_batch(x, y, state.step)
                    guard.step()
                guard.end_epoch()
            common.print_final(model, opt)  # before the final save (which may be killed)
        ckpt.close()
        return 0
    # Accelerate's own way: save_state every EVERY steps; resume with load_state and
    # skip_first_batches, as its docs show.
    step, first_epoch, skip = 0, 0, 0
    if spec.get("resume"):
        newest = max((out / "states").iterdir(), key=lambda p: int(p.name))
        accelerator.load_state(str(newest))
        step = int(newest.name)
        first_epoch, skip = divmod(step * 2, len(loader))
    for epoch in range(first_epoch, EPOCHS):
        batches = accelerator.skip_first_batches(loader, skip) if epoch == first_epoch else loader
        for x, y in batches:
            micro_batch(x, y, step)
            if accelerator.sync_gradients:
                step += 1
                if spec.get("save_states") and step % EVERY == 0:
                    accelerator.save_state(str(out / "states" / str(step)))
    common.print_final(model, opt)
    return 0


def scenarios(work: Path, stop: int) -> dict[str, Any]:
    def run(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return common.run(one_run, name, spec, work)

    results: dict[str, Any] = {"stop_step": stop, "steps": STEPS, "every": EVERY}
    store = work / "store"
    spotsafe = {"kind": "spotsafe", "store": str(store)}
    results["reference"] = run("reference", {"kind": "plain"})
    results["term"] = run("term", {**spotsafe, "signal": signal.SIGTERM, "at_step": stop})
    results["term_ckpts"] = common.checkpoints(store)
    results["resume_killed"] = run("resume_killed", {**spotsafe, "kill_saving": STEPS})
    results["killed_ckpts"] = common.checkpoints(store)
    results["fallbacks"] = common.corrupt_newest_valid(store)
    results["corrupt_resume"] = run("corrupt_resume", spotsafe)
    results["corrupt_ckpts"] = common.checkpoints(store)
    native = {"kind": "plain", "save_states": True, "out": "native"}
    results["native_term"] = run("native_term", {**native, "signal": signal.SIGTERM, "at_step": 7})
    results["native_resume"] = run("native_resume", {**native, "resume": True})
    return results


def ddp_scenarios(work: Path, stop: int) -> dict[str, Any]:
    """The 2-rank DDP scenario of :func:`integrations_common.ddp_scenarios`."""
    reference = {"kind": "plain"}
    term = {"signal": signal.SIGTERM}
    return common.ddp_scenarios(
        one_run, work, stop=stop, steps=STEPS, reference=reference, term=term
    )
