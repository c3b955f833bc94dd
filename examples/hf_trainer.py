"""The Hugging Face Trainer on spot capacity: ``SpotsafeTrainer`` instead of ``Trainer``.

A tiny GPT-2 (built from a config: nothing is downloaded) learns the Zen of Python character
by character. Stop it at any step and run it again: ``trainer.train()`` resumes by itself from
the newest verified checkpoint and ends with exactly the weights of an uninterrupted run.

    SPOTSAFE_STORE=./hf-store python examples/hf_trainer.py       # train (resumes if it can)
    spotsafe run --store ./hf-store -- python examples/hf_trainer.py
    SPOTSAFE_STORE=./hf-store torchrun --nproc-per-node 2 examples/hf_trainer.py  # 2-rank DDP

On SIGTERM (or a cloud notice) it finishes the optimizer step in progress, saves, and exits 75.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from spotsafe.integrations.transformers import SpotsafeTrainer

# --- data: windows of 32 characters of the Zen of Python ------------------------------
with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
    import this
text = codecs.decode(this.s, "rot13")  # stored ROT13-encoded in CPython
vocab = sorted(set(text))
ids = torch.tensor([vocab.index(c) for c in text])
windows = ids.unfold(0, 32, 8)  # 32 characters every 8
train_dataset = [{"input_ids": w, "labels": w} for w in windows]

# --- a tiny GPT-2, built from a config ----------------------------------------------------
torch.manual_seed(0)
config = GPT2Config(
    vocab_size=len(vocab), n_positions=32, n_embd=64, n_layer=2, n_head=2,
    bos_token_id=0, eos_token_id=0,
)  # fmt: skip
model = GPT2LMHeadModel(config)

# --- the Trainer, as usual; only the class name changes -----------------------------------
args = TrainingArguments(
    output_dir=tempfile.mkdtemp(),  # the Trainer's own checkpoint-N folders (none: save_strategy)
    per_device_train_batch_size=8,
    gradient_accumulation_steps=2,  # spotsafe stops between windows, never inside one
    num_train_epochs=4,
    learning_rate=3e-3,
    save_strategy="no",  # spotsafe saves; turn this on if you also want checkpoint-N folders
    logging_steps=2,
    disable_tqdm=True,
    report_to="none",
    use_cpu=True,
    seed=0,
)
trainer = SpotsafeTrainer(model=model, args=args, train_dataset=train_dataset)  # store=...
trainer.train()  # resumes from $SPOTSAFE_STORE (or store=) by itself
print(f"done at step {trainer.state.global_step}", flush=True)
