"""What the Guard's per-step agreement costs under torch.distributed.

    .venv/bin/python bench/collective_bench.py [--world 2] [--calls 2000]

Every `guard.step()` under torch.distributed runs one all-reduce of three int32 flags (stop,
save-now, interval due) so that all ranks stop and save at the same step. This times that
call on gloo over loopback (CPU), next to an empty barrier, and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from spotsafe.checkpoint import distributed

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(rank: int, world: int, port: int, calls: int, out: dict[str, list[float]]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for name, fn in (
        ("barrier", dist.barrier),
        ("guard_agreement", lambda: distributed.any_flags([False, False, rank == 0])),
    ):
        for _ in range(100):  # warm up the connections
            fn()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if rank == 0:
            out[name] = times
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(args.world, free_port(), args.calls, out), nprocs=args.world)
        results = dict(out)
    print(f"gloo on loopback, world size {args.world}, {args.calls} calls each")
    print(f"{'call':<18} {'median us':>10} {'p99 us':>10}")
    summary = {}
    for name, times in results.items():
        times = sorted(times)
        med, p99 = statistics.median(times) * 1e6, times[int(0.99 * len(times))] * 1e6
        summary[name] = {"median_us": med, "p99_us": p99}
        print(f"{name:<18} {med:>10.0f} {p99:>10.0f}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"collective-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"world": args.world, "calls": args.calls, **summary}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
