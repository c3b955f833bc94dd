"""Child process for reader tests: saves as fast as it can, forever, with keep_last=2.

A frozen backbone (its bytes never change, so every checkpoint shares its data file with
an earlier one) and a head whose weights all equal the step, so a reader can tell which
state it loaded. Prints "saving" once the first checkpoint is committed.

    python -m tests.support.live_writer STORE
"""

from __future__ import annotations

import sys

import torch

import spotsafe


def make_state() -> tuple[spotsafe.TrainState, torch.nn.Module]:
    torch.manual_seed(0)
    backbone = torch.nn.Linear(256, 256)  # 256 KiB: above the size that is shared, not rewritten
    head = torch.nn.Linear(256, 4)
    return spotsafe.TrainState(backbone=backbone, head=head), head


def main() -> None:
    state, head = make_state()
    ckpt = spotsafe.Checkpointer(sys.argv[1], keep_last=2, events=False)
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in head.parameters():
                p.fill_(float(step))
        state.step = step
        ckpt.save(state)
        if step == 1:
            print("saving", flush=True)


if __name__ == "__main__":
    main()
