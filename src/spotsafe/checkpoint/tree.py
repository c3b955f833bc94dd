"""Encode a nested state (dicts, lists, numbers, tensors, numpy arrays) as JSON plus tensors.

This is what makes loading safe: a checkpoint is JSON and raw tensor bytes, never a pickle, so
reading one cannot run code. Every container is tagged so that it comes back as it went in
(int dict keys stay ints, tuples stay tuples, numpy arrays stay numpy arrays).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from spotsafe.checkpoint.manifest import DTYPE_SIZES
from spotsafe.errors import CheckpointCorrupt, CheckpointError

# The format's dtypes (spotsafe.checkpoint.manifest.DTYPE_SIZES) as torch dtypes.
_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_SIZES}


def dtype_name(dtype: torch.dtype) -> str:
    """The name under which ``dtype`` is stored."""
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise CheckpointError(f"cannot checkpoint tensors of dtype {dtype}")
    return name


def dtype_from_name(name: str) -> torch.dtype:
    """The dtype stored as ``name``."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise CheckpointCorrupt(f"unknown tensor dtype {name!r} in the manifest") from None


def encode(obj: Any, tensors: list[torch.Tensor], where: str = "state") -> Any:
    """``obj`` as JSON-able data; tensors (and numpy arrays) are appended to ``tensors``."""
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


def decode(data: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """The object that :func:`encode` turned into ``data``."""
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if not isinstance(data, dict) or len(data) not in (1, 2, 3):
        raise CheckpointCorrupt(f"malformed state tree node: {str(data)[:80]}")
    try:
        if "$tensor" in data:
            return tensors[data["$tensor"]]
        if "$ndarray" in data:
            raw = tensors[data["$ndarray"]].numpy()
            return raw.view(np.dtype(data["dtype"])).reshape(data["shape"]).copy()
        if "$npscalar" in data:
            return np.frombuffer(base64.b64decode(data["b64"]), dtype=np.dtype(data["$npscalar"]))[
                0
            ]
        if "$dict" in data:
            return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in data["$dict"]}
        if "$list" in data:
            return [decode(v, tensors) for v in data["$list"]]
        if "$tuple" in data:
            return tuple(decode(v, tensors) for v in data["$tuple"])
        if "$bytes" in data:
            return base64.b64decode(data["$bytes"])
        if "$dtype" in data:
            return dtype_from_name(data["$dtype"])
        if "$device" in data:
            return torch.device(data["$device"])
        if "$set" in data:
            return {_hashable(decode(v, tensors)) for v in data["$set"]}
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise CheckpointCorrupt(f"malformed state tree node {str(data)[:80]}: {e}") from e
    raise CheckpointCorrupt(f"unknown state tree node: {str(data)[:80]}")


def _hashable(key: Any) -> Any:
    if isinstance(key, (dict, list, set)):
        raise CheckpointCorrupt(f"unhashable dict key in the state tree: {str(key)[:80]}")
    return key
