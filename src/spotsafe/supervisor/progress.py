"""What the store says about a job's progress, read without torch.

The supervisor starts fast and never imports torch (``spotsafe.checkpoint`` does), so it reads
checkpoint manifests as plain JSON: the same directory layout and the same cheap checks as
``Checkpointer.checkpoints()`` (a manifest, no quarantine mark, every listed file present with
its size, the same job). A test pins that both agree on the newest valid step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from spotsafe.errors import ObjectMissing
from spotsafe.events import read_events
from spotsafe.storage import Store

__all__ = ["FinalState", "clean_stop_recorded", "final_state", "newest_valid_step"]

# Mirrors spotsafe.checkpoint.manifest (importing it would import torch).
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_NAME = "MANIFEST.json"
QUARANTINE_NAME = "QUARANTINE.json"
_DIR_RE = re.compile(r"^step-(\d{12})-([0-9a-f]{8,32})$")


def _committed(store: Store, job_id: str | None) -> list[tuple[int, dict[str, Any]]]:
    """(step, manifest body) of every checkpoint that looks valid, newest first."""
    listed = store.list(CHECKPOINTS_DIR)
    sizes = {
        (p if p.startswith(CHECKPOINTS_DIR + "/") else f"{CHECKPOINTS_DIR}/{p}"): s
        for p, s in listed.items()
    }
    dirs: dict[str, set[str]] = {}
    for path in sizes:
        directory, _, name = path.rpartition("/")
        if _DIR_RE.match(directory.rsplit("/", 1)[-1]):
            dirs.setdefault(directory, set()).add(name)
    found: list[tuple[int, float, dict[str, Any]]] = []
    for directory, names in dirs.items():
        if MANIFEST_NAME not in names or QUARANTINE_NAME in names:
            continue
        try:
            doc = json.loads(store.read_bytes(f"{directory}/{MANIFEST_NAME}"))
            body = doc["manifest"]
            step = int(body["step"])
            files = dict(body["files"])
        except ObjectMissing:
            continue  # pruned while we looked
        except (ValueError, KeyError, TypeError):
            continue  # garbled: the Checkpointer will quarantine it on restore
        m = _DIR_RE.match(directory.rsplit("/", 1)[-1])
        assert m is not None
        if step != int(m.group(1)) or any(sizes.get(f) != s for f, s in files.items()):
            continue
        if job_id is not None and body.get("job_id") not in (None, job_id):
            continue
        found.append((step, float(body.get("created_at") or 0.0), body))
    found.sort(key=lambda x: (x[0], x[1]), reverse=True)
    return [(step, body) for step, _, body in found]


def newest_valid_step(store: Store, *, job_id: str | None = None) -> int | None:
    """The step of the newest checkpoint that looks valid, or None when there is none.

    Raises StorageError when the store cannot be listed: "unknown" is never "no progress".

    Example:
        >>> from spotsafe.storage import open_store
        >>> newest_valid_step(open_store("memory://spotsafe-progress-doc")) is None
        True
    """
    committed = _committed(store, job_id)
    return committed[0][0] if committed else None


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalState:
    """The newest checkpoint's content, minus when, where and by whom it was written."""

    step: int
    epoch: int
    tensors: tuple[tuple[str, tuple[int, ...], str], ...]
    """(dtype, shape, xxh3 of the bytes) of every tensor, in order."""
    tree: str
    """The encoded structure and non-tensor values, as canonical JSON."""


def final_state(store: Store, *, job_id: str | None = None) -> FinalState | None:
    """The content of the newest valid checkpoint, for bit-for-bit comparison of two runs."""
    committed = _committed(store, job_id)
    if not committed:
        return None
    step, body = committed[0]
    return FinalState(
        step=step,
        epoch=int(body.get("epoch", 0)),
        tensors=tuple(
            (str(t["dtype"]), tuple(int(d) for d in t["shape"]), str(t["xxh3"]))
            for t in body["tensors"]
        ),
        tree=json.dumps(body.get("tree"), sort_keys=True, separators=(",", ":")),
    )


def clean_stop_recorded(store: Store, attempt: int) -> bool:
    """Whether attempt `attempt` recorded a clean stop (state flushed on a stop request).

    The Guard writes a ``stop`` event with ``clean: true`` before it exits 75; launchers such
    as torchrun report that exit as 1, so this, not the code, says "preempted".
    """
    return any(
        e.kind == "stop" and e.get("clean") is True for e in read_events(store, attempt=attempt)
    )
