"""Child process for kill tests: saves checkpoints in a loop, forever.

The weights at step ``s`` are all equal to ``s``, so a reader can tell exactly which state a
checkpoint holds. Prints "saving" once before the first save.

    python -m tests.support.save_loop STORE [--async] [--big]

``--big`` saves ~20 MB in one data file, so that S3 uploads it in several multipart parts.
"""

from __future__ import annotations

import sys

import torch

import spotsafe


def make_model(big: bool) -> torch.nn.Module:
    """~2 MB of weights, or ~20 MB (two 16 MiB multipart parts) with ``big``."""
    width, layers = (1024, 5) if big else (256, 8)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])


def main() -> None:
    store = sys.argv[1]
    use_async = "--async" in sys.argv
    big = "--big" in sys.argv
    model = make_model(big)
    state = spotsafe.TrainState(model=model)
    shard_bytes = 256 * 1024 * 1024 if big else 256 * 1024
    ckpt = spotsafe.Checkpointer(store, keep_last=2, shard_bytes=shard_bytes)
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
