"""Discovery: what checkpoints a store holds, from one listing, without torch.

The Checkpointer, ``spotsafe ls`` and the supervisor (which must start fast and never
imports torch) all read the store through this one module. Discovery lists once and lets
every storage error propagate: an unreadable store is an error, never "no checkpoint".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from spotsafe.checkpoint import quarantine
from spotsafe.checkpoint.manifest import (
    CHECKPOINTS_DIR,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    QUARANTINE_NAME,
    Manifest,
    parse_checkpoint_dir,
)
from spotsafe.errors import CheckpointCorrupt, CheckpointTooNew, ObjectMissing
from spotsafe.storage import Store


class Status(str, Enum):
    """What discovery can tell about a checkpoint directory."""

    VALID = "valid"  #: verified (or, in a listing, manifest and sizes check out)
    PARTIAL = "partial"  #: no manifest: a write that never committed
    CORRUPT = "corrupt"  #: failed verification
    QUARANTINED = "quarantined"  #: failed verification earlier; never picked again
    FOREIGN = "foreign"  #: a valid checkpoint of another job
    NEWER = "newer"  #: written by a newer spotsafe: not corrupt, but this version cannot read it
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
    sizes, never the data files. Safe while a writer prunes: a directory that vanishes
    during the listing, or whose manifest is gone by the time it is read, was pruned and is
    left out; it is never reported as corrupt.

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
            reason = quarantine.reason(store, directory)
            out.append(CheckpointListing(status=Status.QUARANTINED, reason=reason, **common))
            continue
        if MANIFEST_NAME not in files:
            out.append(CheckpointListing(status=Status.PARTIAL, reason="no manifest", **common))
            continue
        where = f"{store.url}/{directory}"
        try:
            if files[MANIFEST_NAME] > MAX_MANIFEST_BYTES:
                raise CheckpointCorrupt(
                    f"{where}: manifest of {files[MANIFEST_NAME]} bytes exceeds"
                    f" {MAX_MANIFEST_BYTES} bytes"
                )
            manifest = read_manifest(store, directory, cache)
            if verify_sizes:
                check_sizes(manifest, sizes, where)
        except CheckpointTooNew as e:
            out.append(CheckpointListing(status=Status.NEWER, reason=short(e, where), **common))
            continue
        except CheckpointCorrupt as e:
            if still_committed(store, directory):
                reason = short(e, where)
                out.append(CheckpointListing(status=Status.CORRUPT, reason=reason, **common))
            continue  # else pruned while we looked: gone, not corrupt
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
    out.sort(key=_newest_first, reverse=True)
    return Discovery(checkpoints=out, sizes=sizes)


def with_commit(found: Discovery, directory: str, manifest: Manifest, size: int) -> Discovery:
    """``found`` as it reads once ``directory``'s manifest (``size`` bytes) is committed.

    The Checkpointer lists the store for retention while it commits, so the listing may or
    may not show the manifest it is writing; the commit succeeded, so this says what the
    store holds either way.

    Example:
        >>> m = Manifest(step=7, epoch=0, created_at=1.0, writer="w", job_id=None,
        ...              attempt=None, generation=None, world_size=1, versions={},
        ...              config_fingerprint=None, files={}, tensors=[], tree=None)
        >>> d = "checkpoints/step-000000000007-0000abcd"
        >>> found = with_commit(Discovery(checkpoints=[], sizes={}), d, m, 100)
        >>> [(c.step, c.status.value) for c in found.checkpoints], found.sizes
        ([(7, 'valid')], {'checkpoints/step-000000000007-0000abcd/MANIFEST.json': 100})
    """
    sizes = dict(found.sizes)
    sizes.update({f: n for f, n in manifest.files.items() if f.startswith(directory + "/")})
    sizes[f"{directory}/{MANIFEST_NAME}"] = size
    own = sum(n for f, n in sizes.items() if f.startswith(directory + "/"))
    entry = CheckpointListing(path=directory, step=manifest.step, status=Status.VALID, size=own,
                              created_at=manifest.created_at, manifest=manifest)  # fmt: skip
    out = [c for c in found.checkpoints if c.path != directory] + [entry]
    out.sort(key=_newest_first, reverse=True)
    return Discovery(checkpoints=out, sizes=sizes)


def _newest_first(c: CheckpointListing) -> tuple[int, float, str]:
    return (c.step, c.created_at or 0.0, c.path)


def read_manifest(store: Store, directory: str, cache: dict[str, Manifest]) -> Manifest:
    """The checked manifest of ``directory``.

    Raises:
        CheckpointCorrupt: it is bad, or it vanished (check :func:`still_committed`).
        CheckpointTooNew: a newer spotsafe wrote it.
    """
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


def still_committed(store: Store, directory: str) -> bool:
    """Whether ``directory``'s manifest is still in the store.

    Asked when a checkpoint looks broken: a file that went missing after the listing is
    corruption only while the manifest that needs it exists; once the manifest is gone too,
    the checkpoint was pruned (retention deletes the manifest first). Storage errors
    propagate: an unreadable store is never taken for a pruned checkpoint.
    """
    try:
        store.read_range(f"{directory}/{MANIFEST_NAME}", 0, 1)
    except ObjectMissing:
        return False
    return True


def check_sizes(manifest: Manifest, sizes: dict[str, int], where: str) -> None:
    """Whether every file the manifest needs is listed with its size; raises if not."""
    for path, size in manifest.files.items():
        got = sizes.get(path)
        if got is None:
            raise CheckpointCorrupt(f"{where}: data file {path} is missing")
        if got != size:
            raise CheckpointCorrupt(f"{where}: {path} has {got} bytes, the manifest says {size}")


def short(error: Exception, where: str) -> str:
    """The error's message without its ``where: `` prefix, for a table that shows the path."""
    text = str(error)
    for prefix in (f"{where}: ", f"{where} "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text
