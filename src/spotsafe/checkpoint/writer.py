"""Writing a checkpoint: its data files first, then the manifest, last, which commits it.

Data files hold tensors one after another, each 64-byte aligned (spotsafe.checkpoint.layout),
in shards of about ``shard_bytes`` written ``io_threads`` at once. An incremental save writes
only the tensors whose bytes changed since the checkpoint it builds on: a tensor with the
same xxh3-128 and size is referred to in the earlier data file instead.

The commit writes the manifest once every data file is durable, and only while this writer
may still write: a stale attempt (its supervisor lost the job to a newer one) or a process
that lost the store's lease (spotsafe.checkpoint.claim) is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from spotsafe.checkpoint import claim, layout
from spotsafe.checkpoint._threads import map_threads
from spotsafe.checkpoint.manifest import MANIFEST_NAME, Manifest, TensorEntry
from spotsafe.jobrecord import check_fence
from spotsafe.storage import Store

# Unchanged tensors smaller than this are written again rather than referenced: rewriting a
# few KB (RNG states, counters) is cheaper than keeping an old data file alive for them.
MIN_SHARED_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """What writing the data files of one checkpoint (or one rank's part of it) did."""

    entries: list[TensorEntry]  #: one per tensor, in order: where its bytes are
    files: dict[str, int]  #: every data file the entries use, with its size
    bytes_written: int  #: new bytes; the rest is in files of earlier checkpoints


def write_data(
    store: Store,
    directory: str,
    parts: list[torch.Tensor],
    layouts: list[tuple[str, list[int]]],
    *,
    reuse: Manifest | None,
    shard_bytes: int,
    threads: int,
) -> Written:
    """Write the tensors (``parts``: flat uint8 bytes) that ``reuse`` does not already hold."""
    hashes = map_threads(layout.hash_span, parts, threads)
    previous: dict[tuple[str, int], TensorEntry] = {}
    if reuse is not None:
        previous = {(e.xxh3, e.nbytes): e for e in reuse.tensors if e.nbytes >= MIN_SHARED_BYTES}
    entries: list[TensorEntry | None] = [None] * len(parts)
    shards: list[list[int]] = []
    shard_size = shard_bytes  # force a new shard for the first new tensor
    for i, (part, digest) in enumerate(zip(parts, hashes, strict=True)):
        old = previous.get((digest, part.numel()))
        if old is not None:
            dtype, shape = layouts[i]
            entries[i] = dataclasses.replace(old, dtype=dtype, shape=shape)
            continue
        span = layout.span_of(part.numel())
        if shard_size + span > shard_bytes and (shard_size > 0 or not shards):
            shards.append([])
            shard_size = 0
        shards[-1].append(i)
        shard_size += span

    def write_shard(k: int) -> tuple[str, int]:
        path = f"{directory}/data-{k:03d}.bin"
        size = store.write(path, layout.chunks_with_padding([parts[i] for i in shards[k]]))
        return path, size

    files: dict[str, int] = {}
    written = 0
    for k, (path, size) in enumerate(map_threads(write_shard, range(len(shards)), threads)):
        files[path] = size
        written += size
        offset = 0
        for i in shards[k]:
            n = parts[i].numel()
            dtype, shape = layouts[i]
            entries[i] = TensorEntry(
                file=path,
                offset=offset,
                nbytes=n,
                span=layout.span_of(n),
                dtype=dtype,
                shape=shape,
                xxh3=hashes[i],
            )
            offset += layout.span_of(n)
    final: list[TensorEntry] = []
    for e in entries:
        assert e is not None
        if e.file not in files:
            assert reuse is not None  # only reused entries point outside this directory
            files[e.file] = reuse.files[e.file]
        final.append(e)
    return Written(entries=final, files=files, bytes_written=written)


def new_manifest(
    *,
    step: int,
    epoch: int,
    tree: Any,
    written: Written,
    meta: dict[str, Any],
    writer: str,
    generation: int | None,
    created_at: float,
) -> Manifest:
    """The manifest of a checkpoint whose data files ``written`` describes."""
    return Manifest(
        step=step,
        epoch=epoch,
        created_at=created_at,
        writer=writer,
        job_id=meta["job_id"],
        attempt=meta["attempt"],
        generation=generation,
        world_size=meta["world_size"],
        versions=meta["versions"],
        config_fingerprint=meta["config_fingerprint"],
        files=written.files,
        tensors=written.entries,
        tree=tree,
        # Loaders that cannot resume exactly (TrainState.metadata): `spotsafe ls` shows them.
        extra={"not_exact": dict(meta["not_exact"])} if meta.get("not_exact") else {},
    )


def commit(store: Store, directory: str, manifest: Manifest, *, generation: int | None) -> int:
    """Write the manifest, last: from now on the checkpoint exists. Returns its size in bytes.

    Raises:
        StorageError: this writer may no longer commit (stale attempt, lost lease), or the
            write failed; either way nothing was committed.
    """
    check_fence(store, generation)
    claim.check(store)
    return store.write_bytes(f"{directory}/{MANIFEST_NAME}", manifest.to_bytes())
