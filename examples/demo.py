"""The spotsafe demo: a real training run under `spotsafe run`, interrupted again and again the
ways spot capacity interrupts it, ends bit for bit where an uninterrupted run ends.

    make demo                     # or: python examples/demo.py [--kills 6] [--seed 7]

1. `spotsafe chaos` runs examples/train.py under the supervisor and interrupts it at random:
   SIGTERM to the job (a preemption notice: it flushes and exits 75), SIGKILL to the job
   (the node vanished), SIGTERM and SIGKILL to the supervisor itself (a new supervisor
   continues the same job from the store). Then it trains once more without interruptions
   and compares the two final checkpoints bit for bit.
2. The job's checkpoints (`spotsafe ls`), then `spotsafe report`: every attempt, how it ended,
   the interruptions by source, the work replayed after each, checkpoint and retry time,
   goodput and its badput, all read back from the store.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description="spotsafe demo")
    p.add_argument("--kills", type=int, default=6, help="interruptions to inject")
    p.add_argument("--seed", type=int, default=7, help="seed of the interruption plan")
    p.add_argument("--dir", default=str(REPO / "demo-store"), help="where the stores go")
    args = p.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)

    train = [sys.executable, str(REPO / "examples" / "train.py"), "--every", "10", "--epochs", "12"]
    chaos = subprocess.run(
        [sys.executable, "-m", "spotsafe.cli", "chaos", "--kills", str(args.kills),
         "--seed", str(args.seed), "--max-delay-s", "3", "--workdir", str(root), "--", *train],
        check=False,
    )  # fmt: skip
    store = str(root / "chaos-store")
    print()
    subprocess.run([sys.executable, "-m", "spotsafe.cli", "ls", store], check=False)
    print()
    print("What the interruptions cost, from the store alone:")
    subprocess.run([sys.executable, "-m", "spotsafe.cli", "report", store], check=False)
    return chaos.returncode


if __name__ == "__main__":
    sys.exit(main())
