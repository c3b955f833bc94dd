"""What a checkpoint holds, in any of the formats users have, read without running its code.

A resume needs more than weights: the optimizer's moments, the LR schedule, the AMP scaler,
the step and epoch, the data loader's position and every RNG. :func:`inspect_checkpoint`
finds the newest checkpoint at a path and says which of these `Part`\\ s it holds, and where:

- spotsafe's own (a store, or one ``checkpoints/step-*`` directory): from its manifest;
- a `torch.save` file (``.pt``, ``.pth``, ``.bin``) and a Lightning ``.ckpt``: the pickle's
  opcodes (`spotsafe.doctor.pickled`), never unpickled;
- a Hugging Face ``checkpoint-N`` folder (or an output directory holding them): its files
  and ``trainer_state.json``;
- a DCP directory: its ``.metadata`` (the same pickle reading: torch's own
  ``FileSystemReader.read_metadata`` unpickles it, so it is not used).

Parts are recognised by structure (an optimizer state dict has ``state`` and
``param_groups``; a scheduler's has ``base_lrs``; a GradScaler's ``scale`` and
``_growth_tracker``) and by the names of keys (``optimizer``, ``lr_scheduler``, ``rng``,
``sampler``, ``global_step``...). Torch-free.

Example:
    >>> classify({"model": {}, "optimizer": {"state": {}, "param_groups": []}, "step": 3})
    {<Part.OPTIMIZER: 'optimizer'>: 'optimizer', <Part.STEP: 'step/epoch'>: 'step'}
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotsafe.doctor.pickled import Call, is_tensor, read_torch_file, structure
from spotsafe.errors import CheckpointError

__all__ = ["Contents", "Part", "classify", "find_checkpoints", "inspect_checkpoint"]


class Part(enum.Enum):
    """A part of the training state that a resume needs."""

    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    SCALER = "scaler"
    STEP = "step/epoch"
    DATA = "data position"
    RNG = "RNG states"


# Key names that say what a value is (lower-cased, matched as whole names or by pattern).
_NAMES: dict[Part, re.Pattern[str]] = {
    Part.OPTIMIZER: re.compile(r"^(optim|opt|optimizers?|optimizer_states?(_dict)?)$|optimizer"),
    Part.SCHEDULER: re.compile(r"^(sched|lr_schedulers?|schedulers?)$|scheduler"),
    Part.SCALER: re.compile(r"^(amp|grad_scaler|scaler)$|scaler|amp_scaling"),
    Part.STEP: re.compile(
        r"^(step|steps|global_step|iteration|iterations|iter|it|epoch|epochs|current_step|"
        r"num_steps|train_step|epoch_idx|batch_step)$"
    ),
    Part.DATA: re.compile(
        r"loader|sampler|^loops$|consumed|batch_idx|batches_seen|data_pos|data_state|"
        r"samples_seen|data_iter|dataset_state|^position$"
    ),
    Part.RNG: re.compile(r"rng|random|^seed_state$|generator|^np_state$|^numpy_state$"),
}
# Whether a dict's keys alone say what it is.
_SHAPES: list[tuple[Part, frozenset[str]]] = [
    (Part.OPTIMIZER, frozenset({"state", "param_groups"})),
    (Part.SCHEDULER, frozenset({"base_lrs", "last_epoch"})),
    (Part.SCALER, frozenset({"scale", "_growth_tracker"})),
    (Part.DATA, frozenset({"in_epoch", "consumed"})),  # spotsafe's ResumableLoader
    (Part.DATA, frozenset({"_sampler_iter_yielded", "_num_yielded"})),  # StatefulDataLoader
]
_MAX_NODES = 2_000_000


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (dict, list, tuple)) and not value)


def _items(node: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, Call):
        pairs = list(node.items.items())
        if isinstance(node.state, dict):
            pairs += list(node.state.items())
        return pairs
    return None


def _children(node: Any) -> list[Any]:
    if isinstance(node, (list, tuple)):
        return list(node)
    if isinstance(node, Call) and not is_tensor(node):
        return [*node.elements, node.args, node.state]
    return []


def _weights(items: list[tuple[Any, Any]]) -> bool:
    """Whether a dict is a model's state dict: every value a tensor (torch's ``_metadata``
    aside)."""
    values = [v for k, v in items if k != "_metadata"]
    return bool(values) and all(is_tensor(v) or v == "$tensor" for v in values)


def classify(tree: Any) -> dict[Part, str]:
    """Which parts ``tree`` (plain containers, `Call` stand-ins) holds, each with the key
    path where it was found first (breadth first, so the shallowest wins)."""
    found: dict[Part, str] = {}
    queue: list[tuple[Any, str]] = [(tree, "")]
    seen = 0
    while queue and seen < _MAX_NODES:
        node, path = queue.pop(0)
        seen += 1
        items = _items(node)
        if items is None:
            queue.extend((c, path) for c in _children(node))
            continue
        if _weights(items):
            continue  # parameter names say nothing about the training state
        keys = {k for k, _ in items if isinstance(k, str)}
        for part, shape in _SHAPES:
            if shape <= keys:
                found.setdefault(part, path or "(top level)")
        for k, v in items:
            where = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and not _empty(v):
                name = k.lower()
                for part, pattern in _NAMES.items():
                    if part is Part.STEP and not isinstance(v, int):
                        continue  # a step is a number, not a module named "step_fn"
                    if pattern.search(name):
                        found.setdefault(part, where)
            queue.append((v, where))
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Contents:
    """What one checkpoint holds."""

    format: str
    """``spotsafe``, ``torch.save``, ``lightning``, ``huggingface`` or ``dcp``."""
    path: str
    """The checkpoint's file or directory (or its store URL and directory)."""
    parts: Mapping[Part, str]
    """Each part found, with where (a key path or a file name)."""
    step: int | None = None
    """The training step it was written at, when the checkpoint says."""
    not_exact: Mapping[str, str] = field(default_factory=dict)
    """spotsafe only: loaders that cannot resume exactly, with the reason."""
    mtime_ns: int | None = None
    """A single file only: its modification time, taken from the open file that was read
    (a job may replace the path a moment later)."""

    @property
    def missing(self) -> list[Part]:
        """The parts it lacks, in `Part` order."""
        return [p for p in Part if p not in self.parts]


_STEP_KEYS = ("global_step", "step", "iteration", "iter", "train_step", "steps", "epoch")


def _step_of(tree: Any) -> int | None:
    items = _items(tree)
    if not items:
        return None
    values = dict((k, v) for k, v in items if isinstance(k, str))
    for key in _STEP_KEYS:
        v = values.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _torch_file(path: Path) -> Contents:
    with path.open("rb") as f:
        tree = read_torch_file(f)
        mtime_ns = os.fstat(f.fileno()).st_mtime_ns  # of the very file read
    lightning = isinstance(tree, dict) and "pytorch-lightning_version" in tree
    return Contents(
        format="lightning" if lightning else "torch.save",
        path=str(path),
        parts=classify(tree),
        step=_step_of(tree),
        mtime_ns=mtime_ns,
    )


_HF_STEP = re.compile(r"^checkpoint-(\d+)$")
_HF_FILES: list[tuple[Part, re.Pattern[str]]] = [
    (Part.OPTIMIZER, re.compile(r"^optimizer(\.pt|\.bin|_\d+\.pt)?$|^global_step\d+$")),
    (Part.SCHEDULER, re.compile(r"^scheduler\.pt$")),
    (Part.SCALER, re.compile(r"^scaler\.pt$")),
    (Part.RNG, re.compile(r"^rng_state(_\d+)?\.pth$")),
]


def _huggingface(path: Path) -> Contents:
    names = sorted(p.name for p in path.iterdir())
    parts: dict[Part, str] = {}
    for part, pattern in _HF_FILES:
        for name in names:
            if pattern.search(name):
                parts.setdefault(part, name)
                break
    step = None
    m = _HF_STEP.match(path.name)
    if m:
        step = int(m.group(1))
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        state = None
    if isinstance(state, dict) and isinstance(state.get("global_step"), int):
        step = state["global_step"]
        parts[Part.STEP] = "trainer_state.json global_step"
        # The Trainer skips the batches already seen on resume (unless ignore_data_skip).
        parts[Part.DATA] = "trainer_state.json global_step (the Trainer skips seen batches)"
    return Contents(format="huggingface", path=str(path), parts=parts, step=step)


def _nest(keys: list[str]) -> dict[str, Any]:
    """Flattened DCP keys (``optim.state.w.exp_avg``) as a nested dict with tensor leaves."""
    root: dict[str, Any] = {}
    for key in keys:
        node = root
        *head, last = key.split(".")
        for part in head:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node.setdefault(last, "$tensor")
    return root


def _dcp(path: Path) -> Contents:
    with (path / ".metadata").open("rb") as f:
        meta = structure(f)
    state = meta.state if isinstance(meta, Call) else meta
    entries = state.get("state_dict_metadata") if isinstance(state, dict) else None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{path}/.metadata: no state_dict_metadata: not a DCP checkpoint")
    tree = _nest([str(k) for k in entries])
    return Contents(format="dcp", path=str(path), parts=classify(tree), step=None)


def _spotsafe(store: str, directory: str | None) -> Contents | None:
    from spotsafe.checkpoint.discovery import Status
    from spotsafe.checkpoint.view import StoreView

    view = StoreView(store)
    listing = [c for c in view.checkpoints() if c.status is Status.VALID and c.manifest]
    if directory is not None:
        listing = [c for c in listing if c.path.rstrip("/").endswith(directory)]
    if not listing:
        return None
    newest = listing[0]
    manifest = newest.manifest
    assert manifest is not None
    not_exact = manifest.extra.get("not_exact")
    return Contents(
        format="spotsafe",
        path=f"{view.store.url}/{newest.path}",
        parts=classify(_decode_tree(manifest.tree)),
        step=manifest.step,
        not_exact={str(k): str(v) for k, v in not_exact.items()}
        if isinstance(not_exact, dict)
        else {},
    )


def _decode_tree(node: Any) -> Any:
    """spotsafe's encoded state tree as plain containers, tensors as ``"$tensor"``."""
    if not isinstance(node, dict):
        return node
    if "$dict" in node and isinstance(node["$dict"], list):
        out: dict[Any, Any] = {}
        for pair in node["$dict"]:
            if isinstance(pair, list) and len(pair) == 2:
                key = _decode_tree(pair[0])
                out[key if isinstance(key, (str, int, float, bool)) else repr(key)] = _decode_tree(
                    pair[1]
                )
        return out
    for tag in ("$list", "$tuple", "$set"):
        if tag in node and isinstance(node[tag], list):
            return [_decode_tree(v) for v in node[tag]]
    if "$tensor" in node or "$ndarray" in node:
        return "$tensor"
    return {k: _decode_tree(v) for k, v in node.items()}


_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".pkl")
_CHECKPOINTISH = re.compile(r"ckpt|checkpoint|step|epoch|state|model|weights", re.I)


def _is_spotsafe_dir(path: Path) -> bool:
    return (path / "MANIFEST.json").is_file() and path.parent.name == "checkpoints"


def find_checkpoints(path: str | os.PathLike[str]) -> list[Path]:
    """Checkpoints (files or folders) directly in or at ``path``, newest first.

    A spotsafe store, a DCP directory and a Hugging Face ``checkpoint-N`` folder count as one
    checkpoint each; a directory of ``checkpoint-N`` folders or of ``.pt`` files yields
    them all (by step for ``checkpoint-N``, else by modification time).

    Example:
        >>> import tempfile
        >>> find_checkpoints(tempfile.mkdtemp())
        []
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        return []
    if (p / "checkpoints").is_dir() or _is_spotsafe_dir(p) or (p / ".metadata").is_file():
        return [p]
    if (p / "trainer_state.json").is_file() or _HF_STEP.match(p.name):
        return [p]
    try:
        entries = list(p.iterdir())
    except OSError:
        return []
    hf = [e for e in entries if e.is_dir() and _HF_STEP.match(e.name)]
    if hf:
        return sorted(hf, key=lambda e: int(e.name.split("-")[1]), reverse=True)
    found = [
        e
        for e in entries
        if (e.is_file() and e.suffix in _TORCH_SUFFIXES)
        or (e.is_dir() and ((e / ".metadata").is_file() or (e / "checkpoints").is_dir()))
    ]

    def mtime(e: Path) -> float:
        try:
            return e.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=lambda e: (mtime(e), e.name), reverse=True)


def inspect_checkpoint(path: str | os.PathLike[str]) -> Contents | None:
    """What the newest checkpoint at ``path`` holds; None when there is none.

    ``path`` is a checkpoint file, a checkpoint folder, or a directory that holds them (a
    spotsafe store, a Trainer's ``output_dir``, a folder of ``.pt`` files). A spotsafe store
    may also be a URL (``s3://bucket/run``): it is only read.

    Raises:
        CheckpointError: the newest checkpoint is in no format doctor can read.
        StorageError: a spotsafe store could not be read.

    Example:
        >>> import tempfile
        >>> inspect_checkpoint(tempfile.mkdtemp()) is None
        True
    """
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        return _spotsafe(text, None)
    for candidate in find_checkpoints(text):
        if candidate.is_file():
            return _torch_file(candidate)
        if _is_spotsafe_dir(candidate):
            return _spotsafe(str(candidate.parent.parent), candidate.name)
        if (candidate / "checkpoints").is_dir():
            found = _spotsafe(str(candidate), None)
            if found is not None:
                return found
            continue
        if (candidate / ".metadata").is_file():
            return _dcp(candidate)
        return _huggingface(candidate)
    return None
