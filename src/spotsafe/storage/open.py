"""Open a store from a URL or from ``$SPOTSAFE_STORE``."""

from __future__ import annotations

import os
from typing import Any

from spotsafe.env import ENV_STORE, ChildEnv
from spotsafe.errors import ConfigError
from spotsafe.storage.base import Store, redact_url
from spotsafe.storage.fsspec_store import FsspecStore
from spotsafe.storage.local import LocalStore

# fsspec protocol -> the extra that installs its backend.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}


def store_from_env(store: str | os.PathLike[str] | Store | None) -> Store:
    """``store`` opened, or ``$SPOTSAFE_STORE`` when it is None."""
    if isinstance(store, Store):
        return store
    if store is None:
        env = ChildEnv.from_environ().store
        if not env:
            raise ConfigError(
                "no checkpoint store given: pass store= (a path or URL such as "
                f"s3://bucket/run) or set ${ENV_STORE}"
            )
        store = env
    return open_store(store)


def open_store(url: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store at ``url``: a local path, ``file://`` URL or any fsspec URL.

    ``s3://bucket/prefix`` opens an :class:`~spotsafe.storage.s3.S3Store`; ``options`` are
    the fields of :class:`~spotsafe.storage.s3.S3Options` (``part_size``, ``concurrency``,
    ``retry_deadline_s``, ``endpoint_url``, ...). For other protocols they go to fsspec.

    Example:
        >>> open_store("memory://spotsafe-doc").url
        'memory://spotsafe-doc'
    """
    text = os.fspath(url)
    if not text.strip():
        raise ConfigError("the store URL is empty: pass a path or a URL such as s3://bucket/run")
    if "://" not in text:
        return LocalStore(text)
    protocol = text.split("://", 1)[0].lower()
    if protocol == "file":
        return LocalStore(text.split("://", 1)[1])
    if protocol in ("s3", "s3a"):
        # Our own S3 client: parallel multipart, a bounded retry loop and no global RNG
        # draws (see spotsafe.storage.s3); every other protocol goes through fsspec.
        from spotsafe.storage.s3 import S3Store

        return S3Store(text, **options)
    import fsspec

    try:
        fs, root = fsspec.url_to_fs(text, **options)
    except ImportError as e:
        extra = _EXTRAS.get(protocol)
        hint = (
            f"pip install 'spotsafe[{extra}]'" if extra else f"install fsspec's {protocol} backend"
        )
        raise ConfigError(
            f"store {redact_url(text)}: the {protocol}:// backend is not installed ({hint})"
        ) from e
    except ValueError as e:
        raise ConfigError(f"store {redact_url(text)}: not a valid URL ({e})") from e
    return FsspecStore(fs, root, redact_url(text))
