"""Sharded state (FSDP2 / DTensor) saved and restored through torch.distributed.checkpoint,
under spotsafe's manifest, checksums, fence and retention.

A :class:`~spotsafe.TrainState` whose model has DTensor parameters (``fully_shard``, tensor
parallelism) is *sharded*: no rank holds all of it. Its models and their optimizers go
through DCP (``get_model_state_dict`` / ``get_optimizer_state_dict`` to save, DCP's load and
``set_*_state_dict`` to restore), so each rank writes and reads only its own shards, with no
gather to rank 0. Everything else - the scheduler, the counters (replicated, written by
rank 0), each rank's RNGs and data-loader position (per rank, under per-rank keys) - is
written as for a DDP job (spotsafe.checkpoint.ranks). One checkpoint directory::

    checkpoints/step-000000001200-3f9c2a1b/__0_0.distcp       rank 0's shards (DCP's format)
    checkpoints/step-000000001200-3f9c2a1b/__1_0.distcp       rank 1's shards
    checkpoints/step-000000001200-3f9c2a1b/.metadata          DCP's metadata, once all are durable
    checkpoints/step-000000001200-3f9c2a1b/rank-00000/data-000.bin   rank 0's own state
    checkpoints/step-000000001200-3f9c2a1b/rank-00001/data-000.bin   rank 1's own state
    checkpoints/step-000000001200-3f9c2a1b/MANIFEST.json      last: the commit

The manifest lists every file, DCP's included, with its size and xxh3-128
(spotsafe.checkpoint.dcp_storage hashes them as they are written), so ``spotsafe verify``
checks every shard and a listing sees a missing one. Its state tree is
``{"ranks": [part_0, ...], "sharded": {...}}`` (read without torch by
spotsafe.checkpoint.shards.sharded_info, for ``spotsafe ls``). The directory is
also a plain DCP checkpoint: ``torch.distributed.checkpoint.load`` reads a local one.

Restore: each rank reads and checks the files its DCP load plan needs (its own shards, or
other ranks' when the world size changed) and ``.metadata``, before anything live is
touched; all ranks agree (one all-reduce) before any of them loads, so a bad shard on any
rank makes every rank fall back to the same older checkpoint, and the rank that found it
quarantines it.

How a restore reads, and why (measured with bench/sharded_bench.py, 4 ranks on 2 cores):
DCP's own load reads each item into new bytes, ``torch.load`` s them into a new tensor and
copies that into its target - three copies, into memory the allocator reuses. Reading each
file whole into new memory, hashing it, then copying from it cost twice DCP's time: fresh
pages fault in at ~1 ms a MB on the benchmark VM, about five times what hashing the same
bytes costs (xxh3: ~4 GB/s a core). So on a local volume each file is *mapped* from the
page cache, hashed whole against the manifest (one pass; ``io_threads`` files at once),
and, once every rank agreed, DCP's load copies each chunk from the checked map straight
into its target (StoreReader): one read, one hash, one copy, and no new memory - less
than DCP's own load. The copy reads
the very page-cache bytes that were hashed; they could differ only if something rewrote
a committed file in place, which spotsafe never does (pruning unlinks files, which leaves
a map intact). Checks are per file, as the manifest's digests are: a rank that reads part
of another rank's file (another world size) still hashes the whole file. Other stores
(S3) read each file into memory and hash it as it arrives (spotsafe.checkpoint.fetch).
Hashing while DCP loads, into the live tensors, would save the separate pass but touch
the live state before every rank knew the checkpoint was good: a bad shard would leave
the state half loaded when no older checkpoint is left to fall back to.

**Elastic resume** (another world size, e.g. 4 ranks to 2 after losing a node; refused
with ``Checkpointer(elastic=False)``): models, optimizers, the replicated objects (scheduler)
and the step are restored exactly, resharded by DCP. Per-rank state cannot be mapped onto
other ranks, so the policy is:

- RNGs are re-derived on each new rank from (the checkpoint, its step, the new rank):
  python's ``random``, numpy's and torch's global RNGs are seeded with :func:`elastic_seed`.
- A data loader whose sampler is a ``DistributedSampler`` keeps the epoch's global sample
  offset: the rest of the interrupted epoch (the same shuffled order) is re-sharded over
  the new ranks, so each of its samples is seen once (up to ``world_size - 1`` repeated to
  keep the ranks in step, as ``DistributedSampler`` pads); later epochs are the sampler's
  own. Other loaders start the epoch over.
- An ``elastic`` event records the resume, since it is not bitwise exact.

Saves: :func:`save` runs on the training thread; :func:`save_async` (``save_async``, a
Guard's periodic saves) copies each rank's shards to host memory there (DCP's stager,
whose buffers are reused from one save to the next), then hands DCP's save and spotsafe's
commit to the Checkpointer's save thread, one save in flight. Its collectives are where
DCP's thread executor puts them - all in the background, none on the training thread: a
gather of the ranks' plans and a scatter of the global one, a gather of the write results
to rank 0 and a broadcast of its outcome (DCP's), then a gather of each rank's part and a
broadcast of the commit's outcome (spotsafe's). They run over a gloo process group of the
Checkpointer's own (created, a collective, at its first background save), so they never
interleave with the training thread's collectives on the default group. The training
thread's only collectives in a save are the broadcast of the directory's name and one
all-reduce on whether every rank's shards fit ``host_buffer_bytes`` (else the save is
synchronous).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import secrets
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from spotsafe.checkpoint import distributed, elastic_data, fetch, ranks, reader, tree
from spotsafe.checkpoint._threads import map_threads
from spotsafe.checkpoint.discovery import check_sizes
from spotsafe.checkpoint.manifest import Manifest, TensorEntry, checkpoint_dir
from spotsafe.checkpoint.shards import FORMAT, RANKS_KEY, SHARDED_KEY
from spotsafe.checkpoint.shards import ShardedInfo as ShardedInfo  # re-exported
from spotsafe.checkpoint.shards import child as _child
from spotsafe.checkpoint.shards import sharded_info as sharded_info  # re-exported
from spotsafe.checkpoint.snapshot import Snapshot, cpu_bytes, layouts_of
from spotsafe.checkpoint.writer import Written
from spotsafe.errors import CheckpointCorrupt, CheckpointMismatch, ConfigError, StorageError

if TYPE_CHECKING:
    from spotsafe.checkpoint.checkpointer import Checkpointer, PendingSave, SaveInfo
    from spotsafe.state import TrainState

log = logging.getLogger("spotsafe")

#: Records an event (the Checkpointer's ``_emit``).
Emit = Callable[..., None]


# -- what is sharded ---------------------------------------------------------------------


def is_sharded(state: TrainState) -> bool:
    """Whether ``state`` holds a model with DTensor parameters (FSDP2, tensor parallelism)."""
    return any(_has_dtensor(o) for o in state.objects.values())


def _has_dtensor(obj: Any) -> bool:
    # No DTensor exists before torch.distributed.tensor is imported, and importing it costs
    # seconds (sympy): a plain model's first save must not pay that.
    dtensor_module = sys.modules.get("torch.distributed.tensor")
    if dtensor_module is None or not isinstance(obj, torch.nn.Module):
        return False
    return any(isinstance(p, dtensor_module.DTensor) for p in obj.parameters())


def dcp_objects(state: TrainState) -> dict[str, tuple[torch.nn.Module, Any]]:
    """The objects saved through DCP: name -> (model, None) for a sharded model, (model,
    optimizer) for an optimizer over a sharded model's parameters.

    Raises:
        ConfigError: an optimizer holds DTensor parameters of no model in the state.
    """
    from torch.distributed.tensor import DTensor

    models = {n: o for n, o in state.objects.items() if _has_dtensor(o)}
    out: dict[str, tuple[torch.nn.Module, Any]] = {n: (m, None) for n, m in models.items()}
    owner = {id(p): m for m in models.values() for p in m.parameters()}
    for name, obj in state.objects.items():
        if not isinstance(obj, torch.optim.Optimizer):
            continue
        params = [p for g in obj.param_groups for p in g["params"]]
        if not any(isinstance(p, DTensor) for p in params):
            continue
        model = next((owner[id(p)] for p in params if id(p) in owner), None)
        if model is None:
            raise ConfigError(
                f"TrainState({name}=...): the optimizer holds sharded (DTensor) parameters of"
                " no model in the state; pass the model too: TrainState(model=model, ...)"
            )
        out[name] = (model, obj)
    return out


def _dcp_state(objects: Mapping[str, tuple[torch.nn.Module, Any]]) -> dict[str, Any]:
    """The DCP state dict: each sharded object's state with DTensor (sharded) values."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    return {
        name: get_model_state_dict(model)
        if optim is None
        else get_optimizer_state_dict(model, optim)
        for name, (model, optim) in objects.items()
    }


# -- save --------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Shot:
    """What one rank writes of a sharded checkpoint, taken on the training thread."""

    step: int
    epoch: int
    directory: str
    dcp_state: dict[str, Any]  #: DCP's state dict: live (a synchronous save) or staged
    objects: dict[str, str]  #: name -> "model" | "optimizer", saved through DCP
    encoded: Any  #: this rank's spotsafe part (its own state; the replicated on rank 0)
    parts: list[torch.Tensor]  #: the part's tensors, as bytes
    layouts: list[tuple[str, list[int]]]
    meta: dict[str, Any]  #: the manifest's metadata (rank 0's is committed)


def _shot(ckpt: Checkpointer, state: TrainState, dcp_state: dict[str, Any], *, copy: bool) -> _Shot:
    rank, world = distributed.rank_and_world()
    objects = dcp_objects(state)
    part: dict[str, Any] = {
        "rank": state.rank_state_dict(),
        "shared": state.shared_state_dict(skip=objects) if rank == 0 else None,
    }
    tensors: list[torch.Tensor] = []
    encoded = tree.encode(part, tensors)
    parts = cpu_bytes(tensors)
    meta = state.metadata()
    meta["world_size"] = world
    if ckpt.job_id is not None:
        meta["job_id"] = ckpt.job_id
    return _Shot(
        step=state.step,
        epoch=state.epoch,
        directory=checkpoint_dir(state.step, distributed.broadcast(secrets.token_hex(4))),
        dcp_state=dcp_state,
        objects={n: "model" if o is None else "optimizer" for n, (_, o) in objects.items()},
        encoded=encoded,
        parts=[p.clone() for p in parts] if copy else parts,
        layouts=layouts_of(tensors),
        meta=meta,
    )


def save(ckpt: Checkpointer, state: TrainState, t0: float) -> SaveInfo:
    """Commit a sharded checkpoint of ``state``; every rank calls it at the same step, and
    every rank returns (or raises) once the checkpoint is committed (or is not).

    Raises:
        StorageError: some rank's write, DCP's, or the commit failed: nothing was committed.
    """
    shot = _shot(ckpt, state, _dcp_state(dcp_objects(state)), copy=False)
    return _write(ckpt, shot, t0, None, None)


@dataclass
class _Async:
    """A Checkpointer's means for background sharded saves: its own process group, so the
    save's collectives never interleave with the training thread's, and DCP's stager, whose
    host copies are reused from one save to the next."""

    group: Any
    stager: Any


_ASYNC: weakref.WeakKeyDictionary[Checkpointer, _Async] = weakref.WeakKeyDictionary()


def save_async(ckpt: Checkpointer, state: TrainState) -> PendingSave:
    """Snapshot ``state`` (each rank's shards copied to host memory by DCP's stager) on the
    training thread, write and commit it in the background; every rank calls it at the
    same step. Synchronous (on every rank) where any rank's shards exceed
    ``host_buffer_bytes``.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

    t0 = ckpt.clock()
    ckpt.wait()  # one save in flight; raises the previous one's error, if unreported
    ckpt._claim_store()
    dcp_state = _dcp_state(dcp_objects(state))
    limit = ckpt.host_buffer_bytes
    if not distributed.all_true(limit is None or local_bytes(dcp_state) <= limit):
        log.warning("a rank's shards exceed host_buffer_bytes=%s: saving synchronously", limit)
        return _done(save(ckpt, state, t0))
    means = _ASYNC.get(ckpt)
    if means is None:  # once per Checkpointer, on every rank at the same save: a collective
        means = _Async(
            group=dist.new_group(backend="gloo"),
            # Plain host memory, copied on this thread: the snapshot is whole on return.
            stager=DefaultStager(
                StagingOptions(
                    use_pinned_memory=False,
                    use_shared_memory=False,
                    use_async_staging=False,
                    use_non_blocking_copy=False,
                )
            ),
        )
        _ASYNC[ckpt] = means
    staged = means.stager.stage(dcp_state)  # copies: training may change the state now
    shot = _shot(ckpt, state, staged, copy=True)
    blocked_until = ckpt.clock()
    return ckpt._in_background(_write, shot.step, ckpt, shot, t0, blocked_until, means.group)


def local_bytes(dcp_state: Any) -> int:
    """Bytes of this rank's tensors (its shards) in ``dcp_state`` (a DCP state dict)."""
    from torch.distributed.tensor import DTensor

    total = 0
    todo = [dcp_state]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list | tuple):
            todo.extend(node)
        elif isinstance(node, DTensor):
            total += node.to_local().nbytes
        elif isinstance(node, torch.Tensor):
            total += node.nbytes
    return total


def _done(info: SaveInfo) -> PendingSave:
    import concurrent.futures as cf

    from spotsafe.checkpoint.checkpointer import PendingSave

    future: cf.Future[SaveInfo] = cf.Future()
    future.set_result(info)
    return PendingSave(future, info.step)


def _write(
    ckpt: Checkpointer, shot: _Shot, t0: float, blocked_until: float | None, group: Any
) -> SaveInfo:
    """Write ``shot`` (every rank, at once) and commit it. On the training thread
    (``group`` None: the default process group) or the save thread (``group``: the
    Checkpointer's own), where it runs the collectives of DCP's save - a gather of the
    ranks' plans and a scatter of the global one, a gather of their write results to rank 0
    and a broadcast of its outcome - then spotsafe's: a gather of each rank's part to rank
    0 and a broadcast of the commit's outcome."""
    from torch.distributed.checkpoint import state_dict_saver

    from spotsafe.checkpoint.dcp_storage import StoreWriter

    rank, world = distributed.rank_and_world()
    directory = shot.directory
    writer = StoreWriter(ckpt.store, directory, threads=ckpt.io_threads)
    with ckpt._writing(directory):
        ckpt._check_writable()
        try:
            state_dict_saver.save(shot.dcp_state, storage_writer=writer, process_group=group)
        except Exception as e:
            # DCP gathers every rank's failure and raises the same error on all ranks, so
            # they all stop here together; nothing is committed without a manifest.
            raise StorageError(
                f"sharded checkpoint at step {shot.step}: DCP save failed: {e}"
            ) from e
        mine: Any
        try:
            written = ckpt._write(f"{directory}/rank-{rank:05d}", shot.parts, shot.layouts)
            mine = (shot.encoded, dataclasses.asdict(written))
        except StorageError as e:
            mine = f"rank {rank}: {e}"
        gathered = _gather(mine, group)
        error = None
        total = 0
        if gathered is not None:  # rank 0 commits once every rank's part is durable
            error = "; ".join(g for g in gathered if isinstance(g, str)) or None
            if error is None:
                combined, own = ranks._combine([(enc, ranks._written(w)) for enc, w in gathered])
                info = {
                    "format": FORMAT,
                    "world_size": world,
                    "contiguous": True,  # StoreWriter saves every tensor row-major
                    "objects": shot.objects,
                }
                combined["$dict"].append([SHARDED_KEY, tree.encode(info, [])])
                written = _with_dcp_files(own, directory, writer.files)
                total = written.bytes_written
                snapshot = Snapshot(
                    step=shot.step, epoch=shot.epoch, tree=combined, tensors=[], meta=shot.meta
                )
                try:
                    ckpt._commit(directory, snapshot, written, t0, blocked_until=blocked_until)
                except StorageError as e:
                    error = f"rank 0: {e}"
        error = _broadcast(error, group)
    if error is not None:
        raise StorageError(f"sharded checkpoint at step {shot.step} failed: {error}")
    return ckpt._committed_by_all_ranks(
        shot.step, shot.epoch, directory, total, t0, blocked_until=blocked_until
    )


def _gather(value: Any, group: Any) -> list[Any] | None:
    """Every rank's ``value`` on rank 0 over ``group`` (None: the default group)."""
    if group is None:
        return distributed.gather(value)
    import torch.distributed as dist

    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, out, dst=0, group=group)
    return out


def _broadcast(value: Any, group: Any) -> Any:
    """Rank 0's ``value`` on every rank, over ``group`` (None: the default group)."""
    if group is None:
        return distributed.broadcast(value)
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def _with_dcp_files(own: Written, directory: str, files: Mapping[str, Any]) -> Written:
    """``own`` (every rank's spotsafe part) plus one entry per DCP file: the whole file as
    bytes, with the size and digest its writer computed."""
    entries = list(own.entries)
    sizes = dict(own.files)
    added = 0
    for name in sorted(files):
        d = files[name]
        path = f"{directory}/{name}"
        sizes[path] = d.size
        added += d.size
        entries.append(
            TensorEntry(
                file=path, offset=0, nbytes=d.size, span=d.size, dtype="uint8",
                shape=[d.size], xxh3=d.xxh3,
            )
        )  # fmt: skip
    return Written(entries=entries, files=sizes, bytes_written=own.bytes_written + added)


# -- restore -----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Loaded:
    """A sharded checkpoint read and checked on this rank, not yet loaded: :meth:`apply`
    loads it, once every rank's check passed."""

    where: str
    step: int
    saved_world: int
    seed: int  #: the base of elastic_seed: from the checkpoint's content digest
    metadata: Any  #: DCP's Metadata
    files: dict[str, memoryview]  #: DCP files this rank's load reads, checked
    objects: dict[str, tuple[torch.nn.Module, Any]]
    shared: dict[str, Any]  #: the replicated part (rank 0's): objects, step, epoch
    own: dict[str, Any]  #: this rank's own part; elastic: old rank 0's
    contiguous: bool = False  #: every tensor saved row-major (ShardedInfo.contiguous)

    @property
    def elastic(self) -> bool:
        """Whether the world size changed since the save."""
        return self.saved_world != distributed.rank_and_world()[1]

    def apply(self, state: TrainState, emit: Emit) -> None:
        """Load into ``state`` (a collective: every rank calls it)."""
        from torch.distributed.checkpoint import state_dict_loader
        from torch.distributed.checkpoint.state_dict import (
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        from spotsafe.checkpoint.dcp_storage import SafeLoadPlanner, StoreReader

        dcp_state = _dcp_state(self.objects)
        state_dict_loader.load(
            dcp_state,
            storage_reader=StoreReader(
                self.metadata, self.files, self.where, contiguous=self.contiguous
            ),
            planner=SafeLoadPlanner(),
        )
        for name, (model, optim) in self.objects.items():
            if optim is None:
                set_model_state_dict(model, dcp_state[name])
            else:
                set_optimizer_state_dict(model, optim, dcp_state[name])
        rank, world = distributed.rank_and_world()
        merged = ranks_merge(self.shared, self.own)
        if not self.elastic:
            state.load_state_dict(merged, skip=self.objects)
            return
        # Elastic: the replicated part exactly; per-rank state by the documented policy.
        per_rank = {n: o for n, o in state.objects.items() if n in state.per_rank}
        state.load_state_dict(merged, skip={**self.objects, **per_rank})
        _reseed(elastic_seed(self.seed, self.step, rank))
        resharded = [
            n
            for n, o in per_rank.items()
            if elastic_data.reshard(o, self.own["objects"].get(n), saved_world=self.saved_world)
        ]
        log.warning(
            "resumed %s on %d ranks, written by %d: model and optimizer resharded exactly;"
            " RNGs re-derived from (checkpoint, step, rank); data %s",
            self.where, world, self.saved_world,
            f"re-sharded ({', '.join(resharded)})" if resharded else "epoch restarts",
        )  # fmt: skip
        if rank == 0:
            emit(
                "elastic",
                step=self.step,
                from_world_size=self.saved_world,
                to_world_size=world,
                resharded_loaders=resharded,
            )


def ranks_merge(shared: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """One rank's full state (DCP objects aside) from the replicated and its own part."""
    from spotsafe.state import merge_parts

    return merge_parts(shared, own)


def elastic_seed(base: int, step: int, rank: int) -> int:
    """The seed of ``rank``'s RNGs after an elastic resume at ``step`` from the checkpoint
    whose seed base is ``base``: the same inputs always give the same seed.

    >>> elastic_seed(7, 100, 0) == elastic_seed(7, 100, 0) != elastic_seed(7, 100, 1)
    True
    """
    import xxhash

    return xxhash.xxh3_64_intdigest(f"{base}:{step}:{rank}".encode()) >> 1  # < 2**63


def _reseed(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read(
    store: Any,
    manifest: Manifest,
    directory: str,
    sizes: dict[str, int],
    state: TrainState,
    *,
    threads: int,
    elastic: bool,
) -> Loaded:
    """Read and check what this rank needs of the sharded checkpoint in ``directory``.

    Raises:
        CheckpointCorrupt: a file is missing or has the wrong size, a byte is wrong, or the
            state does not decode (the caller quarantines the checkpoint).
        CheckpointMismatch: the checkpoint does not fit this run: replicated state for a
            sharded run or the reverse, another world size with ``elastic=False``, objects
            the checkpoint lacks.
    """
    from spotsafe.checkpoint.dcp_storage import METADATA_NAME, SafeLoadPlanner, read_metadata

    where = f"{store.url}/{directory}"
    info = sharded_info(manifest)
    if info is None:
        raise CheckpointMismatch(
            f"{where} holds replicated (DDP or single-process) state and this run's model is"
            " sharded (DTensor): resume with the code that wrote it, or give this run its own"
            " store"
        )
    if not is_sharded(state):
        raise CheckpointMismatch(
            f"{where} holds sharded (FSDP2/DTensor) state and this run's model is not"
            " sharded: shard it the same way (fully_shard) before restoring"
        )
    rank, world = distributed.rank_and_world()
    if info.world_size != world and not elastic:
        raise CheckpointMismatch(
            f"{where} was written by {info.world_size} ranks, this run has {world}, and"
            " elastic resume is off (Checkpointer(elastic=False)); run on"
            f" {info.world_size} ranks or allow it"
        )
    check_sizes(manifest, sizes, where)
    parts = _child(manifest.tree, RANKS_KEY)
    items = parts.get("$list") if isinstance(parts, dict) else None
    if not isinstance(items, list) or len(items) != info.world_size:
        raise CheckpointCorrupt(f"{where}: the state is not one part per rank of {info.world_size}")
    shared_enc = _child(items[0], "shared")
    # Elastic: no part is this rank's own; rank 0's tells where its loaders stood.
    own_enc = _child(items[rank if info.world_size == world else 0], "rank")
    source = fetch.Source(store, directory)
    objects = dcp_objects(state)
    missing = sorted(set(objects) - set(info.objects))
    if missing:
        raise CheckpointMismatch(f"{where} holds no sharded state for {missing}")

    # 1. DCP's metadata, checked, parsed without running code; then the files this rank's
    # load plan reads (its own shards, or others' on another world size).
    top = len(directory) + 1
    index = {  # DCP's files lie at the top of the checkpoint; spotsafe's parts below it
        e.file[top:]: i
        for i, e in enumerate(manifest.tensors)
        if e.file.startswith(directory + "/") and "/" not in e.file[top:]
    }
    if METADATA_NAME not in index:
        raise CheckpointCorrupt(f"{where}: the manifest lists no {METADATA_NAME}")
    raw = _dcp_files(source, manifest, {METADATA_NAME: index[METADATA_NAME]}, threads)
    metadata = read_metadata(bytes(raw[METADATA_NAME]), where)
    planner = SafeLoadPlanner()
    try:
        planner.set_up_planner(_dcp_state(objects), metadata, is_coordinator=rank == 0)
        plan = planner.create_local_plan()
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointMismatch(f"{where} does not fit this run's sharded state: {e}") from e
    from spotsafe.checkpoint.dcp_storage import files_to_read

    needed = sorted(files_to_read(plan, metadata))
    unknown = [n for n in needed if n not in index]
    if unknown:
        raise CheckpointCorrupt(
            f"{where}: DCP's metadata names {unknown[0]}, which the manifest does not list"
        )
    # 2. The shards, checked; this rank's spotsafe parts (the replicated one, its own).
    files = _dcp_files(source, manifest, {n: index[n] for n in needed}, threads)
    wanted = set(_tensor_indexes(shared_enc)) | set(_tensor_indexes(own_enc))
    got = _fetch(source, manifest, sorted(wanted), threads)
    leaves: list[Any] = [got.get(i) for i in range(len(manifest.tensors))]
    try:
        shared = tree.decode(shared_enc, leaves)
        own = tree.decode(own_enc, leaves)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointCorrupt(f"{where}: the state does not decode ({e})") from e
    if not isinstance(shared, dict) or not isinstance(own, dict):
        raise CheckpointCorrupt(f"{where}: a rank's part is malformed")
    return Loaded(
        where=where,
        step=manifest.step,
        saved_world=info.world_size,
        seed=int(manifest.content_digest()[:16], 16),
        metadata=metadata,
        files=files,
        objects=objects,
        shared=shared,
        own=own,
        contiguous=info.contiguous,
    )


def _bytes(t: torch.Tensor) -> memoryview:
    from spotsafe.checkpoint import layout

    return layout.bytes_of(t)


def _tensor_indexes(encoded: Any) -> Iterator[int]:
    todo = [encoded]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            for key in ("$tensor", "$ndarray"):
                if isinstance(node.get(key), int):
                    yield node[key]
            todo.extend(v for k, v in node.items() if k not in ("$tensor", "$ndarray"))


def _dcp_files(
    source: fetch.Source, manifest: Manifest, names: Mapping[str, int], threads: int
) -> dict[str, memoryview]:
    """The DCP files ``names`` (name -> their manifest entry), each checked whole against
    its digest: mapped from the page cache on a local volume, read into new memory from any
    other store."""
    import mmap

    if not source.local or not hasattr(mmap, "PROT_READ"):  # PROT_READ: a POSIX mmap
        got = _fetch(source, manifest, sorted(names.values()), threads)
        return {n: _bytes(got[i]) for n, i in names.items()}
    from spotsafe.storage.local import LocalStore

    assert isinstance(source.store, LocalStore)  # Source.local says so
    root = source.store.root

    def one(name: str) -> memoryview:
        entry = manifest.tensors[names[name]]
        return _map_checked(str(root / entry.file), entry, source.directory)

    order = sorted(names)
    return dict(zip(order, map_threads(one, order, threads), strict=True))


def _map_checked(path: str, entry: TensorEntry, where: str) -> memoryview:
    """The local file ``path`` mapped read-only, once its bytes matched ``entry`` (the whole
    file: size and xxh3-128, as StoreWriter hashed it).

    The map shares the page cache: a verified file's bytes cost no new memory (pages that
    are faulted in fresh, on the benchmark VM ~1 ms a MB, were most of a restore's cost
    over DCP's own). What is checked is what the restore copies from; only a writer that
    rewrites a committed checkpoint's file in place could change it in between (or, by
    truncating it, make a read of the map a SIGBUS), and spotsafe never does: a committed
    file is immutable, and pruning unlinks it, which leaves a map intact.

    Raises:
        CheckpointCorrupt: the file is missing, of another size, or a byte is wrong.
        StorageError: the file could not be read.
    """
    import mmap
    import os

    from spotsafe.checkpoint import layout

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as e:
        raise CheckpointCorrupt(f"{where}: data file {entry.file} is missing") from e
    except OSError as e:
        raise StorageError(f"could not read {path}: {e.strerror or e}") from e
    try:
        size = os.fstat(fd).st_size
        if size != entry.nbytes:
            raise CheckpointCorrupt(
                f"{where}: {entry.file} has {size} bytes, the manifest says {entry.nbytes}"
            )
        if size == 0:
            view = memoryview(b"")
        else:
            mapped = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            if hasattr(mmap, "MADV_WILLNEED"):
                mapped.madvise(mmap.MADV_WILLNEED)  # read ahead of the hashing when cold
            view = memoryview(mapped)  # keeps the map alive while anything refers to it
    except OSError as e:
        raise StorageError(f"could not read {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    if layout.hash_bytes(view) != entry.xxh3:
        raise CheckpointCorrupt(f"{where}: checksum mismatch in {entry.file}")
    return view


def _fetch(
    source: fetch.Source, manifest: Manifest, only: list[int], threads: int
) -> dict[int, torch.Tensor]:
    """Read and check the tensors ``only`` of ``manifest`` into new memory."""
    import threading

    out: dict[int, torch.Tensor] = {}
    buffers: dict[fetch.Run, torch.Tensor] = {}
    lock = threading.Lock()

    def buffer_for(run: fetch.Run) -> memoryview:
        buf = torch.empty(run.size, dtype=torch.uint8)
        with lock:
            buffers[run] = buf
        return _bytes(buf)

    def verified(run: fetch.Run, i: int, at: int) -> None:
        entry = manifest.tensors[i]
        with lock:
            buf = buffers[run]
        out[i] = reader.tensor_from_bytes(buf[at : at + entry.nbytes], entry, source.directory)

    runs = fetch.plan_runs(manifest, only=only, whole_files=not source.local)
    fetch.fetch(source, manifest, runs, threads=threads, buffer_for=buffer_for, verified=verified)
    lost = [i for i in only if i not in out]
    if lost:
        raise CheckpointCorrupt(f"{source.directory}: tensor #{lost[0]} was not read")
    return out
