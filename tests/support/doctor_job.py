"""Child process for the doctor tests: a torch-free "training loop" with one mistake or none.

    python -m tests.support.doctor_job [--dir DIR] [--save PARTS] [--no-resume]
        [--signals handle|default|ignore] [--flush-s S] [--stop-code N]

It counts steps (``--step-s`` each), and every ``--every`` steps writes ``DIR/last.pt``
(default ``$SPOTSAFE_STORE``): a real `torch.save`-format file (a zip whose data.pkl is a
pickle; no tensors, so no torch needed) holding the parts named in ``--save``. By default it
does everything right: saves every part, resumes from ``last.pt``, and on SIGTERM stops at
the step boundary, saves, and exits 75. Each flag turns one of those into a mistake.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

ALL_PARTS = "model,optimizer,scheduler,scaler,step,data,rng"


def write(path: Path, state: dict[str, Any]) -> None:
    """torch.save's zip layout: ``archive/data.pkl`` (protocol 2), version, byteorder."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps(state, protocol=2))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    os.replace(tmp, path)


def read_step(path: Path) -> int:
    """The step in ``path`` (the test child reads its own file; never do this with
    untrusted files)."""
    with zipfile.ZipFile(path) as z:
        return int(pickle.loads(z.read("archive/data.pkl")).get("step", 0))


def state(step: int, parts: set[str]) -> dict[str, Any]:
    full: dict[str, Any] = {
        "model": {"weight": [0.5] * 4, "bias": [0.0]},
        "optimizer": {"state": {0: {"momentum_buffer": [0.1] * 4}},
                      "param_groups": [{"lr": 0.1, "params": [0]}]},
        "scheduler": {"base_lrs": [0.1], "last_epoch": step, "_step_count": step + 1},
        "scaler": {"scale": 65536.0, "_growth_tracker": 0, "growth_factor": 2.0},
        "step": step,
        "epoch": 0,
        "sampler": {"position": step * 8},
        "rng": {"python": random.getstate()},
    }  # fmt: skip
    keep = {**{p: p for p in parts}, "data": "sampler"}
    names = {keep[p] for p in parts if p in keep} | ({"epoch"} if "step" in parts else set())
    return {k: v for k, v in full.items() if k in names}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default=os.environ.get("SPOTSAFE_STORE"))
    p.add_argument("--save", default=ALL_PARTS, help="parts saved in each checkpoint")
    p.add_argument("--no-resume", action="store_true", help="mistake: always start at 0")
    p.add_argument("--signals", choices=("handle", "default", "ignore"), default="handle")
    p.add_argument("--flush-s", type=float, default=0.0, help="seconds a stop takes to flush")
    p.add_argument("--stop-code", type=int, default=75)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--step-s", type=float, default=0.02)
    p.add_argument("--steps", type=int, default=100_000)
    args = p.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    ckpt = directory / "last.pt"
    parts = set(args.save.split(",")) if args.save else set()

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True  # only a flag: the loop saves at the next step boundary

    if args.signals == "handle":
        signal.signal(signal.SIGTERM, on_term)
    elif args.signals == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    step = 0 if args.no_resume or not ckpt.exists() else read_step(ckpt)
    print(f"start {step}", flush=True)
    while step < args.steps:
        time.sleep(args.step_s)
        step += 1
        if stop:
            write(ckpt, state(step, parts))
            time.sleep(args.flush_s)  # the upload after the local write, say
            print(f"stopped {step}", flush=True)
            return args.stop_code
        if step % args.every == 0:
            write(ckpt, state(step, parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
