"""Encode a nested state (dicts, lists, numbers, tensors, numpy arrays) as JSON plus tensors.

This is what makes loading safe: a checkpoint is JSON and raw tensor bytes, never a pickle, so
reading one cannot run code. Every container is tagged so that it comes back as it went in
(int dict keys stay ints, tuples stay tuples, numpy arrays stay numpy arrays).

Decoding walks the tree once whatever the leaves become: torch tensors for a restore
(:func:`decode`), or checked placeholders for ``spotsafe verify``, which must not import torch
(:func:`check_decodes`). Torch is imported only by the functions that handle tensors.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spotsafe.checkpoint.manifest import DTYPE_SIZES, Manifest
from spotsafe.errors import CheckpointCorrupt, CheckpointError

if TYPE_CHECKING:
    import torch

# What torch.device accepts: a type, optionally ":index" ("cpu", "cuda:1", "meta").
_DEVICE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,31}(?::\d{1,6})?$")


def dtype_name(dtype: torch.dtype) -> str:
    """The name under which ``dtype`` is stored."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_SIZES:
        raise CheckpointError(f"cannot checkpoint tensors of dtype {dtype}")
    return name


def dtype_from_name(name: str) -> torch.dtype:
    """The dtype stored as ``name``."""
    import torch

    if name not in DTYPE_SIZES:
        raise CheckpointCorrupt(f"unknown tensor dtype {name!r} in the manifest")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def encode(obj: Any, tensors: list[torch.Tensor], where: str = "state") -> Any:
    """``obj`` as JSON-able data; tensors (and numpy arrays) are appended to ``tensors``."""
    import torch

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        # JSON has no NaN/inf; Python's json writes them as bare words, which we accept.
        return obj
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.is_quantized:
            raise CheckpointError(f"{where}: cannot checkpoint a {obj.layout} tensor")
        dtype_name(obj.dtype)
        tensors.append(obj)
        return {"$tensor": len(tensors) - 1}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise CheckpointError(f"{where}: cannot checkpoint a numpy array of Python objects")
        array = np.ascontiguousarray(obj)
        tensors.append(torch.from_numpy(array.reshape(-1).view(np.uint8)))
        return {"$ndarray": len(tensors) - 1, "dtype": array.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {"$npscalar": obj.dtype.str, "b64": base64.b64encode(obj.tobytes()).decode()}
    if isinstance(obj, Mapping):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None), tuple)):
                raise CheckpointError(f"{where}: cannot checkpoint a dict key of type {type(k)}")
            items.append([encode(k, tensors, where), encode(v, tensors, f"{where}[{k!r}]")])
        return {"$dict": items}
    if isinstance(obj, tuple):
        return {"$tuple": [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return {"$list": [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, torch.dtype):
        return {"$dtype": dtype_name(obj)}
    if isinstance(obj, torch.device):
        return {"$device": str(obj)}
    if isinstance(obj, (set, frozenset)):
        return {"$set": [encode(v, tensors, where) for v in sorted(obj, key=repr)]}
    raise CheckpointError(
        f"{where}: cannot checkpoint an object of type {type(obj).__module__}.{type(obj).__name__};"
        " a checkpoint holds only tensors, numpy arrays, numbers, strings, bytes, lists, tuples"
        " and dicts, so that loading one never runs code. Return such values from state_dict()."
    )


class Leaves(Protocol):
    """What the tensor-backed and torch-specific nodes of a tree decode to."""

    def tensor(self, index: int) -> Any: ...

    def ndarray(self, index: int, dtype: np.dtype[Any], shape: list[int]) -> Any: ...

    def dtype(self, name: str) -> Any: ...

    def device(self, name: str) -> Any: ...


class _TorchLeaves:
    """The real values: tensors, numpy arrays over their bytes, torch dtypes and devices."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.tensors = tensors

    def tensor(self, index: int) -> Any:
        return self.tensors[index]

    def ndarray(self, index: int, dtype: np.dtype[Any], shape: list[int]) -> Any:
        return self.tensors[index].numpy().view(dtype).reshape(shape).copy()

    def dtype(self, name: str) -> Any:
        return dtype_from_name(name)

    def device(self, name: str) -> Any:
        import torch

        return torch.device(name)


class _CheckedLeaves:
    """Placeholders, after the checks the real values would fail (torch-free)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def tensor(self, index: int) -> Any:
        return index

    def ndarray(self, index: int, dtype: np.dtype[Any], shape: list[int]) -> Any:
        nbytes = self.manifest.tensors[index].nbytes
        if dtype.itemsize == 0 or math.prod(shape) * dtype.itemsize != nbytes:
            raise ValueError(f"{nbytes} bytes are not a {dtype.str} array of shape {shape}")
        return index

    def dtype(self, name: str) -> Any:
        if name not in DTYPE_SIZES:
            raise CheckpointCorrupt(f"unknown tensor dtype {name!r} in the manifest")
        return name

    def device(self, name: str) -> Any:
        return name


def decode(data: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """The object that :func:`encode` turned into ``data``."""
    return decode_with(data, _TorchLeaves(tensors))


def check_decodes(manifest: Manifest) -> None:
    """Whether ``manifest``'s state tree decodes (numpy arrays and scalars, bytes, dict keys,
    devices), without torch and without reading tensor data; raises CheckpointCorrupt."""
    decode_with(manifest.tree, _CheckedLeaves(manifest))


def decode_with(data: Any, leaves: Leaves) -> Any:
    """Decode ``data``, turning its leaves into what ``leaves`` makes of them."""
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if not isinstance(data, dict) or len(data) not in (1, 2, 3):
        raise CheckpointCorrupt(f"malformed state tree node: {str(data)[:80]}")
    try:
        if "$tensor" in data:
            return leaves.tensor(data["$tensor"])
        if "$ndarray" in data:
            return leaves.ndarray(data["$ndarray"], np.dtype(data["dtype"]), data["shape"])
        if "$npscalar" in data:
            raw = base64.b64decode(data["b64"], validate=True)
            return np.frombuffer(raw, dtype=np.dtype(data["$npscalar"]))[0]
        if "$dict" in data:
            return {
                _hashable(decode_with(k, leaves)): decode_with(v, leaves) for k, v in data["$dict"]
            }
        if "$list" in data:
            return [decode_with(v, leaves) for v in data["$list"]]
        if "$tuple" in data:
            return tuple(decode_with(v, leaves) for v in data["$tuple"])
        if "$bytes" in data:
            return base64.b64decode(data["$bytes"], validate=True)
        if "$dtype" in data:
            return leaves.dtype(data["$dtype"])
        if "$device" in data:
            name = data["$device"]
            if not isinstance(name, str) or not _DEVICE_RE.match(name):
                raise ValueError(f"{str(name)[:40]!r} is not a device")
            return leaves.device(name)
        if "$set" in data:
            return {_hashable(decode_with(v, leaves)) for v in data["$set"]}
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error, RuntimeError) as e:
        raise CheckpointCorrupt(f"malformed state tree node {str(data)[:80]}: {e}") from e
    raise CheckpointCorrupt(f"unknown state tree node: {str(data)[:80]}")


def _hashable(key: Any) -> Any:
    if isinstance(key, (dict, list, set)):
        raise CheckpointCorrupt(f"unhashable dict key in the state tree: {str(key)[:80]}")
    try:
        hash(key)
    except TypeError as e:
        raise CheckpointCorrupt(f"unhashable dict key in the state tree: {str(key)[:80]}") from e
    return key
