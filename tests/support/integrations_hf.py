"""The Hugging Face Trainer scenarios of tests/integrations (run by
tests/support/integrations_child.py).

The workload: a tiny GPT-2 built from a config (2 layers, n_embd 32, dropout), 32 sequences,
batch 4, gradient accumulation 2 (4 optimizer steps an epoch, 2 epochs), 2 loader workers, a
shuffling sampler, evaluation every 4 steps, logging every 2.

- plain: an uninterrupted plain ``Trainer``, the reference.
- term: ``SpotsafeTrainer`` (saves every 3 steps), SIGTERM between the two micro-batches of
  optimizer step STOP; then the same command again, SIGKILLed while committing its final
  checkpoint (after printing its final weights); then, with the newest valid checkpoint
  corrupted, once more (it falls back).
- native_term: a plain Trainer saving checkpoint-N every 3 steps gets a SIGTERM at step 7;
  a byte of checkpoint-6/model.safetensors is flipped; ``resume_from_checkpoint=True``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from spotsafe.integrations.transformers import SpotsafeCallback, SpotsafeTrainer
from tests.support import integrations_common as common

EXAMPLES = 32
STEPS = 8  # 32 sequences / (batch 4 x accumulation 2) = 4 optimizer steps an epoch, 2 epochs
EVERY = 3  # SpotsafeCallback(every_steps=3); the plain Trainer's save_steps in native_term
SEQ = 16


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Fixed random token sequences (the data itself draws no random numbers)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Inject(TrainerCallback):  # type: ignore[misc]
    """Prints each optimizer step and the final weights; sends this process a real signal
    at a chosen point of training."""

    def __init__(self, sig: int | None, step: int, mid_window: bool) -> None:
        self.sig = sig
        self.step = step
        self.mid_window = mid_window

    def on_substep_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # Between micro-batch 0 and 1 of optimizer step `step`: inside the window.
        if self.sig is not None and self.mid_window and state.global_step == self.step - 1:
            os.kill(os.getpid(), self.sig)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        print(f"step {state.global_step}", flush=True)
        if self.sig is not None and not self.mid_window and state.global_step == self.step:
            os.kill(os.getpid(), self.sig)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # Before SpotsafeCallback's own on_train_end (added last), which saves the final
        # state: a run killed in that save has printed its result.
        common.print_final(kw["model"], kw["optimizer"])


def build(out: Path, *, save_steps: int | None) -> dict[str, Any]:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64,
        n_positions=SEQ,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.1,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=2,
        num_train_epochs=2,
        learning_rate=3e-3,
        dataloader_num_workers=2,
        eval_strategy="steps",
        eval_steps=4,
        logging_steps=2,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
    )
    return {
        "model": model,
        "args": args,
        # Under DDP each of the 2 ranks trains on half: twice the sequences, the same steps.
        "train_dataset": Tokens(EXAMPLES * int(os.environ.get("WORLD_SIZE", "1")), 1),
        "eval_dataset": Tokens(8, 2),
    }


def one_run(spec: dict[str, Any], out: Path) -> int:
    """The training run of one grandchild; returns its exit status."""
    parts = build(out, save_steps=spec.get("save_steps"))
    inject = Inject(spec.get("signal"), spec.get("at_step", -1), spec.get("mid_window", False))
    if spec["kind"] == "spotsafe":
        ckpt = common.checkpointer(spec)
        callback = SpotsafeCallback(checkpointer=ckpt, every_steps=EVERY)
        trainer = SpotsafeTrainer(**parts, spotsafe=callback, callbacks=[inject])
        try:
            trainer.train()
        finally:
            ckpt.close()
    else:
        trainer = Trainer(**parts, callbacks=[inject])
        trainer.train(resume_from_checkpoint=spec.get("resume") or None)
    return 0


def scenarios(work: Path, stop: int) -> dict[str, Any]:
    def run(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return common.run(one_run, name, spec, work)

    results: dict[str, Any] = {"stop_step": stop, "steps": STEPS, "every": EVERY}
    store = work / "store"
    spotsafe = {"kind": "spotsafe", "store": str(store)}
    results["plain"] = run("plain", {"kind": "plain"})
    term = {"signal": signal.SIGTERM, "at_step": stop, "mid_window": True}
    results["term"] = run("term", {**spotsafe, **term})
    results["term_ckpts"] = common.checkpoints(store)
    # The same command again resumes; SIGKILL it between the data files and the manifest of
    # its final save.
    results["resume_killed"] = run("resume_killed", {**spotsafe, "kill_saving": STEPS})
    results["killed_ckpts"] = common.checkpoints(store)
    results["fallbacks"] = common.corrupt_newest_valid(store)
    results["corrupt_resume"] = run("corrupt_resume", spotsafe)
    results["corrupt_ckpts"] = common.checkpoints(store)
    # The Trainer's own ways, for comparison: checkpoint-N every 3 steps, a SIGTERM at step
    # 7, a byte of the newest checkpoint-N flipped, resume_from_checkpoint=True.
    native = {"kind": "plain", "save_steps": EVERY, "out": "native"}
    results["native_term"] = run("native_term", {**native, "signal": signal.SIGTERM, "at_step": 7})
    common.flip_byte(work / "native" / "checkpoint-6" / "model.safetensors")
    results["native_corrupt_resume"] = run("native_corrupt_resume", {**native, "resume": True})
    return results


def ddp_scenarios(work: Path, stop: int) -> dict[str, Any]:
    """The 2-rank DDP scenario of :func:`integrations_common.ddp_scenarios`."""
    reference = {"kind": "plain"}
    term = {"signal": signal.SIGTERM, "mid_window": True}
    return common.ddp_scenarios(
        one_run, work, stop=stop, steps=STEPS, reference=reference, term=term
    )
