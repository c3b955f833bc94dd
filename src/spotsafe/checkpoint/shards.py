"""What a sharded checkpoint's manifest says, read without torch: for ``spotsafe ls`` and
``spotsafe verify`` (spotsafe.checkpoint.sharded writes and restores these checkpoints).

A sharded checkpoint's state tree is ``{"ranks": [part_0, ...], "sharded": info}``, where
``info`` names the format (``"dcp"``), the world size that wrote it and the objects saved
through torch.distributed.checkpoint; the manifest lists each DCP file (``__R_N.distcp``,
written by rank R) with its size and xxh3-128, as it lists spotsafe's own files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spotsafe.checkpoint.manifest import Manifest
from spotsafe.errors import CheckpointCorrupt

FORMAT = "dcp"  #: the "format" of a sharded checkpoint's "sharded" tree entry
SHARDED_KEY = "sharded"
RANKS_KEY = "ranks"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardedInfo:
    """What a sharded checkpoint holds, from its manifest alone."""

    world_size: int  #: ranks that wrote it
    objects: dict[str, str]  #: name -> "model" | "optimizer", saved through DCP
    shards: dict[int, int]  #: rank -> DCP data files it wrote
    shard_bytes: dict[int, int]  #: rank -> bytes of those files
    contiguous: bool = False  #: every tensor was saved row-major with exactly its bytes

    @property
    def files(self) -> int:
        """DCP data files, all ranks together."""
        return sum(self.shards.values())

    @property
    def bytes(self) -> int:
        """Bytes of the DCP data files, all ranks together."""
        return sum(self.shard_bytes.values())

    def shards_per_rank(self) -> tuple[int, int]:
        """(fewest, most) DCP data files written by one rank, over every rank that wrote
        the checkpoint (a rank that wrote none counts as 0)."""
        counts = [self.shards.get(r, 0) for r in range(self.world_size)] or [0]
        return min(counts), max(counts)


def sharded_info(manifest: Manifest) -> ShardedInfo | None:
    """What the sharded checkpoint ``manifest`` commits; None for any other checkpoint.

    Raises:
        CheckpointCorrupt: the manifest's sharded info does not decode.

    Example:
        >>> import tempfile, torch, spotsafe
        >>> ckpt = spotsafe.Checkpointer(tempfile.mkdtemp(), allow_ephemeral=True)
        >>> info = ckpt.save(spotsafe.TrainState(model=torch.nn.Linear(2, 1)))
        >>> sharded_info(ckpt.checkpoints()[0].manifest) is None
        True
    """
    encoded = child(manifest.tree, SHARDED_KEY)
    if not isinstance(encoded, dict):
        return None
    from spotsafe.checkpoint import tree  # numpy: only for a sharded checkpoint's manifest

    try:
        decoded = tree.decode_with(encoded, _NoLeaves())
        if not isinstance(decoded, dict) or decoded.get("format") != FORMAT:
            return None
        world_size = int(decoded.get("world_size", manifest.world_size))
        objects = {str(k): str(v) for k, v in dict(decoded.get("objects", {})).items()}
        contiguous = decoded.get("contiguous") is True
    except (TypeError, ValueError) as e:
        raise CheckpointCorrupt(f"the sharded info of the manifest is malformed ({e})") from e
    shards: dict[int, int] = {}
    shard_bytes: dict[int, int] = {}
    for path, size in manifest.files.items():
        rank = shard_rank(path.rsplit("/", 1)[-1])
        if rank is not None:
            shards[rank] = shards.get(rank, 0) + 1
            shard_bytes[rank] = shard_bytes.get(rank, 0) + size
    return ShardedInfo(
        world_size=world_size,
        objects=objects,
        shards=shards,
        shard_bytes=shard_bytes,
        contiguous=contiguous,
    )


def shard_rank(name: str) -> int | None:
    """The rank that wrote the DCP data file ``name`` (``__R_N.distcp``); None for any other.

    >>> shard_rank("__3_0.distcp"), shard_rank(".metadata"), shard_rank("__x_0.distcp")
    (3, None, None)
    """
    if not (name.startswith("__") and name.endswith(".distcp")):
        return None
    rank = name[2:].split("_", 1)[0]
    return int(rank) if rank.isdigit() else None


def child(encoded: Any, key: Any) -> Any:
    """The encoded value under ``key`` of the encoded dict ``encoded``; None if absent."""
    if isinstance(encoded, dict) and isinstance(encoded.get("$dict"), list):
        for pair in encoded["$dict"]:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == key:
                return pair[1]
    return None


class _NoLeaves:
    """Decodes the JSON-only part of a tree (the sharded info holds no tensors)."""

    def tensor(self, index: int) -> Any:
        raise CheckpointCorrupt(f"the sharded info refers to tensor #{index}")

    def ndarray(self, index: int, dtype: Any, shape: list[int]) -> Any:
        raise CheckpointCorrupt(f"the sharded info refers to array #{index}")

    def dtype(self, name: str) -> Any:
        return name

    def device(self, name: str) -> Any:
        return name
