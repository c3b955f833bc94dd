"""The narrow storage seam: only the operations the checkpoint code needs.

A store is a root URL (a local path or any fsspec URL) under which objects are named by
'/'-separated relative paths. Objects are written once and never overwritten in place;
there is no rename, because object stores have none.

Discovery (``list``) lets every error propagate as :class:`~spotsafe.errors.StorageError`:
a network, permission or missing-bucket error is never mistaken for an empty store.
"""

from __future__ import annotations

from spotsafe.storage.base import Store, redact_url
from spotsafe.storage.open import open_store, store_from_env
from spotsafe.storage.staged import StagedStore

__all__ = ["StagedStore", "Store", "open_store", "redact_url", "store_from_env"]
