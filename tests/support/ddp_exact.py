"""Child for torchrun: the 2-rank rows of the resume-exactness matrix, in one job.

    torchrun --standalone --nproc-per-node 2 -m tests.support.ddp_exact WORKDIR SCENARIO...

A SCENARIO is ``LOADER-wWORKERS[-gen]`` (``dataloader-w2-gen``: a bare torch DataLoader,
2 workers per rank, a ``generator=``). Each one trains the run of tests/support/training.py
as 2-rank DDP (gloo; a DistributedSampler, dropout, augmentation in the workers): once
uninterrupted as a plain run (no spotsafe records its loader), then stopped at each of
STOPS and resumed from its checkpoint, every run built from scratch and seeded as a new
process would be. Rank 0 prints one line per scenario, ``result SCENARIO exact|differs
warned|silent``: "differs" when any rank's weights or optimizer state differ, "warned"
when TrainState warned on any rank.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from spotsafe.data import NotExactWarning
from tests.support.training import Interrupted, Setup, plain, train

EPOCHS = 2
STOPS = [5, 7]  # 5 steps per epoch per rank: the last batch of epoch 0; mid-epoch 1


def setup_of(scenario: str) -> Setup:
    loader, workers, *rest = scenario.split("-w")[0], *scenario.split("-w")[1].split("-")
    return Setup(loader=loader, workers=int(workers), generator="gen" in rest, epochs=EPOCHS)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@functools.cache
def plain_run(setup: Setup) -> dict[str, torch.Tensor]:
    return train(None, setup)


def run(workdir: Path, scenario: str) -> tuple[bool, bool]:
    setup = setup_of(scenario)
    reference = plain_run(plain(setup))  # no spotsafe records its loader
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotExactWarning)
        store = str(workdir / scenario)
        for stop in STOPS:
            try:
                train(store, setup, stop_at=stop)
            except Interrupted:
                continue
            raise AssertionError(f"{scenario}: the run did not stop at step {stop}")
        resumed = train(store, setup)
    warned = any(issubclass(w.category, NotExactWarning) for w in caught)
    return same(resumed, reference), warned


def main() -> None:
    workdir, scenarios = Path(sys.argv[1]), sys.argv[2:]
    dist.init_process_group("gloo")
    for scenario in scenarios:
        exact, warned = run(workdir, scenario)
        flags = torch.tensor([int(not exact), int(warned)])
        dist.all_reduce(flags)  # any rank
        if dist.get_rank() == 0:
            verdict = "differs" if flags[0] else "exact"
            print(f"result {scenario} {verdict} {'warned' if flags[1] else 'silent'}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
