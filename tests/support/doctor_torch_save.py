"""Child process for the doctor tests: a plain PyTorch loop that checkpoints with torch.save
and makes one mistake: it saves the weights, the step, the sampler position and the RNG, but
not the optimizer (so Adam restarts with zero moments after every interruption).

    python -m tests.support.doctor_torch_save [--dir DIR]    # DIR default $SPOTSAFE_STORE

Otherwise right: it resumes from ``DIR/ckpt.pt`` and on SIGTERM saves at the next step and
exits 75.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default=os.environ.get("SPOTSAFE_STORE"))
    p.add_argument("--every", type=int, default=5)
    args = p.parse_args()
    path = Path(args.dir) / "ckpt.pt"
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    step = 0
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["model"])
        step = saved["step"]
        torch.set_rng_state(saved["rng"])
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)

    def save() -> None:
        # The mistake: no "optimizer": opt.state_dict() here.
        torch.save(
            {"model": model.state_dict(), "step": step, "epoch": 0,
             "sampler": {"position": step * 8}, "rng": torch.get_rng_state()},
            path,
        )  # fmt: skip

    while step < 100_000:
        x = torch.randn(8, 4)
        loss = model(x).pow(2).mean() + random.random() * 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if stop:
            save()
            return 75
        if step % args.every == 0:
            save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
