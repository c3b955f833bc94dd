"""Capture and restore every random number generator a training step may draw from."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger("spotsafe")


def capture() -> dict[str, Any]:
    """The state of python's ``random``, numpy's global RNG, torch's CPU and CUDA RNGs."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put every generator back to ``state`` (from :func:`capture`)."""
    random.setstate(_as_tuples(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None:
        if not torch.cuda.is_available():
            log.warning("checkpoint holds CUDA RNG state, but this machine has no CUDA device")
        elif len(cuda) != torch.cuda.device_count():
            log.warning(
                "checkpoint holds RNG state for %d CUDA devices, this machine has %d;"
                " restoring the first ones",
                len(cuda),
                torch.cuda.device_count(),
            )
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
        else:
            torch.cuda.set_rng_state_all(cuda)


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples all the way down."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value
