"""A tiny real training run under a Guard that interrupts itself at chosen steps.

    python -m tests.report.interrupted_child --steps 24 --every 4 ATTEMPT=ACTION@STEP ...

After step STEP of attempt ATTEMPT (``$SPOTSAFE_ATTEMPT``) it does ACTION:

    term       SIGTERM to itself: the Guard stops at the next step (STEP + 1), exit 75
    kill       SIGKILL to itself (the node vanished, no clean stop)
    corrupt+killsup  flip bytes of the newest checkpoint's data (same size: only a full
               verification notices), then SIGKILL its supervisor and itself (the machine
               died with both)

Saves are synchronous (every --every steps) so the newest checkpoint at each action is the
script's to know. Heartbeats every step.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import torch
from torch import nn

import spotsafe
from spotsafe.env import ChildEnv


def corrupt_newest(store: str) -> None:
    """Flip the last bytes of the biggest data file of the newest committed checkpoint."""
    dirs = sorted(
        (p for p in Path(store).glob("**/MANIFEST.json")), key=lambda p: p.stat().st_mtime
    )
    newest = dirs[-1].parent
    data = max((p for p in newest.rglob("*") if p.is_file() and p.name != "MANIFEST.json"),
               key=lambda p: p.stat().st_size)  # fmt: skip
    raw = bytearray(data.read_bytes())
    raw[-8:] = bytes(b ^ 0xFF for b in raw[-8:])
    data.write_bytes(bytes(raw))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--step-s", type=float, default=0.05)
    p.add_argument("plan", nargs="*")
    args = p.parse_args()
    env = ChildEnv.from_environ()
    actions: dict[int, tuple[str, int]] = {}
    for item in args.plan:
        attempt, _, rest = item.partition("=")
        action, _, step = rest.partition("@")
        actions[int(attempt)] = (action, int(step))
    action, at = actions.get(env.attempt or 0, ("", -1))

    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    state = spotsafe.TrainState(model=model, optimizer=opt)
    ckpt = spotsafe.Checkpointer(keep_last=4)
    ckpt.restore(state)
    x = torch.randn(4, 8)
    with spotsafe.Guard(ckpt, state, every_steps=args.every, async_saves=False,
                        heartbeat_s=1e-6) as guard:  # fmt: skip
        while state.step < args.steps:
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(args.step_s)
            guard.step()
            if state.step == at:
                if action == "term":
                    os.kill(os.getpid(), signal.SIGTERM)
                elif action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif action == "corrupt+killsup":
                    assert env.store is not None
                    corrupt_newest(env.store)
                    os.kill(os.getppid(), signal.SIGKILL)
                    os.kill(os.getpid(), signal.SIGKILL)
    ckpt.close()


if __name__ == "__main__":
    main()
