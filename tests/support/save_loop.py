"""Child process for kill tests: saves checkpoints in a loop, forever.

The weights at step ``s`` are all equal to ``s``, so a reader can tell exactly which state a
checkpoint holds. Prints "saving" once before the first save.

    python -m tests.support.save_loop STORE [--async]
"""

from __future__ import annotations

import sys

import torch

import spotsafe


def main() -> None:
    store = sys.argv[1]
    use_async = "--async" in sys.argv
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])  # ~2 MB
    state = spotsafe.TrainState(model=model)
    ckpt = spotsafe.Checkpointer(store, keep_last=2, shard_bytes=256 * 1024)
    info = ckpt.restore(state)
    step = 0 if info is None else info.step
    print("saving", flush=True)
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        state.step = step
        if use_async:
            ckpt.save_async(state)
            with torch.no_grad():  # training moves on at once; the snapshot must not
                for p in model.parameters():
                    p.fill_(-1.0)
        else:
            ckpt.save(state)


if __name__ == "__main__":
    main()
