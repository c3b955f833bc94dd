"""A sharded restore copies a saved chunk's bytes straight into its target only when the
``torch.save`` archive holds exactly those bytes, row-major: anything else goes through
``torch.load`` (spotsafe.checkpoint.dcp_storage)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import WriteItem, WriteItemType

from spotsafe.checkpoint.dcp_storage import (
    _record_start,
    _record_start_zipfile,
    _scan_archive,
    _serialize,
    _serialized,
)


def saved(t: torch.Tensor) -> memoryview:
    item = WriteItem(index=MetadataIndex("w"), type=WriteItemType.TENSOR)
    return _serialize(item, t)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(12.0).reshape(3, 4),
        torch.arange(12.0).reshape(3, 4).t(),  # permuted: saved row-major all the same
        torch.arange(20, dtype=torch.int64)[5:11],  # a view into a larger storage
        torch.zeros(0),
    ],
)
def test_the_record_holds_the_tensor_row_major(tensor: torch.Tensor) -> None:
    blob = saved(tensor)
    start = _record_start(blob, tensor.nbytes)
    assert start is not None
    # One pass over the central directory finds what zipfile finds, without its fallback.
    assert _scan_archive(blob) is not None and start == _record_start_zipfile(blob, tensor.nbytes)
    raw = bytes(blob[start : start + tensor.nbytes])
    assert raw == tensor.contiguous().numpy().tobytes()
    assert torch.equal(torch.load(io.BytesIO(bytes(blob)), weights_only=True), tensor)


def test_anything_else_is_left_to_torch_load() -> None:
    t = torch.arange(8.0)
    blob = saved(t)
    assert _record_start(blob, t.nbytes + 4) is None  # another size than the target's
    assert _record_start(memoryview(b"not a zip archive"), 4) is None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/data/0", t.numpy().tobytes())
    assert _record_start(out.getbuffer(), t.nbytes) is None  # compressed
    commented = bytearray(blob) + b"note"  # an archive comment: zipfile reads that layout
    commented[-len(b"note") - 2 : -len(b"note")] = len(b"note").to_bytes(2, "little")
    assert _scan_archive(memoryview(commented)) is None
    assert _record_start(memoryview(bytes(commented)), t.nbytes) == _record_start(blob, t.nbytes)


def test_a_saved_tensor_is_written_from_its_own_memory() -> None:
    t = torch.arange(4096.0)
    item = WriteItem(index=MetadataIndex("w"), type=WriteItemType.TENSOR)
    pieces = _serialized(item, t)
    # The archive's records around it are copies; its data record is the tensor itself.
    (own,) = [p for p in pieces if np.frombuffer(p, np.uint8).ctypes.data == t.data_ptr()]
    assert own.nbytes == t.nbytes
    assert torch.equal(torch.load(io.BytesIO(b"".join(pieces)), weights_only=True), t)
