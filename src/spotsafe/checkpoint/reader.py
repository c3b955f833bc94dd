"""Reading a checkpoint back: every byte checked (spotsafe.checkpoint.fetch) before it is used.

Tensors come back as views into the buffers their runs were read into (64-byte aligned: no
copy); small ones get storage of their own, because some consumers read a tensor's storage
from its start (``Generator.set_state`` fails on a view into a larger buffer).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from spotsafe.checkpoint import fetch, layout, ranks, tree
from spotsafe.checkpoint.discovery import check_sizes
from spotsafe.checkpoint.manifest import Manifest, TensorEntry
from spotsafe.errors import CheckpointCorrupt
from spotsafe.storage import Store

OWN_STORAGE_BYTES = 1024 * 1024  # loaded tensors below this are copied out of the run buffer


def load_state(
    store: Store, manifest: Manifest, directory: str, sizes: dict[str, int], *, threads: int
) -> Any:
    """The state this process loads from the checkpoint in ``directory``: all of it, or its
    rank's part under torch.distributed.

    Raises:
        CheckpointCorrupt: a file is missing or has the wrong size, a byte is wrong, or the
            state does not decode.
        CheckpointMismatch: another world size wrote it.
    """
    where = f"{store.url}/{directory}"
    check_sizes(manifest, sizes, where)
    tensors = load_tensors(store, manifest, directory, threads=threads)
    return ranks.this_ranks_part(tree.decode(manifest.tree, tensors), manifest, where)


def load_tensors(
    store: Store, manifest: Manifest, directory: str, *, threads: int
) -> list[torch.Tensor]:
    """Read and check every tensor of ``manifest``."""
    out: list[torch.Tensor | None] = [None] * len(manifest.tensors)
    buffers: dict[fetch.Run, torch.Tensor] = {}
    lock = threading.Lock()

    def buffer_for(run: fetch.Run) -> memoryview:
        buf = torch.empty(run.size, dtype=torch.uint8)
        with lock:
            buffers[run] = buf
        return layout.bytes_of(buf)

    def verified(run: fetch.Run, index: int, at: int) -> None:
        entry = manifest.tensors[index]
        with lock:
            buf = buffers[run]
        out[index] = tensor_from_bytes(buf[at : at + entry.nbytes], entry, directory)

    fetch.fetch(
        store, manifest, directory, threads=threads, buffer_for=buffer_for, verified=verified
    )
    return [t for t in out if t is not None]


def tensor_from_bytes(data: torch.Tensor, entry: TensorEntry, where: str) -> torch.Tensor:
    """The tensor ``entry`` describes, over ``data`` (its bytes)."""
    dtype = tree.dtype_from_name(entry.dtype)
    shape = entry.shape
    try:
        if data.numel() == 0:
            return torch.empty(shape, dtype=dtype)
        t = data.view(dtype).reshape(shape)
        # Small tensors (RNG and generator states, counters) get storage of their own; large
        # ones stay views, which load_state_dict copies or the optimizer adopts.
        return t.clone() if data.numel() < OWN_STORAGE_BYTES else t
    except RuntimeError as e:
        raise CheckpointCorrupt(f"{where}: tensor bytes do not fit {entry.dtype}{shape}") from e
