"""Discovery: what checkpoints a store holds, from one listing, without torch.

The Checkpointer, ``spotsafe ls`` and the supervisor (which must start fast and never
imports torch) all read the store through this one module. Discovery lists once and lets
every storage error propagate: an unreadable store is an error, never "no checkpoint".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from spotsafe.checkpoint.manifest import (
    CHECKPOINTS_DIR,
    MANIFEST_NAME,
    QUARANTINE_NAME,
    Manifest,
    parse_checkpoint_dir,
)
from spotsafe.errors import CheckpointCorrupt, ObjectMissing, StorageError
from spotsafe.storage import Store


class Status(str, Enum):
    """What discovery can tell about a checkpoint directory."""

    VALID = "valid"  #: verified (or, in a listing, manifest and sizes check out)
    PARTIAL = "partial"  #: no manifest: a write that never committed
    CORRUPT = "corrupt"  #: failed verification
    QUARANTINED = "quarantined"  #: failed verification earlier; never picked again
    FOREIGN = "foreign"  #: a valid checkpoint of another job
    SHARED = "shared"  #: pruned, but its data files are still used by kept checkpoints


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointListing:
    """One checkpoint directory as discovery sees it."""

    path: str  #: store path of the directory
    step: int
    status: Status
    size: int  #: bytes of the files in the directory
    created_at: float | None = None
    reason: str = ""  #: why it is not valid
    manifest: Manifest | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovery:
    """The checkpoints of a store (newest first) and the sizes of every file, from one listing."""

    checkpoints: list[CheckpointListing]
    sizes: dict[str, int]  #: store path -> bytes, for every file under checkpoints/

    def newest_valid(self) -> CheckpointListing | None:
        """The newest checkpoint whose manifest and sizes check out."""
        return next((c for c in self.checkpoints if c.status is Status.VALID), None)


def discover(
    store: Store,
    *,
    job_id: str | None = None,
    cache: dict[str, Manifest] | None = None,
    verify_sizes: bool = True,
) -> Discovery:
    """List ``store`` once and classify every checkpoint directory in it.

    Cheap: reads manifests (small; cached in ``cache``, manifests never change) and compares
    sizes, never the data files.

    Example:
        >>> from spotsafe.storage import open_store
        >>> discover(open_store("memory://spotsafe-discovery-doc")).checkpoints
        []
    """
    listed = store.list(CHECKPOINTS_DIR)
    sizes: dict[str, int] = {}
    dirs: dict[str, dict[str, int]] = {}
    for path, size in listed.items():
        full = path if path.startswith(CHECKPOINTS_DIR + "/") else f"{CHECKPOINTS_DIR}/{path}"
        sizes[full] = size
        # checkpoints/<dir>/<name>, where <name> may be rank-00001/data-000.bin
        top, _, rest = full.partition("/")
        dirname, _, name = rest.partition("/")
        directory = f"{top}/{dirname}"
        if parse_checkpoint_dir(directory) is not None:
            dirs.setdefault(directory, {})[name] = size
    cache = {} if cache is None else cache
    out: list[CheckpointListing] = []
    for directory, files in dirs.items():
        step = parse_checkpoint_dir(directory)
        assert step is not None
        common: dict[str, Any] = {"path": directory, "step": step, "size": sum(files.values())}
        if QUARANTINE_NAME in files:
            reason = quarantine_reason(store, directory)
            out.append(CheckpointListing(status=Status.QUARANTINED, reason=reason, **common))
            continue
        if MANIFEST_NAME not in files:
            out.append(CheckpointListing(status=Status.PARTIAL, reason="no manifest", **common))
            continue
        try:
            manifest = read_manifest(store, directory, cache)
            if verify_sizes:
                check_sizes(manifest, sizes, directory)
        except CheckpointCorrupt as e:
            out.append(CheckpointListing(status=Status.CORRUPT, reason=str(e), **common))
            continue
        status, reason = Status.VALID, ""
        if job_id is not None and manifest.job_id not in (None, job_id):
            status, reason = Status.FOREIGN, f"written by job {manifest.job_id!r}"
        out.append(
            CheckpointListing(
                status=status,
                reason=reason,
                created_at=manifest.created_at,
                manifest=manifest,
                **common,
            )
        )
    # A pruned checkpoint whose files are still used is shared data, not a partial write.
    used = {f for c in out if c.manifest is not None for f in c.manifest.files}
    out = [
        replace(c, status=Status.SHARED, reason="data only")
        if c.status is Status.PARTIAL and any(f.startswith(c.path + "/") for f in used)
        else c
        for c in out
    ]
    out.sort(key=lambda c: (c.step, c.created_at or 0.0, c.path), reverse=True)
    return Discovery(checkpoints=out, sizes=sizes)


def read_manifest(store: Store, directory: str, cache: dict[str, Manifest]) -> Manifest:
    """The checked manifest of ``directory``; :class:`CheckpointCorrupt` if it is bad."""
    cached = cache.get(directory)
    if cached is not None:
        return cached
    where = f"{store.url}/{directory}"
    try:
        data = store.read_bytes(f"{directory}/{MANIFEST_NAME}")
    except ObjectMissing as e:
        raise CheckpointCorrupt(f"{where}: manifest vanished") from e
    manifest = Manifest.from_bytes(data, where)
    if parse_checkpoint_dir(directory) != manifest.step:
        raise CheckpointCorrupt(f"{where}: manifest says step {manifest.step}")
    cache[directory] = manifest  # a single dict store: safe across threads in CPython
    return manifest


def check_sizes(manifest: Manifest, sizes: dict[str, int], where: str) -> None:
    """Whether every file the manifest needs is listed with its size; raises if not."""
    for path, size in manifest.files.items():
        got = sizes.get(path)
        if got is None:
            raise CheckpointCorrupt(f"{where}: data file {path} is missing")
        if got != size:
            raise CheckpointCorrupt(f"{where}: {path} has {got} bytes, the manifest says {size}")


def quarantine_reason(store: Store, directory: str) -> str:
    """Why ``directory`` was quarantined, as its marker says."""
    try:
        data = json.loads(store.read_bytes(f"{directory}/{QUARANTINE_NAME}"))
        return str(data.get("reason", ""))
    except (StorageError, ValueError, AttributeError):
        return "quarantined"
