"""The spotsafe demo: a real training run, interrupted again and again, ends bit for bit where
an uninterrupted run ends.

    make demo                       # or: python examples/demo.py [--kills 4] [--seed 1]

1. Trains examples/train.py once without interruption (the reference).
2. Trains it again in another store and interrupts it at random moments, the ways spot
   capacity does: SIGTERM with a grace period (a preemption notice: the job flushes and
   exits 75) and SIGKILL (the node vanished: the job resumes from its last checkpoint).
3. Compares the two final checkpoints and shows the store.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "examples" / "train.py"), "--every", "10"]


def run_to_end(store: Path) -> None:
    subprocess.run([*TRAIN, "--store", str(store)], check=True, stdout=subprocess.DEVNULL)


def newest_digest(store: Path) -> tuple[int, str]:
    from spotsafe.checkpoint import Checkpointer, Status

    newest = next(
        c for c in Checkpointer(str(store), events=False).checkpoints() if c.status is Status.VALID
    )
    assert newest.manifest is not None
    return newest.step, newest.manifest.content_digest()


def main() -> int:
    p = argparse.ArgumentParser(description="spotsafe demo")
    p.add_argument("--kills", type=int, default=4, help="interruptions to inject")
    p.add_argument("--seed", type=int, default=1, help="seed for the kill points")
    p.add_argument("--dir", default=str(REPO / "demo-store"), help="where the stores go")
    args = p.parse_args()
    rng = random.Random(args.seed)  # the demo's own RNG: kill points are reproducible
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    reference, interrupted = root / "reference", root / "interrupted"

    print("1. reference run, no interruptions ...", flush=True)
    t0 = time.monotonic()
    run_to_end(reference)
    print(f"   done in {time.monotonic() - t0:.1f} s", flush=True)

    print(f"2. the same run, interrupted {args.kills} times ...", flush=True)
    for k in range(args.kills):
        proc = subprocess.Popen(
            [*TRAIN, "--store", str(interrupted)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        print(f"   attempt {k + 1}: {proc.stdout.readline().strip()}", flush=True)
        time.sleep(rng.uniform(1.0, 4.0))
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        proc.send_signal(sig)
        code = proc.wait()
        what = "flushed its checkpoint" if code == 75 else "lost work since its last save"
        print(f"   {sig.name} -> exit {code} ({what})", flush=True)
    final = subprocess.run(
        [*TRAIN, "--store", str(interrupted)], stdout=subprocess.PIPE, text=True, check=True
    )
    print(f"   last attempt: {final.stdout.splitlines()[0]}, ran to the end", flush=True)

    print("3. compare the final checkpoints", flush=True)
    ref_step, ref_digest = newest_digest(reference)
    int_step, int_digest = newest_digest(interrupted)
    print(f"   reference:   step {ref_step}  state {ref_digest}")
    print(f"   interrupted: step {int_step}  state {int_digest}")
    subprocess.run([sys.executable, "-m", "spotsafe.cli", "ls", str(interrupted)], check=True)
    if (ref_step, ref_digest) != (int_step, int_digest):
        print("MISMATCH: the interrupted run did not end where the reference ended")
        return 1
    print(f"identical: {args.kills} interruptions cost nothing but replayed steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
