"""Reading a checkpoint back: every byte checked (spotsafe.checkpoint.fetch) before it is used.

Where the state to load into already holds a tensor of the same dtype and shape (a model's
parameters; an optimizer's moments once it has stepped), the checkpoint's bytes are read
straight into it, in two passes over the same files:

1. check: every tensor's bytes are hashed (the live tensors' ones streamed through a small
   buffer, the others read into new memory and kept) - nothing live is touched yet, so a
   corrupt checkpoint, and the fallback past it, leave the state as it was;
2. fill: only once all of the checkpoint checked out, the live tensors' bytes are read
   again (from the page cache, by now), scattered into the tensors themselves, and hashed
   again. A file pruned between the passes fails the second one, and restore treats the
   checkpoint as pruned: the next one it loads overwrites the tensors again.

That saves what dominates a restore on a CPU host: faulting in fresh memory for those
tensors and copying them over in ``load_state_dict``, which then finds each tensor already
in place (``copy_`` from a tensor onto itself returns at once). Even cold, filling an
optimizer's tensors in place beat reading them into new memory for it to adopt (GPT-2 +
Adam, 1.5 GB: 1.29 s against 1.55 s; the page faults did not hide behind the disk reads).

Both passes read on one set of ``io_threads`` threads (``fetch.Workers``), and the first
takes turns between runs read into new memory (page faults: a core's work) and runs only
checked (a cold one waits on the disk), so that neither the disk nor the cores idle while
the other works.

Other tensors come back as views into the buffers their runs were read into (64-byte
aligned: no copy); small ones get storage of their own, because some consumers read a
tensor's storage from its start (``Generator.set_state`` fails on a view into a larger
buffer). Stores other than local files are read once, into new memory.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import torch

from spotsafe.checkpoint import distributed, fetch, layout, ranks, tree
from spotsafe.checkpoint.discovery import check_sizes
from spotsafe.checkpoint.manifest import Manifest, TensorEntry
from spotsafe.errors import CheckpointCorrupt, CheckpointError
from spotsafe.state import TrainState
from spotsafe.storage import Store

# Loaded tensors below this get storage of their own (a copy) rather than a view into the
# buffer of their run. Below torch's parallel grain (32768 elements), so the copy runs on
# one thread: on a busy 2-core host, a multi-threaded copy_ of 2 MB took 9 ms, not 0.4 ms.
OWN_STORAGE_BYTES = 64 * 1024


def load_state(
    store: Store,
    manifest: Manifest,
    directory: str,
    sizes: dict[str, int],
    *,
    threads: int,
    into: TrainState | None = None,
) -> Any:
    """The state this process loads from the checkpoint in ``directory``: all of it, or its
    rank's part under torch.distributed. With ``into``, its tensors that fit are filled in
    place once the whole checkpoint checked out (the returned state refers to them).

    Raises:
        CheckpointCorrupt: a file is missing or has the wrong size, a byte is wrong, or the
            state does not decode.
        CheckpointMismatch: another world size wrote it.
    """
    where = f"{store.url}/{directory}"
    check_sizes(manifest, sizes, where)
    source = fetch.Source(store, directory)
    live = in_place(into, manifest) if into is not None and source.local else {}
    tensors = load_tensors(source, manifest, threads=threads, live=live)
    return ranks.this_ranks_part(tree.decode(manifest.tree, tensors), manifest, where)


def load_tensors(
    source: fetch.Source,
    manifest: Manifest,
    *,
    threads: int,
    live: Mapping[int, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Read and check every tensor of ``manifest``; tensor ``i`` in ``live`` is filled in
    place, after every tensor checked out."""
    live = live or {}
    out: list[torch.Tensor | None] = [None] * len(manifest.tensors)
    buffers: dict[fetch.Run, torch.Tensor] = {}
    lock = threading.Lock()

    def buffer_for(run: fetch.Run) -> memoryview | None:
        if run.members[0] in live:
            return None  # check only: filled in place below
        # Ordinary memory: huge-page mappings faulted in 4x faster alone, but made whole
        # restores slower and erratic here (the kernel compacts memory to find huge pages).
        buf = torch.empty(run.size, dtype=torch.uint8)
        with lock:
            buffers[run] = buf
        return layout.bytes_of(buf)

    def verified(run: fetch.Run, index: int, at: int) -> None:
        if index in live:
            return
        entry = manifest.tensors[index]
        with lock:
            buf = buffers[run]
        out[index] = tensor_from_bytes(buf[at : at + entry.nbytes], entry, source.directory)

    rest = [i for i in range(len(manifest.tensors)) if i not in live]
    kept = fetch.plan_runs(manifest, only=rest, whole_files=not source.local)
    runs = alternate(kept, fetch.plan_runs(manifest, only=live.keys()))
    with fetch.Workers(threads) as workers:
        fetch.fetch(source, manifest, runs, threads=threads, buffer_for=buffer_for,
                    verified=verified, workers=workers)  # fmt: skip
        if live:
            fill = fetch.plan_runs(manifest, only=live.keys(), max_members=fetch.MAX_SCATTER)

            def into_live(run: fetch.Run) -> dict[int, memoryview]:
                return {i: layout.bytes_of(layout.byte_view(live[i])) for i in run.members}

            def filled(run: fetch.Run, index: int, at: int) -> None:
                out[index] = live[index]

            fetch.fetch(source, manifest, fill, threads=threads, buffer_for=into_live,
                        verified=filled, workers=workers)  # fmt: skip
    missing = [i for i, t in enumerate(out) if t is None]
    if missing:
        raise CheckpointCorrupt(f"{source.directory}: tensor #{missing[0]} was not read")
    return [t for t in out if t is not None]


def alternate(kept: list[fetch.Run], checked: list[fetch.Run]) -> list[fetch.Run]:
    """The runs of the first pass, taking turns: one read into new memory (``kept``: its
    page faults keep a core busy), one only checked (``checked``: it waits on the disk when
    the files are not cached), each list in its own file order. In file order alone, a
    state whose model precedes its optimizer in the files (the usual case) would read
    every checked run first, with the cores idle, then fault in every kept one, with the
    disk idle.
    """
    out: list[fetch.Run] = []
    for k in range(max(len(kept), len(checked))):
        out += kept[k : k + 1] + checked[k : k + 1]
    return out


def in_place(state: TrainState, manifest: Manifest) -> dict[int, torch.Tensor]:
    """The live tensors of ``state``'s models and optimizers that the checkpoint's tensors
    can be read straight into: CPU, contiguous, writable, not empty, the same dtype and
    shape, and none sharing memory with another. Tensor index -> live tensor.

    Only ``torch.nn.Module`` and ``torch.optim.Optimizer`` objects are asked: their
    ``load_state_dict`` copies (or adopts) every tensor it is given, so filling their own
    tensors first changes nothing but the work. Not under torch.distributed.
    """
    if manifest.world_size != 1 or distributed.active():
        return {}
    objects = _child(manifest.tree, "objects")
    found: dict[int, torch.Tensor] = {}
    for name, obj in state.objects.items():
        encoded = _child(objects, name)
        if encoded is not None and isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)):
            _match(encoded, obj.state_dict(), manifest, found)
    # Tensors that share memory (tied weights) are filled once; the others are copied after.
    by_address = sorted(found.items(), key=lambda item: item[1].data_ptr())
    reach = 0
    for index, t in by_address:
        if t.data_ptr() < reach:
            del found[index]
        reach = max(reach, t.data_ptr() + manifest.tensors[index].nbytes)
    return found


def _child(encoded: Any, key: str) -> Any:
    """The encoded value under ``key`` of an encoded dict, or None."""
    if isinstance(encoded, dict) and isinstance(encoded.get("$dict"), list):
        for pair in encoded["$dict"]:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == key:
                return pair[1]
    return None


def _match(
    encoded: Any,
    value: Any,
    manifest: Manifest,
    found: dict[int, torch.Tensor],
) -> None:
    """Pair the tensors of ``encoded`` with those of the live ``value`` at the same place."""
    if not isinstance(encoded, dict):
        return
    if "$tensor" in encoded and isinstance(value, torch.Tensor):
        index = encoded["$tensor"]
        if _fits(value, manifest.tensors[index]):
            found[index] = value
    elif isinstance(encoded.get("$dict"), list) and isinstance(value, Mapping):
        for pair in encoded["$dict"]:
            key = pair[0]
            if type(key) in (str, int) and key in value:
                _match(pair[1], value[key], manifest, found)
    else:
        items = encoded.get("$list", encoded.get("$tuple"))
        if (
            isinstance(items, list)
            and isinstance(value, (list, tuple))
            and len(value) == len(items)
        ):
            for item, v in zip(items, value, strict=True):
                _match(item, v, manifest, found)


def _fits(t: torch.Tensor, entry: TensorEntry) -> bool:
    if (
        type(t) is not torch.Tensor
        or entry.nbytes == 0
        or t.device.type != "cpu"
        or t.layout != torch.strided
        or not t.is_contiguous()
        or t.is_conj()
        or t.is_neg()
        or t.requires_grad
        or list(t.shape) != entry.shape
    ):
        return False
    try:
        if tree.dtype_name(t.dtype) != entry.dtype or layout.bytes_of(layout.byte_view(t)).readonly:
            return False
    except (CheckpointError, RuntimeError, TypeError, ValueError):
        return False  # a dtype the format lacks, or memory numpy cannot see: copy it instead
    return True


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
