"""Checkpoints: capture, commit, discover, verify, restore, prune.

Names load on first use (PEP 562): ``spotsafe.checkpoint.discovery``, ``.manifest`` and
``.view`` (:class:`StoreView`) are torch-free, so the supervisor, ``spotsafe ls`` and
``spotsafe verify`` read a store without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spotsafe._lazy import lazy_getattr

if TYPE_CHECKING:
    from spotsafe.checkpoint.checkpointer import (
        Checkpointer,
        Commit,
        PendingSave,
        RestoreInfo,
        SaveInfo,
    )
    from spotsafe.checkpoint.discovery import CheckpointListing, Discovery, Status, discover
    from spotsafe.checkpoint.manifest import Manifest
    from spotsafe.checkpoint.view import StoreView

_LAZY = {
    "CheckpointListing": "spotsafe.checkpoint.discovery",
    "Checkpointer": "spotsafe.checkpoint.checkpointer",
    "Commit": "spotsafe.checkpoint.checkpointer",
    "Discovery": "spotsafe.checkpoint.discovery",
    "Manifest": "spotsafe.checkpoint.manifest",
    "PendingSave": "spotsafe.checkpoint.checkpointer",
    "RestoreInfo": "spotsafe.checkpoint.checkpointer",
    "SaveInfo": "spotsafe.checkpoint.checkpointer",
    "Status": "spotsafe.checkpoint.discovery",
    "StoreView": "spotsafe.checkpoint.view",
    "discover": "spotsafe.checkpoint.discovery",
}

__all__ = [
    "CheckpointListing",
    "Checkpointer",
    "Commit",
    "Discovery",
    "Manifest",
    "PendingSave",
    "RestoreInfo",
    "SaveInfo",
    "Status",
    "StoreView",
    "discover",
]


__getattr__ = lazy_getattr(globals(), _LAZY)
