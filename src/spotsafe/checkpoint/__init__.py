"""Checkpoints: capture, commit, discover, verify, restore, prune."""

from spotsafe.checkpoint.checkpointer import (
    Checkpointer,
    CheckpointListing,
    PendingSave,
    RestoreInfo,
    SaveInfo,
    Status,
)
from spotsafe.checkpoint.manifest import Manifest

__all__ = [
    "CheckpointListing",
    "Checkpointer",
    "Manifest",
    "PendingSave",
    "RestoreInfo",
    "SaveInfo",
    "Status",
]
