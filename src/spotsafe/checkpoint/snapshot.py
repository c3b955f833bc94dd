"""Snapshot: the first phase of a save, on the training thread.

:func:`capture` turns the state into an encoded tree (spotsafe.checkpoint.tree) and the list
of its tensors, in one walk. A synchronous save writes those tensors' bytes as they are
(:func:`cpu_bytes`); an asynchronous one first copies them into :class:`HostBuffers`, host
memory reused from one save to the next, so that training may change the tensors at once
while the copy persists in the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from spotsafe.checkpoint import layout, tree
from spotsafe.state import TrainState


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The state of one step, as a tree plus the tensors it refers to."""

    step: int
    epoch: int
    tree: Any  #: the encoded state (spotsafe.checkpoint.tree); ``{"$tensor": i}`` leaves
    tensors: list[torch.Tensor]  #: the live tensors, in leaf order (not copied)
    meta: dict[str, Any]  #: who wrote it, with what (TrainState.metadata plus the job id)

    @property
    def layouts(self) -> list[tuple[str, list[int]]]:
        """(dtype name, shape) of every tensor."""
        return layouts_of(self.tensors)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data."""
        return sum(t.numel() * t.element_size() for t in self.tensors)


def capture(state: TrainState, *, job_id: str | None) -> Snapshot:
    """The state as it is now; its tensors are the live ones, not copies."""
    tensors: list[torch.Tensor] = []
    encoded = tree.encode(state.state_dict(), tensors)
    meta = state.metadata()
    if job_id is not None:
        meta["job_id"] = job_id
    return Snapshot(step=state.step, epoch=state.epoch, tree=encoded, tensors=tensors, meta=meta)


def layouts_of(tensors: list[torch.Tensor]) -> list[tuple[str, list[int]]]:
    """(dtype name, shape) of every tensor, as the manifest records them."""
    return [(tree.dtype_name(t.dtype), list(t.shape)) for t in tensors]


def cpu_bytes(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's bytes as a flat uint8 CPU tensor: a view where it already is one."""
    out = []
    for t in tensors:
        src = t.detach()
        if src.device.type != "cpu":
            src = src.cpu()
        out.append(layout.byte_view(src.contiguous()))
    return out


class HostBuffers:
    """Host memory that holds a copy of the state's bytes, reused from one save to the next
    (pinned when the state is on a GPU, so the copies run asynchronously)."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(b.numel() for b in self._buffers)

    def copy(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Copy every tensor's bytes into the buffers; the copies, one per tensor."""
        use_pinned = torch.cuda.is_available() and any(t.is_cuda for t in tensors)
        parts: list[torch.Tensor] = []
        for i, t in enumerate(tensors):
            src = t.detach()
            nbytes = src.numel() * src.element_size()
            if i < len(self._buffers) and self._buffers[i].numel() == nbytes:
                buf = self._buffers[i]
            else:
                buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=use_pinned)
                if i < len(self._buffers):
                    self._buffers[i] = buf
                else:
                    self._buffers.append(buf)
            if nbytes:
                src = src.contiguous()
                buf.copy_(layout.byte_view(src), non_blocking=src.is_cuda)
            parts.append(buf)
        del self._buffers[len(tensors) :]
        if use_pinned:
            torch.cuda.synchronize()
        return parts

    def release(self) -> None:
        """Give the memory back (a state too large to copy is saved synchronously)."""
        self._buffers.clear()
