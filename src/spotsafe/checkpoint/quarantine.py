"""Quarantine: the marker that keeps a checkpoint which failed verification from being picked.

``QUARANTINE.json`` beside the manifest says why and when. Only a checkpoint that is still
committed and still wrong is marked (a checkpoint pruned while it was read is not corrupt),
and a human can lift the marker with ``spotsafe verify --release STEP`` after looking.
"""

from __future__ import annotations

import json

from spotsafe.checkpoint.manifest import QUARANTINE_NAME
from spotsafe.errors import StorageError
from spotsafe.storage import Store


def mark(store: Store, directory: str, *, reason: str, at: float, by: str) -> None:
    """Quarantine ``directory``: restore never picks it again. Where it is quarantined
    already (by another rank that found the same fault), its first reason stays."""
    body = json.dumps({"reason": reason, "at": at, "by": by})
    store.create_exclusive(f"{directory}/{QUARANTINE_NAME}", body.encode())


def reason(store: Store, directory: str) -> str:
    """Why ``directory`` was quarantined, as its marker says."""
    try:
        data = json.loads(store.read_bytes(f"{directory}/{QUARANTINE_NAME}"))
        return str(data.get("reason", ""))
    except (StorageError, ValueError, AttributeError):
        return "quarantined"


def release(store: Store, directory: str) -> None:
    """Lift the quarantine of ``directory``; the next restore verifies it again.

    Example:
        >>> from spotsafe.storage import open_store
        >>> store = open_store("memory://spotsafe-release-doc")
        >>> mark(store, "checkpoints/step-000000000010-abcdef01", reason="bad", at=0.0, by="x")
        >>> release(store, "checkpoints/step-000000000010-abcdef01")
        >>> store.list("checkpoints")
        {}
    """
    store.delete([f"{directory}/{QUARANTINE_NAME}"])
