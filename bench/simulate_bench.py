"""How fast `spotsafe simulate` is: trials per second of one interval, and a 50-interval sweep.

Run: .venv/bin/python bench/simulate_bench.py   (writes bench/results/simulate-<time>.json)

The job: 100 h of work, saves blocking 60 s, restore 60 s, restart 300 s, Poisson
interruptions every 4 h (about 28 per run) and every 30 min (about 300 per run). Targets from
issue 11: 10,000 trials of a 100-hour job within 2 s, a sweep of 50 intervals within 10 s.
The sweep draws each block of trials once and runs every interval on it (`run_many`); the
same 50 intervals run one `run_trials` each (drawing again for each) are timed alongside.
The alternative a user would pick is one Python loop per event: the reference simulator of
tests/simulate, timed on 200 trials here, in the same run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _timing import best_of

from spotsafe.simulate import Job, Poisson, default_grid, run_trials, sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.simulate.test_agrees_with_a_reference_simulator import reference

H = 3600.0
JOB = Job(work_s=100 * H, checkpoint_s=60.0, restore_s=60.0, restart_s=300.0)


def main() -> None:
    rows = []
    for mtbi_h in (4.0, 0.5):
        process = Poisson(mtbi_h * H)
        one = best_of(3, lambda p=process: run_trials(JOB, p, 1800.0, trials=10_000, seed=0))
        grid = default_grid(JOB, process, points=50)
        many = best_of(1, lambda p=process, g=grid: sweep(JOB, p, g, trials=10_000, seed=0))
        apart = best_of(
            1,
            lambda p=process, g=grid: [run_trials(JOB, p, i, trials=10_000, seed=0) for i in g],
        )
        # One Python loop per event, on the same kind of draws.
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(200):
            reference(JOB, 1800.0, [(0.0, w) for w in rng.exponential(mtbi_h * H, 4000)])
        loop_s = (time.perf_counter() - t0) / 200 * 10_000
        rows.append(
            {
                "mtbi_h": mtbi_h,
                "trials": 10_000,
                "one_interval_s": one,
                "trials_per_s": 10_000 / one,
                "sweep_50_intervals_s": many,
                "50_separate_runs_s": apart,
                "python_loop_10k_trials_s": loop_s,
            }
        )
    print(f"{'MTBI':>6} {'10k trials':>11} {'trials/s':>10} {'50-interval sweep':>18} "
          f"{'50 separate runs':>17} {'per-event loop, 10k':>20}")  # fmt: skip
    for r in rows:
        one, rate = r["one_interval_s"], r["trials_per_s"]
        many, loop = r["sweep_50_intervals_s"], r["python_loop_10k_trials_s"]
        apart = r["50_separate_runs_s"]
        print(f"{r['mtbi_h']:>5g}h {one:>10.2f}s {rate:>10,.0f} {many:>17.2f}s {apart:>16.2f}s "
              f"{loop:>19.1f}s")  # fmt: skip
    out = Path(__file__).parent / "results" / f"simulate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
