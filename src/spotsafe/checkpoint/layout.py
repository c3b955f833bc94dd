"""Tensor bytes on disk: 64-byte aligned spans, hashed with xxh3-128.

Torch-free at import: ``spotsafe verify`` checks spans as plain bytes. The helpers that take
tensors are only ever handed tensors, so torch is already loaded when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import xxhash

if TYPE_CHECKING:
    import torch

ALIGN = 64  # bytes: every tensor starts 64-byte aligned, so loaded views need no copy
_ZEROS = bytes(ALIGN)


def span_of(nbytes: int) -> int:
    """Bytes a tensor of ``nbytes`` occupies in a data file, padding included."""
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN


def byte_view(t: torch.Tensor) -> torch.Tensor:
    """The bytes of a contiguous CPU tensor as a flat uint8 tensor (no copy)."""
    import torch

    flat = t.reshape(-1)
    return flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat


def hash_span(data: torch.Tensor) -> str:
    """xxh3-128 of a uint8 tensor's bytes followed by its zero padding."""
    return hash_bytes(bytes_of(data) if data.numel() else memoryview(b""))


def hash_bytes(data: memoryview) -> str:
    """xxh3-128 of ``data`` followed by its zero padding up to the next ALIGN boundary: the
    digest a manifest's tensor entry holds."""
    h = xxhash.xxh3_128()
    n = data.nbytes
    if n:
        h.update(data)
    pad = span_of(n) - n
    if pad:
        h.update(_ZEROS[:pad])
    return h.hexdigest()


def chunks_with_padding(parts: list[torch.Tensor]) -> list[memoryview | bytes]:
    """The write chunks for tensors laid out one after another, each padded to ALIGN."""
    out: list[memoryview | bytes] = []
    for p in parts:
        n = p.numel()
        if n:
            out.append(bytes_of(p))
        pad = span_of(n) - n
        if pad:
            out.append(_ZEROS[:pad])
    return out


def bytes_of(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous uint8 CPU tensor, without a copy."""
    return memoryview(t.numpy())  # type: ignore[arg-type]
