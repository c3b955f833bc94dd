"""spotsafe: PyTorch training that survives spot and preemptible capacity.

The public surface is short and pinned by a test (tests/test_public_surface.py). Names are
imported on first use (PEP 562), so ``spotsafe report`` / ``simulate`` and the policy layer
start without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spotsafe._lazy import lazy_getattr
from spotsafe._version import __version__

if TYPE_CHECKING:
    from spotsafe.checkpoint import Checkpointer, PendingSave, RestoreInfo, SaveInfo
    from spotsafe.data import ResumableLoader
    from spotsafe.guard import Guard
    from spotsafe.state import TrainState

_LAZY = {
    "Checkpointer": "spotsafe.checkpoint",
    "Guard": "spotsafe.guard",
    "PendingSave": "spotsafe.checkpoint",
    "RestoreInfo": "spotsafe.checkpoint",
    "ResumableLoader": "spotsafe.data",
    "SaveInfo": "spotsafe.checkpoint",
    "TrainState": "spotsafe.state",
}

__all__ = [
    "Checkpointer",
    "Guard",
    "PendingSave",
    "RestoreInfo",
    "ResumableLoader",
    "SaveInfo",
    "TrainState",
    "__version__",
]


__getattr__ = lazy_getattr(globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
