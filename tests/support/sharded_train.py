"""Child for torchrun: FSDP2 (``fully_shard`` on a CPU mesh, gloo) under a Guard, with the
scenarios of tests/sharded chained in one process group (each torchrun costs seconds).

    torchrun --standalone --nproc-per-node N -m tests.support.sharded_train OUT ACTION...
    python -m tests.support.sharded_train --launch N OUT ACTION...    # the same, ranks forked

Actions, in the order given:

- ``train:STORE[:stop=K][:tag=T][:hostbuf=B]``: train from STORE's newest checkpoint (or
  fresh) to the end (exit 0), saving every 2 steps in the background (the Guard's async
  saves; ``Checkpointer(host_buffer_bytes=B)``); with
  ``stop=K``, rank 1 signals itself (SIGTERM) after step K: every rank exits 75, and each
  background write of the shards waits 0.3 s first, so training changes the live state
  while the snapshot is written.
- ``fallback:STORE``: restore STORE into a fresh state; print the step loaded.
- ``strict:STORE``: restore with ``Checkpointer(elastic=False)``; print what it raised.
- ``s3:URL``: train 5 steps saving every 2 in the background into URL (an S3 bucket), the
  Guard's exit saving the last; then restore into a fresh state. Prints ``s3saved`` and
  ``s3restored RANK STEP DIGEST RNG`` (RNG: a digest of torch's RNG state).
- ``killsave:STORE``: resume, save at the next step, then die (SIGKILL) on rank 1 in the
  middle of writing its shards during the save after it.

Each rank appends the sample indices it trained on to OUT/seen-TAG-RANK.jsonl and prints
``final|restored TAG RANK STEP DIGEST`` lines (DIGEST: of the full model and optimizer
state), ``at TAG RANK 6 DIGEST`` after step 6, and ``wrote TAG RANK STEP BACKGROUND`` as
it writes its shards of a checkpoint (BACKGROUND: 1 off the training thread).
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import xxhash
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import spotsafe

EPOCHS = 2
BATCH = 4


class Indexed(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    def __init__(self, n: int = 96) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        noise = torch.randn(6) * 0.01 + random.random() * 0.01 + float(np.random.rand()) * 0.01
        return self.x[i] + noise, self.y[i], i


def build(mesh: Any) -> tuple[spotsafe.TrainState, Any, Any, Any]:
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same initial model on every rank
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.9)
    # Seeds differ per rank: each rank's RNG streams are its own.
    torch.manual_seed(100 + rank)
    random.seed(rank)
    np.random.seed(rank)
    ds = Indexed()
    sampler = torch.utils.data.DistributedSampler(ds, shuffle=True, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=sampler)
    state = spotsafe.TrainState(model=model, optimizer=opt, scheduler=sched, loader=loader)
    return state, model, opt, (sampler, loader, sched)


def digest(model: Any, opt: Any) -> str:
    """The full (gathered) model and optimizer state: equal across world sizes."""
    full = StateDictOptions(full_state_dict=True)
    msd = get_model_state_dict(model, options=full)
    osd = get_optimizer_state_dict(model, opt, options=full)
    h = xxhash.xxh3_64()
    for k in sorted(msd):
        h.update(k.encode() + msd[k].detach().contiguous().numpy().tobytes())
    for fqn in sorted(osd["state"]):
        for k in sorted(osd["state"][fqn]):
            h.update(
                f"{fqn}.{k}".encode() + osd["state"][fqn][k].detach().contiguous().numpy().tobytes()
            )
    h.update(json.dumps(osd["param_groups"], sort_keys=True, default=str).encode())
    return h.hexdigest()


WRITES: dict[str, Any] = {"tag": "", "slow": False}


def watch_writes() -> None:
    """Print where each rank writes its shards of each checkpoint (see the docstring)."""
    from spotsafe.checkpoint import dcp_storage

    real = dcp_storage.StoreWriter.write_data

    def write_data(self: Any, plan: Any, planner: Any) -> Any:
        background = threading.current_thread() is not threading.main_thread()
        if background and WRITES["slow"]:
            time.sleep(0.3)
        step = int(self.directory.rsplit("/", 1)[-1].split("-")[1])
        print(f"wrote {WRITES['tag']} {dist.get_rank()} {step} {int(background)}", flush=True)
        return real(self, plan, planner)

    dcp_storage.StoreWriter.write_data = write_data  # type: ignore[method-assign]


def train(
    out: Path, store: str, tag: str, stop: int | None, mesh: Any, host_buffer: int | None = None
) -> None:
    rank = dist.get_rank()
    WRITES.update(tag=tag, slow=stop is not None)
    state, model, opt, (sampler, loader, sched) = build(mesh)
    ckpt = spotsafe.Checkpointer(store, keep_last=3, host_buffer_bytes=host_buffer)
    info = ckpt.restore(state)
    if info is not None:
        print(f"restored {tag} {rank} {info.step} {digest(model, opt)}", flush=True)
    seen = open(out / f"seen-{tag}-{rank}.jsonl", "a")  # noqa: SIM115
    with spotsafe.Guard(ckpt, state, every_steps=2) as guard:
        while state.epoch < EPOCHS:
            sampler.set_epoch(state.epoch)
            for x, y, idx in loader:
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                seen.write(json.dumps([state.epoch, idx.tolist()]) + "\n")
                seen.flush()
                guard.step()
                if state.step == 6:
                    print(f"at {tag} {rank} {state.step} {digest(model, opt)}", flush=True)
                if stop is not None and state.step == stop and rank == 1:
                    os.kill(os.getpid(), signal.SIGTERM)  # as when one node is reclaimed
            guard.end_epoch()
    print(f"final {tag} {rank} {state.step} {digest(model, opt)}", flush=True)
    ckpt.close()


def rng_digest() -> str:
    return xxhash.xxh3_64(torch.get_rng_state().numpy().tobytes()).hexdigest()


def s3(url: str, mesh: Any) -> None:
    rank = dist.get_rank()
    state, model, opt, (sampler, loader, _sched) = build(mesh)
    ckpt = spotsafe.Checkpointer(url, keep_last=2)
    with spotsafe.Guard(ckpt, state, every_steps=2) as guard:
        sampler.set_epoch(0)
        for x, y, _idx in itertools.islice(loader, 5):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            guard.step()
    ckpt.close()
    print(f"s3saved {rank} {state.step} {digest(model, opt)} {rng_digest()}", flush=True)
    fresh, model, opt, _ = build(mesh)
    info = spotsafe.Checkpointer(url).restore(fresh)
    assert info is not None
    print(f"s3restored {rank} {info.step} {digest(model, opt)} {rng_digest()}", flush=True)


def fallback(store: str, mesh: Any) -> None:
    state, _model, _opt, _ = build(mesh)
    info = spotsafe.Checkpointer(store).restore(state)
    assert info is not None
    print(f"fallback {dist.get_rank()} {info.step} {int(info.fell_back)} {digest(_model, _opt)}",
          flush=True)  # fmt: skip


def strict(store: str, mesh: Any) -> None:
    state, *_ = build(mesh)
    try:
        spotsafe.Checkpointer(store, elastic=False).restore(state)
        outcome = "loaded"
    except spotsafe.errors.CheckpointMismatch as e:
        outcome = type(e).__name__
    print(f"strict {dist.get_rank()} {outcome}", flush=True)


def killsave(store: str, mesh: Any) -> None:
    state, _model, _opt, _ = build(mesh)
    ckpt = spotsafe.Checkpointer(store, keep_last=3)
    ckpt.restore(state)
    state.step += 1
    ckpt.save(state)
    print(f"committed {dist.get_rank()} {state.step}", flush=True)
    if dist.get_rank() == 1:
        real = ckpt.store.write

        def dying(path: str, chunks: Any) -> int:
            if path.endswith(".distcp"):
                for i, _ in enumerate(chunks):
                    if i == 2:  # some bytes of the shard are out
                        os.kill(os.getpid(), signal.SIGKILL)
            return real(path, chunks)

        ckpt.store.write = dying  # type: ignore[method-assign]
    state.step += 1
    ckpt.save(state)


def work(out: str, actions: list[str]) -> None:
    """One rank: the ``actions`` in order, in one process group."""
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    watch_writes()
    for action in actions:
        kind, _, rest = action.partition(":")
        WRITES.update(tag=kind, slow=False)
        args = rest.split(":")
        if kind == "train":
            opts = dict(a.split("=") for a in args[1:])
            stop = int(opts["stop"]) if "stop" in opts else None
            host_buffer = int(opts["hostbuf"]) if "hostbuf" in opts else None
            train(Path(out), args[0], opts.get("tag", Path(args[0]).name), stop, mesh, host_buffer)
        elif kind == "fallback":
            fallback(args[0], mesh)
        elif kind == "strict":
            strict(args[0], mesh)
        elif kind == "s3":
            s3(rest, mesh)
        elif kind == "killsave":
            killsave(args[0], mesh)
        else:
            raise SystemExit(f"unknown action {action!r}")
        dist.barrier()
    dist.destroy_process_group()


#: What a rank imports only once it trains: DTensor's first construction imports dynamo.
WARM = ("torch._dynamo", "spotsafe.guard", "spotsafe.checkpoint.checkpointer",
        "spotsafe.checkpoint.dcp_storage", "spotsafe.checkpoint.view", "numpy.random")  # fmt: skip


def launch(ranks: int, out: str, actions: list[str]) -> int:
    """``torchrun --standalone --nproc-per-node RANKS --start-method fork``, through torchrun's
    own argument parsing, agent and rendezvous, with :func:`work` as the entrypoint: each rank
    is forked from this process, whose imports (torch, DTensor, DCP: ~6 s of CPU a process)
    it shares, instead of starting a new interpreter. A failed rank's exit code is reported
    as torchrun reports it (``exitcode : 75``); returns the launch's exit status."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    args = torchrun.parse_args(
        ["--standalone", "--nproc-per-node", str(ranks), "--start-method", "fork", "-m", __name__]
    )
    # What torchrun.run does for --standalone: a C10d store on a free port, a fresh run id.
    args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", uuid.uuid4().hex
    config, _cmd, _ = torchrun.config_from_args(args)
    for name in WARM:  # imported once here rather than in each rank after its fork
        importlib.import_module(name)
    try:
        elastic_launch(config, work)(out, actions)
    except ChildFailedError as e:
        print(e.format_msg(), file=sys.stderr, flush=True)
        return 1
    return 0


def main() -> None:
    if sys.argv[1] == "--launch":
        sys.exit(launch(int(sys.argv[2]), sys.argv[3], sys.argv[4:]))
    work(sys.argv[1], sys.argv[2:])  # one rank under torchrun


if __name__ == "__main__":
    main()
