"""The spotsafe demo: a real training run under `spotsafe run`, interrupted again and again the
ways spot capacity interrupts it, ends bit for bit where an uninterrupted run ends.

    make demo                     # or: python examples/demo.py [--kills 6] [--seed 7]

1. `spotsafe chaos` runs examples/train.py under the supervisor and interrupts it at random:
   SIGTERM to the job (a preemption notice: it flushes and exits 75), SIGKILL to the job
   (the node vanished), SIGTERM and SIGKILL to the supervisor itself (a new supervisor
   continues the same job from the store). Then it trains once more without interruptions
   and compares the two final checkpoints bit for bit.
2. The job's history, read back from the store: every attempt, how it ended, what it cost.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def history(store: Path) -> None:
    """Every attempt of the job, as the supervisor recorded it in the store."""
    from spotsafe.storage import open_store
    from spotsafe.supervisor.job import JobRecord

    record = JobRecord.open(open_store(str(store)))
    print(f"{'attempt':>7}  {'ended as':<12} {'exit':>4}  {'steps':>11}  {'seconds':>7}")
    attempts = record.retry_state().attempts
    for a in attempts:
        steps = f"{a.start_step or 0}->{a.end_step if a.end_step is not None else '?'}"
        code = "-" if a.returncode is None else str(a.returncode)
        took = a.ended_s - a.started_s
        print(f"{a.attempt:>7}  {a.exit_class.value:<12} {code:>4}  {steps:>11}  {took:>7.1f}")
    print(f"{len(attempts)} attempts, one job, one final state")


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
    print()
    print("The job's history, from the store:")
    history(root / "chaos-store")
    print()
    subprocess.run([sys.executable, "-m", "spotsafe.cli", "ls", str(root / "chaos-store")])
    return chaos.returncode


if __name__ == "__main__":
    sys.exit(main())
