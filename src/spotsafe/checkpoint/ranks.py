"""One checkpoint for all ranks of a torch.distributed job (layout in
spotsafe.checkpoint.distributed): every rank writes its part, rank 0 gathers what each wrote
and commits one manifest once all parts are durable, and on restore each rank takes its part.

Collectives run on the training thread only, so these saves are synchronous.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from spotsafe.checkpoint import distributed, tree
from spotsafe.checkpoint.manifest import Manifest, TensorEntry
from spotsafe.checkpoint.snapshot import cpu_bytes, layouts_of
from spotsafe.checkpoint.writer import Written
from spotsafe.errors import CheckpointCorrupt, CheckpointMismatch, StorageError
from spotsafe.state import TrainState, merge_parts

#: Writes one rank's tensors under a directory (the rank's own, inside the checkpoint's).
WritePart = Callable[[str, list[torch.Tensor], list[tuple[str, list[int]]]], Written]
#: Commits the combined tree and data files with the given metadata (rank 0 only).
CommitAll = Callable[[Any, Written, dict[str, Any]], None]


def save(
    state: TrainState,
    directory: str,
    *,
    job_id: str | None,
    write_part: WritePart,
    commit_all: CommitAll,
) -> int:
    """Write this rank's part of the checkpoint in ``directory``; on rank 0, commit all parts.

    Every rank calls it at the same step, and every rank returns (or raises) once the
    checkpoint is committed (or is not). Returns the bytes all ranks wrote (on rank 0; 0 on
    the others).

    Raises:
        StorageError: some rank's part, or the commit, failed: nothing was committed.
    """
    rank, world = distributed.rank_and_world()
    part: dict[str, Any] = {"rank": state.rank_state_dict(), "shared": None}
    if rank == 0:
        part["shared"] = state.shared_state_dict()
    tensors: list[torch.Tensor] = []
    encoded = tree.encode(part, tensors)
    try:
        written = write_part(
            f"{directory}/rank-{rank:05d}", cpu_bytes(tensors), layouts_of(tensors)
        )
        mine: Any = (encoded, dataclasses.asdict(written))
    except StorageError as e:
        mine = f"rank {rank}: {e}"
    gathered = distributed.gather(mine)
    error = None
    total = 0
    if gathered is not None:  # rank 0 commits once every rank's part is durable
        error = "; ".join(g for g in gathered if isinstance(g, str)) or None
        if error is None:
            combined, written = _combine([(enc, _written(w)) for enc, w in gathered])
            total = written.bytes_written
            meta = state.metadata()
            meta["world_size"] = world
            if job_id is not None:
                meta["job_id"] = job_id
            try:
                commit_all(combined, written, meta)
            except StorageError as e:
                error = f"rank 0: {e}"
    error = distributed.broadcast(error)
    if error is not None:
        raise StorageError(f"distributed checkpoint at step {state.step} failed: {error}")
    return total


def _written(fields: dict[str, Any]) -> Written:
    entries = [TensorEntry(**e) for e in fields["entries"]]
    return Written(entries=entries, files=fields["files"], bytes_written=fields["bytes_written"])


def _combine(parts: list[tuple[Any, Written]]) -> tuple[Any, Written]:
    """One tree ``{"ranks": [part_0, ...]}`` over every rank's tensors, in rank order."""
    trees: list[Any] = []
    entries: list[TensorEntry] = []
    files: dict[str, int] = {}
    for encoded, written in parts:
        trees.append(distributed.offset_tensors(encoded, len(entries)))
        entries.extend(written.entries)
        files.update(written.files)
    combined = {"$dict": [["ranks", {"$list": trees}]]}
    total = sum(w.bytes_written for _, w in parts)
    return combined, Written(entries=entries, files=files, bytes_written=total)


def this_ranks_part(decoded: Any, manifest: Manifest, where: str) -> Any:
    """The state this process loads: the whole tree, or its rank's part of a
    torch.distributed checkpoint.

    Raises:
        CheckpointMismatch: the checkpoint was written by another number of processes.
    """
    rank, world = distributed.rank_and_world()
    ranks = decoded.get("ranks") if isinstance(decoded, dict) and "objects" not in decoded else None
    if manifest.world_size != world or (ranks is None) != (world == 1):
        raise CheckpointMismatch(
            f"{where} was written by {manifest.world_size} process(es), this run has {world};"
            " resume with the same world size"
        )
    if ranks is None:
        return decoded
    if not isinstance(ranks, list) or len(ranks) != world:
        raise CheckpointCorrupt(f"{where}: the state is not one part per rank of {world}")
    try:
        return merge_parts(ranks[0]["shared"], ranks[rank]["rank"])
    except (KeyError, TypeError) as e:
        raise CheckpointCorrupt(f"{where}: rank {rank}'s part is malformed ({e})") from e
