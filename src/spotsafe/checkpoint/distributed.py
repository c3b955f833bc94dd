"""torch.distributed support: one checkpoint for all ranks, committed once every rank's part
is durable.

Layout: rank r writes its data files under ``<checkpoint>/rank-0000r/``; rank 0 gathers what
every rank wrote and commits one manifest whose state tree is ``{"ranks": [part_0, ...]}``
where ``part_r = {"rank": <rank r's own state>, "shared": <replicated state, rank 0 only>}``.
Replicated state (a DDP model, its optimizer) is written once, by rank 0; each rank's RNGs
and data-loader position are kept per rank. Collectives run only on the training thread,
never in a signal handler or a background thread, so distributed saves are synchronous.
"""

from __future__ import annotations

from typing import Any

import torch


def active() -> bool:
    """Whether this process is one rank of several in an initialized process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if not active():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def _device() -> torch.device:
    import torch.distributed as dist

    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else (torch.device("cpu"))
    )


def all_true(ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (a MIN all-reduce; True outside distributed)."""
    if not active():
        return ok
    import torch.distributed as dist

    t = torch.tensor([1 if ok else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_flags(flags: list[bool]) -> list[bool]:
    """Element-wise OR of ``flags`` over all ranks (a MAX all-reduce)."""
    if not active():
        return flags
    import torch.distributed as dist

    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (small JSON-like values between our own ranks)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any] | None:
    """Every rank's ``value`` on rank 0 (None on the others)."""
    if not active():
        return [value]
    import torch.distributed as dist

    rank = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def offset_tensors(node: Any, offset: int) -> Any:
    """An encoded state tree with every tensor index moved by ``offset``."""
    if isinstance(node, list):
        return [offset_tensors(v, offset) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: offset_tensors(v, offset) for k, v in node.items()}
    for key in ("$tensor", "$ndarray"):
        if key in node:
            out[key] = node[key] + offset
    return out
