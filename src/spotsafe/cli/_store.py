"""Opening a store to look at it, for ``ls`` and ``verify``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spotsafe.errors import StorageError

if TYPE_CHECKING:
    from spotsafe.checkpoint import Checkpointer


def open_to_read(url: str) -> Checkpointer:
    """A read-only Checkpointer on ``url``."""
    from spotsafe.checkpoint import Checkpointer

    return Checkpointer(url, read_only=True)


def check_not_empty(ckpt: Checkpointer, url: str) -> None:
    """Raise when the store holds nothing at all: a mistyped path or URL is an error, not
    "no checkpoints". An existing empty local directory is a store without checkpoints."""
    from spotsafe.storage.local import LocalStore

    store = ckpt.store
    if isinstance(store, LocalStore):
        if store.root.is_dir():
            return
        raise StorageError(f"{store.url}: no such directory; check the path", retryable=False)
    if not store.list(""):
        raise StorageError(
            f"{store.url}: nothing is stored there (no checkpoints, no job record); check the URL",
            retryable=False,
        )
