"""Opening a store to look at it, for ``ls`` and ``verify``: torch-free (StoreView)."""

from __future__ import annotations

from spotsafe.checkpoint.view import StoreView
from spotsafe.errors import StorageError


def open_to_read(url: str) -> StoreView:
    """A read-only, torch-free view of the checkpoints at ``url``."""
    return StoreView(url)


def check_not_empty(view: StoreView) -> None:
    """Raise when the store holds nothing at all: a mistyped path or URL is an error, not
    "no checkpoints". An existing empty local directory is a store without checkpoints."""
    from spotsafe.storage.local import LocalStore

    store = view.store
    if isinstance(store, LocalStore):
        if store.root.is_dir():
            return
        raise StorageError(f"{store.url}: no such directory; check the path", retryable=False)
    if not store.list(""):
        raise StorageError(
            f"{store.url}: nothing is stored there (no checkpoints, no job record); check the URL",
            retryable=False,
        )
