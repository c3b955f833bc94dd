"""Checkpoint benchmark: spotsafe against what a user would pick instead, same state, one run.

    make bench                                        # default: GPT-2-small + Adam, ~1.5 GB
    .venv/bin/python bench/checkpoint_bench.py --size-mb 64 --repeat 1 --train-s 10   # quick
    .venv/bin/python bench/checkpoint_bench.py --only restore --repeat 7   # restore rows only

Measures, on one in-memory state (fp32 weights shaped like GPT-2 small, 124M parameters, plus
both Adam moments): the disk's raw sequential write bandwidth; ``torch.save`` + fsync and
``torch.load``; DCP ``save`` and ``async_save``; spotsafe ``save`` and ``save_async``
(blocking and total); restore with full verification against ``torch.load(weights_only=True,
mmap=False)``, cold and warm, on that state and on one of few large tensors (12 linear layers
of 2048 x 2048 + AdamW: 36 tensors of 16 MiB), each ratio the median of per-round ratios of
back-to-back loads; bytes written per
checkpoint for a 90 % frozen model; throughput overhead of async saves on a real training
loop (A/B); and training step time while a save persists in a background thread, against the
same persist in another process (GIL contention). Prints a table and writes JSON to
``--out`` (default ``bench/results``). See bench/README.md.

Reads may come from the page cache: the benchmark evicts its files with
``posix_fadvise(DONTNEED)`` before the "cold" reads (no root needed), but a virtual disk may
still be cached by the host.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn

import spotsafe
from spotsafe import Checkpointer, Guard, TrainState
from spotsafe.checkpoint.checkpointer import DEFAULT_IO_THREADS
from spotsafe.errors import EphemeralStoreError
from spotsafe.policy.interval import Auto, IntervalState
from spotsafe.policy.pools import DEFAULT_POOL, PRESETS

MIB = 1 << 20
GB = 1e9
BYTES_PER_PARAM = 12  # fp32 weight + Adam exp_avg + exp_avg_sq
WRITE_CHUNK = 256 * MIB  # os.write moves at most ~2 GiB per call on Linux
ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- the state


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    """Parameter shapes of a GPT-2-like model."""

    d: int  #: model width
    layers: int
    vocab: int
    ctx: int  #: positions (the wpe table)

    def params(self) -> int:
        """Number of parameters."""
        block = 12 * self.d * self.d + 13 * self.d  # qkv, proj, fc, out, two LayerNorms
        return self.layers * block + (self.vocab + self.ctx) * self.d + 2 * self.d


GPT2_SMALL = Shape(d=768, layers=12, vocab=50257, ctx=1024)  # 124.4M parameters
TRAIN_SHAPE = Shape(d=384, layers=6, vocab=8192, ctx=64)  # ~14M: ~0.3-0.4 s a step on 2 cores
TRAIN_BATCH = 8


def shape_for(size_mb: float | None) -> Shape:
    """GPT-2 small, or a GPT-2-like shape whose weights + Adam moments fill ``size_mb`` MiB."""
    if size_mb is None:
        return GPT2_SMALL
    target = int(size_mb * MIB / BYTES_PER_PARAM)
    scale = target / GPT2_SMALL.params()
    d = max(64, round(768 * math.sqrt(scale) / 64) * 64)
    ctx = 1024
    for layers in range(12, 0, -1):
        rest = target - Shape(d=d, layers=layers, vocab=0, ctx=ctx).params()
        if rest >= 256 * d:
            return Shape(d=d, layers=layers, vocab=rest // d, ctx=ctx)
    return Shape(d=64, layers=1, vocab=256, ctx=64)


class Block(nn.Module):
    """GPT-2's block parameters; a gated mixer instead of attention keeps the CPU step cheap."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        h = h + self.proj(v * torch.sigmoid(q * k))
        return h + self.out(nn.functional.gelu(self.fc(self.ln2(h))))


class GPTLike(nn.Module):
    """A language model with GPT-2's parameter shapes (tied embedding)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.wte = nn.Embedding(shape.vocab, shape.d)
        self.wpe = nn.Embedding(shape.ctx, shape.d)
        self.blocks = nn.ModuleList(Block(shape.d) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(shape.d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h) @ self.wte.weight.T


def build_model(shape: Shape, seed: int = 0) -> GPTLike:
    """The model with random weights, fast: no per-layer init, no download."""
    with torch.device("meta"):
        model = GPTLike(shape)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "ln_f.weight":
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model


def fill_adam(params: list[nn.Parameter], opt: torch.optim.Optimizer, seed: int = 1) -> None:
    """One Adam step on random gradients, so both moments exist and hold real values."""
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt.step()
    for p in params:
        p.grad = None


def build_state(shape: Shape) -> tuple[GPTLike, torch.optim.Adam]:
    """The benchmark state: the model and an Adam optimizer with both moments filled."""
    model = build_model(shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fill_adam(list(model.parameters()), opt)
    return model, opt


WIDE_D = 2048  # the few-large-tensors state: 12 linear layers of 2048 x 2048 (16 MiB each)
WIDE_LAYERS = 12


def build_wide(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A state of few large tensors: 12 bias-free 2048 x 2048 linear layers and AdamW with
    both moments filled (36 tensors of 16 MiB, 0.6 GB, plus 12 step counters)."""
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(WIDE_D, WIDE_D, bias=False) for _ in range(WIDE_LAYERS)])
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fill_adam(list(model.parameters()), opt, seed=seed + 1)
    return model, opt


def tensors_of(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested state dict."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_of(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from tensors_of(v)


def plain_state_dict(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """What a user hands to torch.save or DCP: model and optimizer state dicts."""
    return {"model": model.state_dict(), "optim": opt.state_dict()}


# ----------------------------------------------------------------------------- helpers


def evict(path: Path) -> None:
    """Drop the page cache of every file below ``path`` (clean pages; no root needed)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY)
        except FileNotFoundError:
            continue  # an event log's temporary file, renamed meanwhile
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def trim_heap() -> None:
    """Return freed memory to the OS (glibc ``malloc_trim``), as a new process starts: else
    a load reuses pages the previous one freed and skips the page faults that dominate
    loading into new memory on this VM, and which load gets them depends on the order."""
    gc.collect()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def tree_bytes(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files)


def rm(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def checkpointer(path: Path, notes: list[str], **kw: Any) -> Checkpointer:
    """A Checkpointer on ``path``; allows an ephemeral disk (with a note) only if refused."""
    try:
        return Checkpointer(path, **kw)
    except EphemeralStoreError as e:
        if os.environ.get("SPOTSAFE_ALLOW_EPHEMERAL") == "1":
            raise
        notes.append(f"the bench dir is ephemeral ({e}); SPOTSAFE_ALLOW_EPHEMERAL=1 set")
        os.environ["SPOTSAFE_ALLOW_EPHEMERAL"] = "1"
        return Checkpointer(path, **kw)


class Samples(dict[str, list[float]]):
    """Seconds per measurement name."""

    def add(self, name: str, seconds: float) -> None:
        self.setdefault(name, []).append(seconds)

    def median(self, name: str) -> float:
        return statistics.median(self[name])


# ----------------------------------------------------------------------------- save / load


def raw_write(path: Path, parts: list[memoryview]) -> float:
    """Seconds to write ``parts`` to one file with os.write, then fsync."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for part in parts:
            view = part.cast("B")
            while view:
                n = os.write(fd, view[:WRITE_CHUNK])
                view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def raw_write_parallel(directory: Path, parts: list[memoryview], files: int) -> float:
    """Seconds to write ``parts`` split over ``files`` files by as many threads, each fsynced.

    The disk's bandwidth with spotsafe's own parallelism (``io_threads`` files at once).
    """
    flat = [p.cast("B") for p in parts]
    total = sum(len(p) for p in flat)
    per_file = -(-total // files)
    groups: list[list[memoryview]] = [[]]
    room = per_file
    for view in flat:
        while view:
            if room == 0:
                groups.append([])
                room = per_file
            take = view[:room]
            groups[-1].append(take)
            room -= len(take)
            view = view[len(take) :]
    directory.mkdir()
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(files) as pool:
        list(pool.map(raw_write, [directory / f"{i}.bin" for i in range(len(groups))], groups))
    return time.perf_counter() - t0


def torch_save(path: Path, sd: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        torch.save(sd, f)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


# DCP says so on every call without a process group; single-process use is what we mean.
warnings.filterwarnings("ignore", message="torch.distributed is disabled")


def dcp_save(path: Path, sd: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    dcp.save(sd, checkpoint_id=str(path), no_dist=True)
    return time.perf_counter() - t0


def dcp_async_save(path: Path, sd: dict[str, Any]) -> tuple[float, float]:
    """(blocking, total) seconds. Blocking lasts until training may change the state."""
    t0 = time.perf_counter()
    resp = dcp.async_save(sd, checkpoint_id=str(path), no_dist=True)
    upload = getattr(resp, "upload_completion", resp)
    staging = getattr(resp, "staging_completion", None)
    if staging is not None:
        staging.result()
    blocking = time.perf_counter() - t0
    upload.result()
    return blocking, time.perf_counter() - t0


# ----------------------------------------------------------------------------- training


class Trainer:
    """A small real training loop: next-token loss on random tokens, AdamW."""

    def __init__(self) -> None:
        self.model = build_model(TRAIN_SHAPE, seed=2)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.state = TrainState(model=self.model, optimizer=self.opt)
        self.gen = torch.Generator().manual_seed(3)

    def step(self) -> float:
        t0 = time.perf_counter()
        s = TRAIN_SHAPE
        tokens = torch.randint(0, s.vocab, (TRAIN_BATCH, s.ctx + 1), generator=self.gen)
        logits = self.model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, s.vocab), tokens[:, 1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.state.step += 1
        return time.perf_counter() - t0

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in tensors_of(self.state.state_dict()))


def notice_to_exit(state: TrainState, store: Path, notes: list[str]) -> float:
    """Seconds from a SIGTERM to the Guard's exit 75, the checkpoint at the stop step durable.

    The loop is at a step boundary when the signal lands, so this is the flush itself plus
    the stop bookkeeping; a real loop adds at most the rest of the step in progress.
    """
    ckpt = checkpointer(store, notes, keep_last=2, incremental=False, events=False)
    with Guard(ckpt, state, every_steps=10_000_000, watchers=[]) as guard:
        t0 = time.perf_counter()
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            guard.step()
        except SystemExit as e:
            assert e.code == 75, e.code
            latency = time.perf_counter() - t0
        else:
            raise AssertionError("the Guard did not stop on SIGTERM")
    ckpt.close()
    return latency


def training_ab(
    trainer: Trainer, store: Path, every_s: float, total_s: float, notes: list[str]
) -> dict[str, Any]:
    """Throughput with and without async saves every ``every_s``, in alternating blocks."""
    ckpt = checkpointer(store, notes, keep_last=2)
    for _ in range(3):
        trainer.step()  # warm-up: allocator, thread pools
    ckpt.save_async(trainer.state).wait()  # warm-up: allocates the snapshot buffers
    step_s = statistics.median(trainer.step() for _ in range(5))
    every_steps = max(1, round(every_s / step_s))
    block_steps = every_steps  # one save per checkpointed block, at its first step
    pairs = max(1, round(total_s / (2 * block_steps * step_s)))
    time_s = {"off": 0.0, "on": 0.0}
    blocks: dict[str, list[float]] = {"off": [], "on": []}
    infos = []
    ratios: list[float] = []  # per pair: on / off; the median resists a noisy neighbour
    for pair in range(pairs):
        order = ("off", "on") if pair % 2 == 0 else ("on", "off")  # ABBA: cancels drift
        for mode in order:
            pending = []
            t0 = time.perf_counter()
            for i in range(block_steps):
                if mode == "on" and i % every_steps == 0:
                    pending.append(ckpt.save_async(trainer.state))
                trainer.step()
            ckpt.wait()
            elapsed = time.perf_counter() - t0
            infos.extend(p.wait() for p in pending)
            time_s[mode] += elapsed
            blocks[mode].append(elapsed / block_steps)
        ratios.append(blocks["on"][-1] / blocks["off"][-1])
    ckpt.close()
    saves = len(infos)
    c_s = statistics.median(i.blocking_s for i in infos)
    p_s = statistics.median(i.persist_s for i in infos)
    overhead = statistics.median(ratios) - 1
    per_save_s = overhead * time_s["off"] / saves  # the on blocks' extra seconds, per save
    policy = Auto.from_pool(PRESETS[DEFAULT_POOL])
    auto_s = policy.interval_s(
        IntervalState(
            now_s=0.0,
            last_save_s=0.0,
            steps_since_save=0,
            mean_step_s=step_s,
            save_blocking_s=c_s,
            persist_s=p_s,
        )
    )
    off_spread = statistics.pstdev(blocks["off"]) / statistics.mean(blocks["off"])
    return {
        "state_bytes": trainer.state_bytes(),
        "step_s_off": time_s["off"] / (pairs * block_steps),
        "step_s_on": time_s["on"] / (pairs * block_steps),
        "every_steps": every_steps,
        "every_s": every_steps * step_s,
        "saves": saves,
        "blocking_s": c_s,
        "persist_s": p_s,
        "overhead_pct": 100 * overhead,
        "overhead_pct_pairs": [100 * (r - 1) for r in ratios],
        "per_save_cost_s": per_save_s,
        "auto_interval_s": auto_s,
        "auto_pool": DEFAULT_POOL,
        "overhead_at_auto_pct": 100 * max(per_save_s, 0.0) / auto_s,
        "off_block_spread_pct": 100 * off_spread,
        "block_s": blocks,
    }


CHILD_FLAG = "--child-persist"


def child_persist(store: str, size_mb: str) -> None:
    """The process half of the contention test: build the same state, save it on "go"."""
    torch.set_num_threads(1)
    shape = shape_for(None if size_mb == "default" else float(size_mb))
    model, opt = build_state(shape)
    state = TrainState(model=model, optimizer=opt)
    ckpt = Checkpointer(store, keep_last=2, incremental=False)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        state.step += 1
        info = ckpt.save(state)
        print(json.dumps({"persist_s": info.persist_s}), flush=True)


def lower_priority() -> None:
    """Nice the calling thread to 19; threads it starts inherit that (Linux: nice is per thread)."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def contention(
    trainer: Trainer,
    state: TrainState,
    store: Path,
    size_arg: str,
    rounds: int,
    notes: list[str],
) -> dict[str, Any]:
    """Training step time while the big state persists: idle, in a thread, in a process.

    First with every core training (torch's default threads): the persist competes for CPU
    wherever it runs. Then with one torch thread, leaving a core free, so what remains between
    thread and process is the GIL. "nice thread" is the thread at the lowest CPU priority.
    """
    child = subprocess.Popen(
        [sys.executable, __file__, CHILD_FLAG, str(store / "process"), size_arg],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert child.stdin is not None and child.stdout is not None
    ckpts = {
        "thread": checkpointer(store / "thread", notes, keep_last=2, incremental=False),
        "nice thread": checkpointer(store / "nice", notes, keep_last=2, incremental=False),
    }
    ckpts["thread"].save_async(state).wait()  # warm-up: allocates the snapshot buffers

    def start_niced() -> None:  # the save thread inherits the nice value of its creator
        lower_priority()
        ckpts["nice thread"].save_async(state).wait()

    starter = threading.Thread(target=start_niced)
    starter.start()
    starter.join()
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("the persist child did not start")

    def steps_while(busy: Callable[[], bool]) -> list[float]:
        times = [trainer.step()]
        while busy():
            times.append(trainer.step())
        return times

    def child_busy() -> bool:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 0)
        if ready:
            persist["process"].append(json.loads(child.stdout.readline())["persist_s"])
        return not ready

    all_threads = torch.get_num_threads()
    out: dict[str, Any] = {}
    try:
        for threads in dict.fromkeys((all_threads, 1)):
            torch.set_num_threads(threads)
            modes = ["thread", "nice thread", "process"] if threads > 1 else ["thread", "process"]
            steps: dict[str, list[float]] = {m: [] for m in ["idle", *modes]}
            persist: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(rounds):
                for mode in modes:
                    if mode == "process":
                        child.stdin.write("go\n")
                        child.stdin.flush()
                        steps[mode] += steps_while(child_busy)
                    else:
                        pending = ckpts[mode].save_async(state)  # persist only, not blocking
                        steps[mode] += steps_while(lambda p=pending: not p.done())
                        persist[mode].append(pending.wait().persist_s)
                    steps["idle"] += [trainer.step() for _ in range(3)]
            idle = statistics.median(steps["idle"])
            out[f"torch_threads_{threads}"] = {
                "step_s": {m: statistics.median(v) for m, v in steps.items()},
                "slowdown_pct": {
                    m: 100 * (statistics.median(v) / idle - 1) for m, v in steps.items()
                },
                "persist_s": {m: statistics.median(v) for m, v in persist.items()},
                "steps": steps,
            }
    finally:
        torch.set_num_threads(all_threads)
        for c in ckpts.values():
            c.close()
        child.stdin.close()
        child.wait(timeout=60)
    return out


# ----------------------------------------------------------------------------- restore


def measure_loads(
    s: Samples,
    prefix: str,
    state: TrainState,
    new_state: Callable[[], TrainState],
    pt: Path,
    store: Path,
    repeat: int,
    notes: list[str],
) -> None:
    """torch.load (with and without load_state_dict) against spotsafe's verified restore of
    the same state, cold (files evicted first) and warm, in alternation. spotsafe restores
    twice: into ``state`` (the objects that saved it, as the rows before) and into new ones
    from ``new_state`` (a model as built, an optimizer without state: what a new process
    resumes into). Each load starts with freed memory given back (:func:`trim_heap`)."""
    model, opt = state.objects["model"], state.objects["optimizer"]
    for k in range(repeat):
        print(f"repeat {k + 1}/{repeat}: load{' (' + prefix.strip('_') + ')' if prefix else ''}",
              flush=True)  # fmt: skip
        for temp in ("cold", "warm"):
            trim_heap()
            if temp == "cold":
                evict(pt)
            t0 = time.perf_counter()
            loaded = torch.load(pt, weights_only=True, mmap=False)
            s.add(f"{prefix}torch_load_{temp}", time.perf_counter() - t0)
            model.load_state_dict(loaded["model"])
            opt.load_state_dict(loaded["optim"])
            s.add(f"{prefix}torch_load_apply_{temp}", time.perf_counter() - t0)
            del loaded
            trim_heap()
            if temp == "cold":
                evict(store)
            ckpt = checkpointer(store, notes, keep_last=2)
            t0 = time.perf_counter()
            info = ckpt.restore(state)
            s.add(f"{prefix}ss_restore_{temp}", time.perf_counter() - t0)
            s.add(f"{prefix}ratio_ss_restore_{temp}", s[f"{prefix}ss_restore_{temp}"][-1]
                  / s[f"{prefix}torch_load_{temp}"][-1])  # fmt: skip
            ckpt.close()
            assert info is not None and not info.fell_back
            fresh = new_state()
            trim_heap()
            if temp == "cold":
                evict(store)
            ckpt = checkpointer(store, notes, keep_last=2)
            t0 = time.perf_counter()
            info = ckpt.restore(fresh)
            s.add(f"{prefix}ss_restore_new_{temp}", time.perf_counter() - t0)
            s.add(f"{prefix}ratio_ss_restore_new_{temp}", s[f"{prefix}ss_restore_new_{temp}"][-1]
                  / s[f"{prefix}torch_load_{temp}"][-1])  # fmt: skip
            ckpt.close()
            assert info is not None and not info.fell_back
            del fresh


# ----------------------------------------------------------------------------- frozen


def frozen_bytes(shape: Shape, store: Path, frozen_frac: float, notes: list[str]) -> dict[str, Any]:
    """Bytes the second save writes when only the unfrozen tail of the model trains."""
    model = build_model(shape, seed=4)
    total = sum(p.numel() for p in model.parameters())
    trainable: list[nn.Parameter] = list(model.ln_f.parameters())
    for block in reversed(model.blocks):
        if sum(p.numel() for p in trainable) >= (1 - frozen_frac) * total:
            break
        trainable.extend(block.parameters())
    ids = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    opt = torch.optim.Adam(trainable, lr=1e-4)
    state = TrainState(model=model, optimizer=opt)
    ckpt = checkpointer(store, notes, keep_last=2)
    fill_adam(trainable, opt, seed=5)
    state.step = 1
    first = ckpt.save(state)
    fill_adam(trainable, opt, seed=6)  # only the trainable part changes
    state.step = 2
    second = ckpt.save(state)
    trainable_bytes = sum(p.numel() * p.element_size() * 3 for p in trainable)
    return {
        "frozen_fraction": 1 - sum(p.numel() for p in trainable) / total,
        "trainable_state_bytes": trainable_bytes,
        "first_save_bytes": first.bytes_written,
        "second_save_bytes": second.bytes_written,
        "ratio": second.bytes_written / trainable_bytes,
    }


# ----------------------------------------------------------------------------- report


@dataclass(slots=True, kw_only=True)
class Row:
    name: str
    seconds: float | None = None
    gbps: float | None = None
    vs: str = ""  #: "0.03x torch.save"
    target: str = ""
    met: bool | None = None
    value: float | None = None  #: the compared quantity (ratio, %)


def check(name: str, ratio: float, baseline: str, op: str, goal: float, unit: str = "x") -> Row:
    met = ratio <= goal if op == "<=" else ratio >= goal
    vs = f"{ratio:.3f}{unit} {baseline}" if unit == "x" else f"{ratio:.2f}{unit} {baseline}"
    return Row(name="", vs=vs, target=f"{op} {goal:g}{unit}", met=met, value=ratio)


def noisy(row: Row, ab: dict[str, Any]) -> Row:
    """Mark an A/B verdict inconclusive when blocks without saves vary more than the target."""
    if ab["off_block_spread_pct"] > 2.0:
        row.vs += f" (noise {ab['off_block_spread_pct']:.0f}%)"
        row.met = None
        row.target = "noise"
    return row


def render(rows: list[Row]) -> str:
    header = (
        f"{'measurement':<44} {'seconds':>8} {'GB/s':>6}  {'vs baseline':<34} {'target':<9} met"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        sec = f"{r.seconds:8.3f}" if r.seconds is not None else " " * 8
        gbps = f"{r.gbps:6.2f}" if r.gbps is not None else " " * 6
        met = {None: "", True: "yes", False: "NO"}[r.met] if r.target != "noise" else "?"
        lines.append(f"{r.name:<44} {sec} {gbps}  {r.vs:<34} {r.target:<9} {met}".rstrip())
    return "\n".join(lines)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--size-mb",
        type=float,
        default=None,
        help="state size in MiB (weights + Adam moments); default GPT-2 small, ~1.5 GB",
    )
    ap.add_argument("--repeat", type=int, default=3, help="repetitions; the table shows medians")
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="where the JSON goes")
    ap.add_argument("--train-s", type=float, default=48.0, help="training A/B length; 0 skips")
    ap.add_argument("--every-s", type=float, default=5.0, help="A/B save interval (seconds)")
    ap.add_argument("--contention-rounds", type=int, default=2, help="0 skips the GIL test")
    ap.add_argument("--frozen", type=float, default=0.9, help="frozen fraction of parameters")
    ap.add_argument(
        "--only",
        choices=["restore"],
        help="restore: only the restore rows of both states (one save each, no A/B)",
    )
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    notes: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / f"tmp-{os.getpid()}"  # on the repository's disk, not /tmp (maybe tmpfs)
    work.mkdir()
    t_start = time.perf_counter()
    try:
        result = run(args, work, notes)
    finally:
        rm(work)
    result["wall_s"] = time.perf_counter() - t_start
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"checkpoint-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(result["table"])
    for note in notes:
        print(f"note: {note}")
    start, end = result["machine"]["loadavg_start"][0], result["machine"]["loadavg_end"][0]
    print(f"load average (1 min): {start:.1f} at start, {end:.1f} at end")
    print(f"\nwall {result['wall_s']:.0f} s; JSON: {path}")
    return 0


def run(args: argparse.Namespace, work: Path, notes: list[str]) -> dict[str, Any]:
    loadavg_start = os.getloadavg()
    shape = shape_for(args.size_mb)
    print(f"building the state: {shape} ...", flush=True)
    model, opt = build_state(shape)
    sd = plain_state_dict(model, opt)
    state = TrainState(model=model, optimizer=opt)
    parts = [memoryview(t.detach().contiguous().numpy()) for t in tensors_of(sd) if t.numel()]
    nbytes = sum(p.nbytes for p in parts)
    n_tensors = len(parts)
    print(f"state: {nbytes / GB:.2f} GB in {n_tensors} tensors", flush=True)

    s = Samples()
    sync_ckpt = checkpointer(work / "ss-sync", notes, keep_last=2, incremental=False)
    async_ckpt = checkpointer(work / "ss-async", notes, keep_last=2, incremental=False)
    t0 = time.perf_counter()
    first = async_ckpt.save_async(state)
    s.add("ss_async_block_first", time.perf_counter() - t0)
    first.wait()
    pt = work / "state.pt"
    dcp_bytes = 0
    if args.only == "restore":
        torch_save(pt, sd)
        state.step += 1
        sync_ckpt.save(state)
    for k in range(args.repeat if args.only is None else 0):
        print(f"repeat {k + 1}/{args.repeat}: save", flush=True)
        s.add("raw", raw_write(work / "raw.bin", parts))
        rm(work / "raw.bin")
        s.add("raw_parallel", raw_write_parallel(work / "raw", parts, DEFAULT_IO_THREADS))
        rm(work / "raw")
        rm(pt)
        s.add("torch_save", torch_save(pt, sd))
        s.add("dcp_save", dcp_save(work / "dcp", sd))
        rm(work / "dcp")
        blocking, total = dcp_async_save(work / "dcp-async", sd)
        s.add("dcp_async_block", blocking)
        s.add("dcp_async_total", total)
        dcp_bytes = tree_bytes(work / "dcp-async")
        rm(work / "dcp-async")
        state.step += 1
        t0 = time.perf_counter()
        sync_ckpt.save(state)
        s.add("ss_sync", time.perf_counter() - t0)
        s.add("notice_to_exit", notice_to_exit(state, work / f"notice-{k}", notes))
        rm(work / f"notice-{k}")
        state.step += 1
        t0 = time.perf_counter()
        pending = async_ckpt.save_async(state)
        s.add("ss_async_block", time.perf_counter() - t0)
        pending.wait()
        s.add("ss_async_total", time.perf_counter() - t0)
    async_ckpt.close()
    rm(work / "ss-async")
    pt_bytes = pt.stat().st_size
    ss_bytes = tree_bytes(work / "ss-sync") // 2  # keep_last=2 full checkpoints
    sync_ckpt.close()

    def new_gpt() -> TrainState:
        m = build_model(shape, seed=9)
        return TrainState(model=m, optimizer=torch.optim.Adam(m.parameters(), lr=1e-4))

    measure_loads(s, "", state, new_gpt, pt, work / "ss-sync", args.repeat, notes)
    rm(work / "ss-sync")
    rm(pt)
    del sd, parts

    print("the wide state: 36 tensors of 16 MiB", flush=True)
    wide_model, wide_opt = build_wide()
    wide_state = TrainState(model=wide_model, optimizer=wide_opt)
    wide_sd = plain_state_dict(wide_model, wide_opt)
    wide_tensors = [t for t in tensors_of(wide_sd) if t.numel()]
    wide_bytes = sum(t.numel() * t.element_size() for t in wide_tensors)
    torch_save(work / "wide.pt", wide_sd)
    del wide_sd
    wide_state.step = 1
    ckpt = checkpointer(work / "ss-wide", notes, keep_last=2, incremental=False)
    ckpt.save(wide_state)
    ckpt.close()

    def new_wide() -> TrainState:
        m, _ = build_wide(seed=9)
        return TrainState(model=m, optimizer=torch.optim.AdamW(m.parameters(), lr=1e-4))

    measure_loads(
        s, "wide_", wide_state, new_wide, work / "wide.pt", work / "ss-wide", args.repeat, notes
    )
    rm(work / "ss-wide")
    rm(work / "wide.pt")
    del wide_state, wide_model, wide_opt

    ab: dict[str, Any] | None = None
    cont: dict[str, Any] | None = None
    frozen: dict[str, Any] | None = None
    if args.only is None:
        print("frozen model: two saves", flush=True)
        frozen = frozen_bytes(shape, work / "frozen", args.frozen, notes)
        rm(work / "frozen")
    if args.only is None and (args.train_s > 0 or args.contention_rounds > 0):
        trainer = Trainer()
        if args.train_s > 0:
            print(f"training A/B: ~{args.train_s:.0f} s", flush=True)
            ab = training_ab(trainer, work / "train", args.every_s, args.train_s, notes)
            rm(work / "train")
        if args.contention_rounds > 0:
            print("contention: training while the state persists (thread, process)", flush=True)
            size_arg = "default" if args.size_mb is None else str(args.size_mb)
            cont = contention(
                trainer, state, work / "contention", size_arg, args.contention_rounds, notes
            )
            rm(work / "contention")

    if frozen is None:
        rows = [*load_rows(s, "", nbytes), *load_rows(s, "wide_", wide_bytes, "wide: ")]
    else:
        rows = table_rows(s, nbytes, wide_bytes, frozen, ab, cont)
    notes.append(
        "cold reads: files evicted with posix_fadvise(DONTNEED); a virtual disk may still be"
        " cached by the host, so cold reads can be optimistic"
    )
    notes.append(
        "spotsafe sync/async use incremental=False here, so every save writes the full state"
        " like torch.save; the frozen-model and training rows use the default (incremental)"
    )
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "spotsafe": spotsafe.__version__,
            "commit": git_commit(),
            "bench_dir": str(work),
            "loadavg_start": loadavg_start,
            "loadavg_end": os.getloadavg(),
        },
        "config": {
            "shape": {"d": shape.d, "layers": shape.layers, "vocab": shape.vocab, "ctx": shape.ctx},
            "params": shape.params(),
            "state_bytes": nbytes,
            "tensors": n_tensors,
            "wide": {
                "layers": WIDE_LAYERS,
                "d": WIDE_D,
                "state_bytes": wide_bytes,
                "tensors": len(wide_tensors),
            },
            "repeat": args.repeat,
            "train_s": args.train_s,
            "every_s": args.every_s,
        },
        "bytes_on_disk": {"torch_save": pt_bytes, "dcp": dcp_bytes, "spotsafe": ss_bytes},
        "samples_s": dict(s),
        "frozen": frozen,
        "training_ab": ab,
        "contention": cont,
        "rows": [
            {k: getattr(r, k) for k in ("name", "seconds", "gbps", "vs", "target", "met", "value")}
            for r in rows
        ],
        "table": render(rows),
        "notes": notes,
    }


def load_rows(s: Samples, prefix: str, nbytes: int, label: str = "") -> list[Row]:
    """The restore rows of one state: torch.load against spotsafe's verified restore. The
    ratio is the median of each round's own ratio (the two loads ran back to back, so a
    load spike that slows both cancels out), with the range over the rounds."""
    rows = []
    for temp in ("cold", "warm"):

        def timed(name: str, key: str, temp: str = temp) -> Row:
            sec = s.median(f"{prefix}{key}_{temp}")
            return Row(name=f"{label}{name} ({temp})", seconds=sec, gbps=nbytes / sec / GB)

        def ratio(key: str, temp: str = temp) -> Row:
            per_round = s[f"{prefix}ratio_{key}_{temp}"]
            row = check("", statistics.median(per_round), "torch.load", "<=", 1.0)
            row.vs += f" ({min(per_round):.2f}-{max(per_round):.2f})"
            return row

        rows += [
            timed("torch.load", "torch_load"),
            timed("torch.load + load_state_dict", "torch_load_apply"),
            timed("spotsafe restore, verified", "ss_restore"),
            ratio("ss_restore"),
            timed("spotsafe restore, new objects", "ss_restore_new"),
            ratio("ss_restore_new"),
        ]
    return rows


def table_rows(
    s: Samples,
    nbytes: int,
    wide_bytes: int,
    frozen: dict[str, Any],
    ab: dict[str, Any] | None,
    cont: dict[str, Any] | None,
) -> list[Row]:
    def timed(name: str, key: str, bandwidth: bool = True) -> Row:
        sec = s.median(key)
        return Row(name=name, seconds=sec, gbps=nbytes / sec / GB if bandwidth else None)

    m = s.median
    rows = [
        timed("raw write (os.write + fsync)", "raw"),
        timed(f"raw write, {DEFAULT_IO_THREADS} files in parallel", "raw_parallel"),
        timed("torch.save + fsync", "torch_save"),
        timed("DCP save", "dcp_save"),
        timed("DCP async_save, blocking", "dcp_async_block", bandwidth=False),
        timed("DCP async_save, total", "dcp_async_total"),
        timed("spotsafe save (sync)", "ss_sync"),
        check("", m("raw") / m("ss_sync"), "raw write GB/s", ">=", 0.9),
        check("", m("raw_parallel") / m("ss_sync"), "parallel raw write GB/s", ">=", 0.9),
        check("", m("ss_sync") / m("torch_save"), "torch.save time", "<=", 1.0),
        timed("SIGTERM -> exit 75, state durable", "notice_to_exit", bandwidth=False),
        Row(name="", vs=f"{m('notice_to_exit') / m('ss_sync'):.2f}x the sync save (the flush)"),
        timed("spotsafe save_async, blocking (1st call)", "ss_async_block_first", False),
        timed("spotsafe save_async, blocking", "ss_async_block", bandwidth=False),
        check("", m("ss_async_block") / m("torch_save"), "torch.save", "<=", 0.05),
        check("", m("ss_async_block") / m("dcp_async_block"), "DCP async blocking", "<=", 0.5),
        timed("spotsafe save_async, total", "ss_async_total"),
        *load_rows(s, "", nbytes),
        *load_rows(s, "wide_", wide_bytes, "wide: "),
        Row(
            name=f"frozen {frozen['frozen_fraction']:.0%}: 2nd save bytes",
            vs=f"{frozen['second_save_bytes'] / GB:.3f} GB vs"
            f" {frozen['trainable_state_bytes'] / GB:.3f} GB",
        ),
        check("", frozen["ratio"], "trainable state", "<=", 1.2),
    ]
    if ab is not None:
        rows += [
            Row(
                name=f"train A/B, save every {ab['every_s']:.1f} s",
                seconds=ab["step_s_on"],
                vs=f"{ab['step_s_off']:.3f} s/step without",
            ),
            noisy(check("", ab["overhead_pct"], "overhead (measured)", "<=", 2.0, unit="%"), ab),
            Row(name="", vs=f"{ab['per_save_cost_s']:.3f} s lost per save"),
            noisy(
                check(
                    "",
                    ab["overhead_at_auto_pct"],
                    f"at auto {ab['auto_interval_s']:.0f} s",
                    "<=",
                    2.0,
                    unit="%",
                ),
                ab,
            ),
        ]
    if cont is not None:
        for key, res in cont.items():
            threads = key.rsplit("_", 1)[1]
            for mode, sec in res["step_s"].items():
                pct = res["slowdown_pct"][mode]
                extra = f", persist {res['persist_s'][mode]:.2f} s" if mode != "idle" else ""
                rows.append(
                    Row(
                        name=f"step ({threads} torch thr), persisting: {mode}",
                        seconds=sec,
                        vs=f"{pct:+.0f}% vs idle{extra}",
                    )
                )
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == CHILD_FLAG:
        child_persist(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
