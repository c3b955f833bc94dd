"""torch.distributed.checkpoint's storage layer over a spotsafe Store, with checksums.

DCP (``torch.distributed.checkpoint``) plans a sharded save: each rank writes the shards it
owns, the coordinator (rank 0) gathers every rank's write results and writes ``.metadata``.
It checks nothing: a flipped byte loads silently. These two classes are DCP's
``StorageWriter`` and ``StorageReader`` for a spotsafe store (a local volume, S3, any fsspec
URL), in DCP's own file format, so the directory stays a plain DCP checkpoint
(``torch.distributed.checkpoint.load`` with a ``FileSystemReader`` reads a local one):

- :class:`StoreWriter` writes each rank's files through the Store (durable when written: a
  local store fsyncs the file and its directory; no host-wide ``os.sync()``), hashes every
  file as its bytes stream out (xxh3-128, the digest spotsafe's manifest holds for a tensor:
  spotsafe.checkpoint.layout.hash_bytes), and hands each file's size and digest to the
  coordinator inside DCP's own write results. The coordinator writes ``.metadata`` (hashed
  too) and keeps the digests of every rank's files: spotsafe's manifest, committed after
  it, lists them all (spotsafe.checkpoint.sharded). The manifest, not ``.metadata``, is the
  commit, and each save writes a new directory: nothing is ever overwritten.
- :class:`StoreReader` serves a load from file bytes that were already read and checked
  against the manifest; it never reads the store itself, so nothing unchecked reaches a
  tensor. Tensors are read with ``torch.load(weights_only=True)``, other values through
  :class:`SafeLoadPlanner` (the same), and ``.metadata`` by :func:`read_metadata`, an
  unpickler that builds only DCP's metadata classes: loading never runs code from a
  checkpoint.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import secrets
import struct
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import xxhash
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import (
    CURRENT_DCP_VERSION,
    DEFAULT_SUFFIX,
    _item_size,
    _split_by_size_and_type,
    _StorageInfo,
    _StoragePrefix,
)
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from spotsafe.checkpoint import layout
from spotsafe.errors import CheckpointCorrupt
from spotsafe.storage import Store

__all__ = [
    "METADATA_NAME",
    "FileDigest",
    "SafeLoadPlanner",
    "StoreReader",
    "StoreWriter",
    "read_metadata",
]

# A rank's shards go to one file per this many bytes (up to ``threads`` files written at
# once): small states stay one file per rank, as DCP's FileSystemWriter writes by default.
FILE_BYTES = 64 * 1024 * 1024
METADATA_NAME = ".metadata"  # DCP's name (filesystem._metadata_fn): FileSystemReader finds it


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One file a rank wrote: its name in the checkpoint directory, size and xxh3-128."""

    name: str
    size: int
    xxh3: str


@dataclass(frozen=True, slots=True)
class _Written:
    """A write result's storage data between a rank and the coordinator: DCP's own
    ``_StorageInfo`` (what ``.metadata`` keeps) and the digest of the file it is in."""

    info: _StorageInfo
    file: FileDigest


class StoreWriter(StorageWriter):
    """DCP's storage writer into ``directory`` of ``store``, every file hashed as written.

    Args:
        store: where the checkpoint goes.
        directory: the checkpoint's directory in the store (new for every save).
        threads: files each rank writes at once (its items are split into this many files).

    After ``torch.distributed.checkpoint.save`` returns, the coordinator's :attr:`files`
    holds every file of every rank (``.metadata`` included) with its size and digest.
    """

    def __init__(self, store: Store, directory: str, *, threads: int = 1) -> None:
        super().__init__()
        self.store = store
        self.directory = directory
        self.threads = max(1, threads)
        self.save_id = secrets.token_hex(8)
        self.rank = 0
        self.files: dict[str, FileDigest] = {}  #: name -> digest; on the coordinator only

    def reset(self, checkpoint_id: Any = None) -> None:
        self.save_id = secrets.token_hex(8)
        self.files = {}

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.rank = int(kwargs.get("rank") or 0)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # DCP's file names: rank r writes __r_0.distcp, __r_1.distcp, ...
        return [
            dataclasses.replace(p, storage_data=_StoragePrefix(f"__{i}_"))
            for i, p in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        prefix: _StoragePrefix = plan.storage_data
        # One file per FILE_BYTES of this rank's items, up to ``threads`` written at once.
        nbytes = sum(_item_size(i) for i in plan.items if i.type != WriteItemType.BYTE_IO)
        files = max(1, min(self.threads, nbytes // FILE_BYTES))
        buckets = [b for b in _split_by_size_and_type(files, plan.items) if b]
        names = [f"{prefix.prefix}{k}{DEFAULT_SUFFIX}" for k in range(len(buckets))]

        def write_one(k: int) -> list[WriteResult]:
            return self._write_file(names[k], buckets[k], planner)

        results: list[WriteResult] = []
        with ThreadPoolExecutor(min(self.threads, max(1, len(buckets)))) as pool:
            for part in pool.map(write_one, range(len(buckets))):
                results.extend(part)
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def _write_file(
        self, name: str, items: list[WriteItem], planner: SavePlanner
    ) -> list[WriteResult]:
        """Stream ``items`` into one file, as DCP's FileSystemWriter lays them out (bytes
        values first, then each tensor as ``torch.save`` writes it), hashing as it goes."""
        ordered = [i for i in items if i.type == WriteItemType.BYTE_IO]
        ordered += [i for i in items if i.type != WriteItemType.BYTE_IO]
        placed: list[tuple[WriteItem, int, int]] = []
        hasher = xxhash.xxh3_128()

        def chunks() -> Iterator[memoryview]:
            offset = 0
            for item in ordered:
                length = 0
                for chunk in _serialized(item, planner.resolve_data(item)):
                    hasher.update(chunk)
                    length += chunk.nbytes
                    yield chunk
                placed.append((item, offset, length))
                offset += length

        size = self.store.write(f"{self.directory}/{name}", chunks())
        digest = FileDigest(name, size, _finish(hasher, size))
        return [
            WriteResult(
                index=item.index,
                size_in_bytes=length,
                storage_data=_Written(_StorageInfo(name, offset, length), digest),
            )
            for item, offset, length in placed
        ]

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """On the coordinator, once every rank's files are durable: write ``.metadata``
        (what DCP's FileSystemWriter writes) and keep every file's digest."""
        storage: dict[Any, _StorageInfo] = {}
        files: dict[str, FileDigest] = {}
        for per_rank in results:
            for r in per_rank:
                written: _Written = r.storage_data
                storage[r.index] = written.info
                files[written.file.name] = written.file
        metadata.version = CURRENT_DCP_VERSION
        metadata.storage_data = storage
        metadata.storage_meta = self.storage_meta()
        data = pickle.dumps(metadata, protocol=pickle.HIGHEST_PROTOCOL)
        self.store.write_bytes(f"{self.directory}/{METADATA_NAME}", data)
        files[METADATA_NAME] = FileDigest(
            METADATA_NAME, len(data), layout.hash_bytes(memoryview(data))
        )
        self.files = files

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.directory, save_id=self.save_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return False  # never picked by DCP itself: spotsafe hands it in


def _serialize(item: WriteItem, data: Any) -> memoryview:
    """One item's bytes as DCP's FileSystemWriter writes them, in one buffer."""
    return memoryview(b"".join(_serialized(item, data)))


def _serialized(item: WriteItem, data: Any) -> list[memoryview]:
    """One item's bytes as DCP's FileSystemWriter writes them (``torch.save``), in pieces:
    a tensor's own bytes are a view of the tensor, not a copy (see :class:`_Pieces`)."""
    if item.type == WriteItemType.BYTE_IO:
        assert isinstance(data, io.BytesIO)
        return [data.getbuffer()]
    tensor = data.detach().cpu()
    if (
        not tensor.is_contiguous()
        or tensor.storage_offset() != 0
        or tensor.untyped_storage().size() != tensor.nbytes
    ):
        # torch.save writes a view's whole storage, and a permuted tensor with its strides:
        # row-major bytes of exactly the tensor let a restore copy them straight into place
        # (StoreReader, ``contiguous=True``).
        tensor = tensor.clone(memory_format=torch.contiguous_format)
    pieces = _Pieces(tensor)
    torch.save(tensor, pieces)  # type: ignore[arg-type]  # all torch.save uses: write()
    return pieces.done()


class _Pieces:
    """A file for ``torch.save`` of one tensor that keeps what it is given as pieces: the
    archive's records copied, and the tensor's data record - torch hands over the tensor's
    own memory - as a view of the tensor. Serialising into one new buffer instead cost a
    copy of every byte, into memory that was often fresh (pages faulted in at ~1 ms a MB on
    the benchmark VM): most of a save's cost over DCP's own."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.own: memoryview | None = None
        self.at = 0
        if tensor.nbytes:
            array = tensor.reshape(-1).view(torch.uint8).numpy()
            self.own = memoryview(array)  # type: ignore[arg-type]  # numpy arrays are buffers
            self.at = int(array.ctypes.data)
        self.pieces: list[memoryview] = []
        self.small = bytearray()

    def write(self, data: Any) -> int:
        import numpy as np

        view = memoryview(data).cast("B")
        own = self.own
        if (
            own is not None
            and view.nbytes == own.nbytes
            and int(np.frombuffer(view, np.uint8).ctypes.data) == self.at
        ):
            if self.small:
                self.pieces.append(memoryview(bytes(self.small)))
                self.small.clear()
            self.pieces.append(own)  # the very bytes torch writes: the tensor's memory
        else:
            self.small += view
        return view.nbytes

    def flush(self) -> None:
        return None

    def done(self) -> list[memoryview]:
        if self.small:
            self.pieces.append(memoryview(bytes(self.small)))
            self.small.clear()
        return self.pieces


def _finish(hasher: Any, size: int) -> str:
    """The digest of a streamed file: its bytes and the zero padding of
    spotsafe.checkpoint.layout.hash_bytes."""
    pad = layout.span_of(size) - size
    if pad:
        hasher.update(bytes(pad))
    return str(hasher.hexdigest())


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, but non-tensor values are read with
    ``torch.load(weights_only=True)``: loading never runs code from a checkpoint."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


class StoreReader(StorageReader):
    """DCP's storage reader over files already read and checked (name -> bytes).

    Args:
        metadata: the checkpoint's ``.metadata``, parsed by :func:`read_metadata`.
        files: the bytes of every file this rank's load plan reads.
        where: the checkpoint, for messages.
        contiguous: whether :class:`StoreWriter` wrote every tensor row-major with exactly
            its own bytes (the checkpoint says so): a read item that is a whole saved chunk
            is then copied from the checked bytes straight into its target, without
            ``torch.load`` building a tensor in new memory first (on a VM whose fresh pages
            cost ~1 ms a MB to fault in, that new memory was most of a restore's extra
            cost over DCP's own). Anything else goes through ``torch.load``.
    """

    def __init__(
        self,
        metadata: Metadata,
        files: Mapping[str, memoryview],
        where: str,
        *,
        contiguous: bool = False,
    ) -> None:
        super().__init__()
        self.metadata = metadata
        self.files = files
        self.where = where
        self.contiguous = contiguous
        self.storage_data: dict[Any, _StorageInfo] = metadata.storage_data or {}

    def reset(self, checkpoint_id: Any = None) -> None:
        return None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        return self.metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        from torch.distributed._shard._utils import narrow_tensor_by_index

        for req in plan.items:
            info = self.storage_data[req.storage_index]
            data = self.files.get(info.relative_path)
            if data is None:  # a bug, never a store: every file read was planned and checked
                raise CheckpointCorrupt(f"{self.where}: {info.relative_path} was not read")
            if info.transform_descriptors:
                raise CheckpointCorrupt(
                    f"{self.where}: {info.relative_path} uses DCP stream transforms"
                    f" {list(info.transform_descriptors)}, which spotsafe does not read"
                )
            blob = data[info.offset : info.offset + info.length]
            if req.type == LoadItemType.BYTE_IO:
                planner.load_bytes(req, io.BytesIO(blob))
                continue
            target = planner.resolve_tensor(req).detach()
            if self.contiguous and self._copy_whole_chunk(req, blob, target):
                planner.commit_tensor(req, target)
                continue
            tensor = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            tensor = narrow_tensor_by_index(tensor, req.storage_offsets, req.lengths)
            if target.size() != tensor.size():
                raise CheckpointCorrupt(
                    f"{self.where}: {req.storage_index.fqn} has shape {list(tensor.size())}"
                    f" in the checkpoint, {list(target.size())} here"
                )
            target.copy_(tensor)
            planner.commit_tensor(req, target)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _copy_whole_chunk(self, req: ReadItem, blob: memoryview, target: torch.Tensor) -> bool:
        """Copy the saved chunk in ``blob`` (one ``torch.save`` archive) into ``target`` if
        ``req`` reads all of it into a contiguous tensor of its dtype and size; whether it
        did. The bytes were checked against the manifest; the archive's layout is not
        trusted: a record that is compressed, of another size or byte order is left to
        ``torch.load``."""
        md = self.metadata.state_dict_metadata.get(req.storage_index.fqn)
        if not isinstance(md, TensorStorageMetadata) or target.dtype != md.properties.dtype:
            return False
        offsets = list(req.storage_index.offset or ())
        sizes = next((list(c.sizes) for c in md.chunks if list(c.offsets) == offsets), None)
        if (
            sizes is None
            or list(req.lengths) != sizes
            or any(req.storage_offsets)
            or list(target.size()) != sizes
            or not target.is_contiguous()
        ):
            return False
        start = _record_start(blob, target.nbytes)
        if start is None:
            return False
        if target.nbytes:
            import numpy as np

            # numpy reads a read-only buffer (a map of the page cache) without a copy or
            # torch.frombuffer's warning about writability.
            raw = np.frombuffer(blob, dtype=np.uint8, count=target.nbytes, offset=start)
            np.copyto(target.reshape(-1).view(torch.uint8).numpy(), raw)
        return True

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return False


class _View(io.RawIOBase):
    """A read-only, seekable file over a memoryview, without copying it (for zipfile)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self.view = view
        self.at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.at, io.SEEK_END: len(self.view)}[whence]
        self.at = max(0, base + offset)
        return self.at

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n = max(0, min(len(out), len(self.view) - self.at))
        out[:n] = self.view[self.at : self.at + n]
        self.at += n
        return n


def _record_start(blob: memoryview, nbytes: int) -> int | None:
    """Where the tensor bytes of the one-tensor ``torch.save`` archive ``blob`` begin, if
    they are its one stored (uncompressed) data record of ``nbytes`` bytes, little-endian
    like this machine; None otherwise."""
    import sys

    if sys.byteorder != "little":
        return None
    try:
        found = _scan_archive(blob)
    except (struct.error, ValueError, IndexError):
        return None
    if found is None:  # a layout the scan does not know (an archive comment, ZIP64 sizes)
        return _record_start_zipfile(blob, nbytes)
    records, others = found
    data, order = records.get("data"), records.get("byteorder")
    if others or data is None or order is None:
        return None
    if order[1] != 6 or bytes(blob[order[0] : order[0] + 6]) != b"little":
        return None
    start, size = data
    return start if size == nbytes and start + nbytes <= len(blob) else None


# The end of the central directory: its entries, size and offset, the archive comment's length.
_EOCD = struct.Struct("<4s6xHIIH")
_CENTRAL = struct.Struct("<4s6xH8xIIHHH8xI")  # method, sizes, name/extra/comment, header at
_LOCAL = struct.Struct("<4s22xHH")  # a local header: name and extra lengths


def _scan_archive(blob: memoryview) -> tuple[dict[str, tuple[int, int]], bool] | None:
    """The stored ``data/0`` and ``byteorder`` records of a ``torch.save`` archive (name ->
    (where its bytes begin, size)) and whether it holds other data records (or a compressed
    one), read from its central directory in one pass: ``zipfile`` builds an object per
    record and cost a restore ~1 ms a tensor. None for a layout this does not read."""
    end = len(blob) - _EOCD.size
    if end < 0:
        return None
    sig, entries, _size, at, comment = _EOCD.unpack_from(blob, end)
    if sig != b"PK\x05\x06" or comment or at == 0xFFFFFFFF or entries == 0xFFFF:
        return None
    records: dict[str, tuple[int, int]] = {}
    others = False
    for _ in range(entries):
        sig, method, csize, usize, name_len, extra_len, comment_len, header = _CENTRAL.unpack_from(
            blob, at
        )
        if sig != b"PK\x01\x02" or 0xFFFFFFFF in (csize, usize, header):
            return None
        start = at + _CENTRAL.size
        name = bytes(blob[start : start + name_len])
        at = start + name_len + extra_len + comment_len
        key = "data" if name.endswith(b"/data/0") else "byteorder"
        if key == "byteorder" and not name.endswith(b"/byteorder"):
            others = others or b"/data/" in name
            continue
        lsig, lname, lextra = _LOCAL.unpack_from(blob, header)
        if lsig != b"PK\x03\x04" or method != 0 or csize != usize or key in records:
            others = True
            continue
        records[key] = (header + _LOCAL.size + lname + lextra, usize)
    return records, others


def _record_start_zipfile(blob: memoryview, nbytes: int) -> int | None:
    """:func:`_record_start` through ``zipfile`` (any archive layout it reads)."""
    import zipfile

    try:
        with zipfile.ZipFile(_View(blob)) as archive:
            infos = archive.infolist()
            data = [i for i in infos if i.filename.endswith("/data/0")]
            order = [i for i in infos if i.filename.endswith("/byteorder")]
            others = [i for i in infos if "/data/" in i.filename and i not in data]
            if len(data) != 1 or others or len(order) != 1 or archive.read(order[0]) != b"little":
                return None
            (info,) = data
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != nbytes:
                return None
            header = bytes(blob[info.header_offset : info.header_offset + 30])
            if len(header) != 30 or header[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", header[26:30])
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError):
        return None
    start = info.header_offset + 30 + name_len + extra_len
    return start if start + nbytes <= len(blob) else None


def files_to_read(plan: LoadPlan, metadata: Metadata) -> set[str]:
    """The files a load plan reads (relative to the checkpoint directory)."""
    storage = metadata.storage_data or {}
    return {storage[item.storage_index].relative_path for item in plan.items}


# Exactly the classes DCP's metadata is made of (what pickle.dumps(Metadata) refers to).
_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout by name: torch.layout pickles so
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_GLOBALS or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of DCP's metadata")


def read_metadata(data: bytes, where: str) -> Metadata:
    """DCP's ``.metadata`` from its bytes, unpickled with only DCP's metadata classes (and
    torch dtypes and sizes) allowed: a crafted file cannot run code.

    Example:
        >>> import pickle
        >>> read_metadata(pickle.dumps(print), "ckpt")
        Traceback (most recent call last):
        ...
        spotsafe.errors.CheckpointCorrupt: ckpt: .metadata is not DCP metadata (...)

    Raises:
        CheckpointCorrupt: the bytes are not DCP metadata.
    """
    try:
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # any failure to parse untrusted bytes is a bad file
        raise CheckpointCorrupt(f"{where}: {METADATA_NAME} is not DCP metadata ({e})") from e
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise CheckpointCorrupt(f"{where}: {METADATA_NAME} is not DCP metadata")
    return metadata
