"""Sharded checkpoint benchmark: spotsafe's integrity layer over DCP against plain DCP.

    .venv/bin/python bench/sharded_bench.py                            # 4 ranks, 256 MiB
    .venv/bin/python bench/sharded_bench.py --size-mb 64 --repeat 3    # quick, ~1 min

Starts itself under torchrun (``--standalone --nproc-per-node 4``, gloo on CPU,
``OMP_NUM_THREADS=1``). Every rank builds the same FSDP2 model (``fully_shard`` on a CPU
mesh: bias-free 1024 x 1024 linear layers) and AdamW after one step, so the state - weights
plus both moments, ``--size-mb`` in all - is sharded over the ranks: each holds a quarter.
Each round, in alternating order, times on the same state:

- plain DCP: ``dcp.save({"model": get_model_state_dict(...), "optimizer":
  get_optimizer_state_dict(...)}, checkpoint_id=DIR)`` into a new directory (DCP's
  FileSystemWriter: one file per rank, fsynced), and ``dcp.load`` of it followed by
  ``set_model_state_dict`` / ``set_optimizer_state_dict``;
- spotsafe: ``Checkpointer.save(TrainState(model=..., optimizer=...))`` (DCP through
  spotsafe's storage writer: every file hashed with xxh3-128 as it is written, each rank's
  RNGs and counters, the manifest committed after ``.metadata``) and ``Checkpointer.restore``
  (discovery, every shard this rank reads checked against the manifest, the all-rank
  agreement, DCP's load, ``set_*_state_dict``).

Restores are timed twice: warm (the files in the page cache, as just written: the checksum
cost shows most) and cold (each rank's files evicted with ``posix_fadvise(DONTNEED)`` first).
A timing runs from a barrier to a barrier, so it is the slowest rank's. Prints a table and
writes JSON to ``--out`` (default ``bench/results``); the scratch directory is on the
repository's disk and deleted at the end. The issue's target: spotsafe costs at most 10 %
over DCP alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from checkpoint_bench import Row, Samples, check, evict, git_commit, render, trim_heap
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import spotsafe
from spotsafe.checkpoint.sharded import local_bytes

MIB = 1 << 20
GB = 1e9
WIDTH = 1024  # each layer: 1024 x 1024 fp32 weights, 4 MiB, plus two AdamW moments
BYTES_PER_PARAM = 12  # fp32 weight + AdamW exp_avg + exp_avg_sq
TARGET_PCT = 10.0  # the bound on spotsafe's overhead over DCP alone
ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- launcher


def launch(argv: list[str]) -> int:
    """Run this file under torchrun with ``--ranks`` ranks; remove the scratch directory."""
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / f"tmp-sharded-{os.getpid()}"  # the repository's disk, not /tmp
    work.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    for key in ("SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(args.ranks), __file__, *argv, "--work", str(work)]  # fmt: skip
    print("$ " + " ".join(cmd[2:]), flush=True)
    try:
        return subprocess.run(cmd, env=env, check=False).returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=256.0,
                    help="state in MiB, all ranks together (weights + AdamW moments)")  # fmt: skip
    ap.add_argument("--ranks", type=int, default=4, help="torchrun ranks (gloo, CPU)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the table shows medians")
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="where the JSON goes")
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.ranks < 1 or args.size_mb <= 0:
        ap.error("--repeat, --ranks and --size-mb must be positive")
    return args


# ----------------------------------------------------------------------------- one rank


def build(layers: int, mesh: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The FSDP2 model and AdamW after one step (so both moments exist), the same on every
    rank's mesh position."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(layers)))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, WIDTH)).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt


def dcp_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """What a DCP user saves: the sharded model and optimizer state dicts."""
    return {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, opt)}


def fingerprint(model: nn.Module, opt: torch.optim.Optimizer) -> list[float]:
    """This rank's shards, summed: equal after a restore of what was saved."""
    sd = dcp_state(model, opt)
    out: list[float] = []
    for name in sorted(sd["model"]):
        out.append(float(sd["model"][name].to_local().double().sum()))
    for fqn in sorted(sd["optimizer"]["state"]):
        for key in ("exp_avg", "exp_avg_sq"):
            out.append(float(sd["optimizer"]["state"][fqn][key].to_local().double().sum()))
    return out


def scramble(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Change every shard in place, so a restore has something to put back."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for s in opt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                s[key].add_(1.0)


def timed(s: Samples, key: str, fn: Any) -> None:
    """Record, under ``key``, the seconds from a barrier before ``fn`` to a barrier after it
    (the slowest rank's), and under ``key + "_cpu"`` the CPU seconds ``fn`` took on all
    ranks together (every thread of each: DCP's and spotsafe's I/O threads included). The
    CPU time moves less than the wall time when other jobs share the cores."""
    dist.barrier()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    cpu = time.process_time() - c0
    dist.barrier()
    wall = time.perf_counter() - t0
    total = torch.tensor([cpu], dtype=torch.float64)
    dist.all_reduce(total)
    s.add(key, wall)
    s.add(f"{key}_cpu", float(total.item()))


def evict_all(path: Path) -> None:
    """Rank 0 drops every file below ``path`` from the page cache (one host)."""
    if dist.get_rank() == 0:
        evict(path)
    dist.barrier()


def worker(args: argparse.Namespace) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    load_start = os.getloadavg()
    layers = max(1, round(args.size_mb * MIB / BYTES_PER_PARAM / WIDTH**2))
    model, opt = build(layers, mesh)
    state = spotsafe.TrainState(model=model, optimizer=opt)
    mine = local_bytes(dcp_state(model, opt))
    saved = fingerprint(model, opt)
    sizes = [0] * world
    dist.all_gather_object(sizes, mine)
    nbytes = sum(sizes)
    work: Path = args.work
    ss_dir = work / "spotsafe"
    # keep_last covers every round: no pruning inside a timed save (DCP's side prunes nothing)
    ckpt = spotsafe.Checkpointer(str(ss_dir), keep_last=max(2, args.repeat + 1))
    if rank == 0:
        print(f"state: {nbytes / GB:.3f} GB ({layers} layers of {WIDTH}x{WIDTH} + AdamW),"
              f" {world} ranks, {mine / GB:.3f} GB on rank 0", flush=True)  # fmt: skip

    def dcp_save(path: Path) -> None:
        dcp.save(dcp_state(model, opt), checkpoint_id=str(path))

    def dcp_load(path: Path) -> None:
        sd = dcp_state(model, opt)
        dcp.load(sd, checkpoint_id=str(path))
        set_model_state_dict(model, sd["model"])
        set_optimizer_state_dict(model, opt, sd["optimizer"])

    def ss_restore() -> None:  # the Checkpointer is open already, as checkpoint_bench's
        info = ckpt.restore(state)
        assert info is not None and not info.fell_back

    def restored(label: str) -> None:
        now = fingerprint(model, opt)
        if now != saved:
            bad = [i for i, (a, b) in enumerate(zip(now, saved, strict=True)) if a != b]
            raise SystemExit(f"rank {rank}: {label} did not restore the saved state: {bad}")

    s = Samples()
    # One unmeasured round of each: the first save and load pay for lazy imports and plans.
    dcp_save(work / "dcp-warmup")
    dcp_load(work / "dcp-warmup")
    state.step = 1
    ckpt.save(state)
    ss_restore()
    if rank == 0:
        shutil.rmtree(work / "dcp-warmup")
    for k in range(args.repeat):
        if rank == 0:
            print(f"round {k + 1}/{args.repeat}", flush=True)
        path = work / f"dcp-{k}"
        state.step = k + 2
        order = ("dcp", "ss") if k % 2 == 0 else ("ss", "dcp")
        for who in order:
            if who == "dcp":
                timed(s, "dcp_save", functools.partial(dcp_save, path))
            else:
                timed(s, "ss_save", functools.partial(ckpt.save, state))
        for temp in ("warm", "cold"):
            for who in order:
                scramble(model, opt)
                trim_heap()
                if temp == "cold":
                    evict_all(work)
                if who == "dcp":
                    timed(s, f"dcp_load_{temp}", functools.partial(dcp_load, path))
                else:
                    timed(s, f"ss_restore_{temp}", ss_restore)
                restored(f"{who} {temp}")
        if rank == 0:
            shutil.rmtree(path)  # a round's DCP directory, once read back
    ckpt.close()
    dist.barrier()
    if rank == 0:
        report(args, s, nbytes, layers, world, load_start)
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- report


def overhead(s: Samples, ours: str, base: str) -> float:
    """spotsafe's median time over DCP's, as a percentage above it."""
    return (s.median(ours) / s.median(base) - 1.0) * 100.0


def rows_of(s: Samples, nbytes: int) -> list[Row]:
    def t(name: str, key: str) -> Row:
        sec = s.median(key)
        return Row(name=name, seconds=sec, gbps=nbytes / sec / GB)

    def pct(ours: str, base: str) -> list[Row]:
        wall = check("", overhead(s, ours, base), "over DCP, wall", "<=", TARGET_PCT, unit="%")
        cpu = overhead(s, f"{ours}_cpu", f"{base}_cpu")
        return [wall, Row(name="", vs=f"{cpu:.2f}% over DCP, CPU (all ranks)", value=cpu)]

    return [
        t("DCP save (dcp.save)", "dcp_save"),
        t("spotsafe save (sharded, hashed)", "ss_save"),
        *pct("ss_save", "dcp_save"),
        t("DCP load + set_state_dict, warm", "dcp_load_warm"),
        t("spotsafe restore, verified, warm", "ss_restore_warm"),
        *pct("ss_restore_warm", "dcp_load_warm"),
        t("DCP load + set_state_dict, cold", "dcp_load_cold"),
        t("spotsafe restore, verified, cold", "ss_restore_cold"),
        *pct("ss_restore_cold", "dcp_load_cold"),
    ]


def report(
    args: argparse.Namespace,
    s: Samples,
    nbytes: int,
    layers: int,
    world: int,
    load_start: tuple[float, float, float],
) -> None:
    rows = rows_of(s, nbytes)
    table = render(rows)
    result = {
        "table": table,
        "samples_s": dict(s),
        "medians_s": {k: statistics.median(v) for k, v in s.items()},
        "overhead_pct": {  # spotsafe over DCP: median wall time, median CPU (all ranks)
            f"{what}{kind}": overhead(s, f"{ours}{kind}", f"{base}{kind}")
            for what, ours, base in (
                ("save", "ss_save", "dcp_save"),
                ("restore_warm", "ss_restore_warm", "dcp_load_warm"),
                ("restore_cold", "ss_restore_cold", "dcp_load_cold"),
            )
            for kind in ("", "_cpu")
        },
        "target_pct": TARGET_PCT,
        "config": {
            "ranks": world,
            "state_bytes": nbytes,
            "layers": layers,
            "width": WIDTH,
            "repeat": args.repeat,
            "backend": "gloo",
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "spotsafe": spotsafe.__version__,
            "commit": git_commit(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
    }
    path = args.out / f"sharded-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table)
    print(f"load average (1 min): {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"JSON: {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "LOCAL_RANK" not in os.environ:
        return launch(argv)
    worker(parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
