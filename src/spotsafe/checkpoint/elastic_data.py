"""The data policy of an elastic resume: the interrupted epoch's rest, re-sharded.

A ``DistributedSampler`` on ``W`` ranks shuffles the epoch into one global order and gives
rank ``r`` the items ``r, r + W, r + 2W, ...``. After ``k`` batches of ``B`` on every rank
(ranks step together), the samples consumed are exactly the first ``k * B * W`` of that
global order: the *global sample offset*. Resumed on ``W'`` ranks, rank ``r'`` takes the
rest of the same order, ``offset + r', offset + r' + W', ...``, padded to a multiple of
``W'`` as ``DistributedSampler`` pads (so every rank runs the same number of steps). So
each sample of the interrupted epoch is seen once across the old and new ranks, up to
``W' - 1`` repeated. Once that epoch is done, the loader's own sampler takes over again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from spotsafe.checkpoint import distributed

log = logging.getLogger("spotsafe")


def reshard(loader: Any, position: Mapping[str, Any] | None, *, saved_world: int) -> bool:
    """Make ``loader`` (a ResumableLoader) run the rest of the interrupted epoch, re-sharded
    over this run's ranks; ``position`` is the loader's state on the old rank 0. Whether it
    could (a DistributedSampler under a batch sampler, stopped inside an epoch)."""
    dl = getattr(loader, "loader", loader)
    sampler = getattr(dl, "sampler", None)
    batches = getattr(dl, "batch_sampler", None)
    if (
        position is None
        or not position.get("in_epoch")
        or not isinstance(sampler, torch.utils.data.DistributedSampler)
        or batches is None
        or getattr(batches, "sampler", None) is not sampler
        or not isinstance(getattr(dl, "batch_size", None), int)
    ):
        return False
    offset = int(position["consumed"]) * dl.batch_size * saved_world
    rank, world = distributed.rank_and_world()
    batches.sampler = RestOfEpoch(sampler, batches, offset=offset, saved_world=saved_world,
                                  rank=rank, world=world)  # fmt: skip
    return True


class RestOfEpoch(torch.utils.data.Sampler[int]):
    """One epoch: this rank's share of the rest of ``sampler``'s current epoch, from the
    global ``offset`` on; then it hands ``holder`` back its ``sampler``.

    Example (4 ranks took one sample each; rank 1 of 2 takes every other of the rest):
        >>> import torch
        >>> s = torch.utils.data.DistributedSampler(range(8), num_replicas=4, rank=0, shuffle=False)
        >>> holder = torch.utils.data.BatchSampler(s, batch_size=1, drop_last=False)
        >>> RestOfEpoch(s, holder, offset=4, saved_world=4, rank=1, world=2).indices()
        [5, 7]
    """

    def __init__(
        self, sampler: Any, holder: Any, *, offset: int, saved_world: int, rank: int, world: int
    ) -> None:
        self.sampler = sampler
        self.holder = holder
        self.offset = offset
        self.saved_world = saved_world
        self.rank = rank
        self.world = world

    def indices(self) -> list[int]:
        """This rank's sample indices for the rest of the epoch."""
        s = self.sampler
        n = len(s.dataset)
        if s.shuffle:  # the order DistributedSampler.__iter__ draws for this epoch
            g = torch.Generator()
            g.manual_seed(s.seed + s.epoch)
            order: list[int] = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if s.drop_last and n % self.saved_world:
            total = n // self.saved_world * self.saved_world
            order = order[:total]
        else:
            total = math.ceil(n / self.saved_world) * self.saved_world
            order += (order * math.ceil(total / max(n, 1)))[: total - n]
        rest = order[self.offset :]
        padded = math.ceil(len(rest) / self.world) * self.world
        rest += (rest * math.ceil(padded / max(len(rest), 1)))[: padded - len(rest)]
        return rest[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        mine = self.indices()
        if self.holder.sampler is self:
            self.holder.sampler = self.sampler  # later epochs: the loader's own sampler
        return iter(mine)

    def __len__(self) -> int:
        return len(self.indices())
