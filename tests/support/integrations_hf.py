"""Child process: every Hugging Face Trainer scenario of tests/integrations, in one process.

    python -m tests.support.integrations_hf WORKDIR STOP_STEP

Importing transformers costs seconds, so this process imports it once and forks one
grandchild per training run (a real process: it gets real signals and exits with its own
status). The scenarios, each on a tiny GPT-2 built from a config (2 layers, n_embd 32,
dropout), 48 sequences, batch 4, gradient accumulation 2 (6 optimizer steps an epoch, 3
epochs), 2 loader workers, a shuffling sampler, evaluation every 4 steps:

- plain / reference: an uninterrupted ``Trainer`` and ``SpotsafeTrainer``.
- term: SIGTERM between the two micro-batches of optimizer step STOP_STEP; then the same
  command again (resume); also resumed from a copy of the store whose newest checkpoint
  had a byte flipped.
- kill: SIGKILL while the checkpoint of step 9 is being committed; then resume.
- native_term: a plain Trainer gets the same SIGTERM.
- native_corrupt: a plain Trainer saving checkpoint-N every 3 steps is SIGKILLed at step 10;
  a byte of checkpoint-9/model.safetensors is flipped; ``resume_from_checkpoint=True``.

Writes WORKDIR/results.json: for each run its exit status, what it printed and the digest of
its final weights and optimizer state, and each store's checkpoints; the test asserts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import spotsafe
from spotsafe.integrations.transformers import SpotsafeCallback, SpotsafeTrainer
from tests.support.guarded_train import digest

torch.set_num_threads(1)

EXAMPLES = 32
STEPS = 12  # 32 sequences / (batch 4 x accumulation 2) = 4 optimizer steps an epoch, 3 epochs
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
    """Sends this process a real signal at a chosen point of training."""

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


def build(out: Path, *, save_steps: int | None) -> dict[str, Any]:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.1
    )
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=2,
        num_train_epochs=3,
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
        "train_dataset": Tokens(EXAMPLES, 1),
        "eval_dataset": Tokens(8, 2),
    }


def final_digest(trainer: Any) -> str:
    tensors = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    for pid, st in trainer.optimizer.state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v
    return digest(tensors)


def one_run(spec: dict[str, Any], out: Path) -> int:
    """The training run of one grandchild; returns its exit status."""
    parts = build(out, save_steps=spec.get("save_steps"))
    inject = Inject(spec.get("signal"), spec.get("at_step", -1), spec.get("mid_window", False))
    if spec["kind"] == "spotsafe":
        ckpt = spotsafe.Checkpointer(spec["store"], keep_last=3)
        kill_at = spec.get("kill_saving")
        if kill_at is not None:
            write = ckpt.store.write_bytes

            def write_bytes(path: str, data: Any) -> int:
                # The data files of this checkpoint are written; its manifest is next.
                if path.endswith("MANIFEST.json") and f"step-{kill_at:012d}" in path:
                    os.kill(os.getpid(), signal.SIGKILL)
                return write(path, data)

            ckpt.store.write_bytes = write_bytes  # type: ignore[method-assign]
        callback = SpotsafeCallback(checkpointer=ckpt, every_steps=3)
        trainer = SpotsafeTrainer(**parts, spotsafe=callback, callbacks=[inject])
        try:
            trainer.train()
        finally:
            ckpt.close()
    else:
        trainer = Trainer(**parts, callbacks=[inject])
        trainer.train(resume_from_checkpoint=spec.get("resume") or None)
    print(f"final {final_digest(trainer)}", flush=True)
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
            code = e.code if isinstance(e.code, int) else 1
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

    results["plain"] = run("plain", {"kind": "plain"}, work)
    # SIGTERM inside the accumulation window of step `stop` (saves every 3 steps).
    results["term"] = run(
        "term",
        {"kind": "spotsafe", "store": str(store), "signal": signal.SIGTERM, "at_step": stop,
         "mid_window": True},
        work,
    )  # fmt: skip
    results["term_ckpts"] = checkpoints(store)
    corrupt = work / "corrupt-store"
    shutil.copytree(store, corrupt)
    # The same command again resumes; SIGKILL it between the data files and the manifest of
    # its first save (3 steps on, or the final one).
    kill_at = min(stop + 3, STEPS)
    results["kill_at"] = kill_at
    results["resume_killed"] = run(
        "resume_killed", {"kind": "spotsafe", "store": str(store), "kill_saving": kill_at}, work
    )
    results["killed_ckpts"] = checkpoints(store)
    results["resume"] = run("resume", {"kind": "spotsafe", "store": str(store)}, work)
    # The copy taken after the SIGTERM, with a byte of its newest checkpoint flipped.
    newest = sorted((corrupt / "checkpoints").glob("step-*"))[-1]
    flip_byte(max(newest.glob("data-*.bin"), key=lambda p: p.stat().st_size))
    results["corrupt_resume"] = run(
        "corrupt_resume", {"kind": "spotsafe", "store": str(corrupt)}, work
    )
    results["corrupt_ckpts"] = checkpoints(corrupt)
    # The Trainer's own ways, for comparison: checkpoint-N every 3 steps, the same SIGTERM
    # at step 7, a byte of the newest checkpoint-N flipped, resume_from_checkpoint=True.
    results["native_term"] = run(
        "native_term",
        {"kind": "plain", "signal": signal.SIGTERM, "at_step": 7, "save_steps": 3,
         "out": "native"},
        work,
    )  # fmt: skip
    flip_byte(work / "native" / "checkpoint-6" / "model.safetensors")
    results["native_corrupt_resume"] = run(
        "native_corrupt_resume",
        {"kind": "plain", "resume": True, "save_steps": 3, "out": "native"},
        work,
    )
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
