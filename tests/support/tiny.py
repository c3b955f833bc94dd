"""A tiny model state for checkpoint tests that do not train."""

from __future__ import annotations

from pathlib import Path

import torch

import spotsafe


def tiny_state(seed: int = 0, width: int = 32) -> spotsafe.TrainState:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Linear(width, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    return spotsafe.TrainState(model=model, optimizer=opt)


def weights(state: spotsafe.TrainState) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.objects["model"].state_dict().items()}


def perturb(state: spotsafe.TrainState) -> None:
    """Change the weights, as training would."""
    with torch.no_grad():
        for p in state.objects["model"].parameters():
            p.add_(1.0)


def two_checkpoints(root: Path) -> Path:
    """Steps 10 and 20 of a tiny state in ``root`` (no shared files, no events); returns
    step 20's directory."""
    ckpt = spotsafe.Checkpointer(str(root), incremental=False, events=False)
    state = tiny_state()
    for step in (10, 20):
        perturb(state)
        state.step = step
        ckpt.save(state)
    ckpt.close()
    return next((root / "checkpoints").glob("step-000000000020-*"))
