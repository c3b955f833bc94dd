"""The manifest: the one object whose presence makes a checkpoint exist.

Layout in a store::

    checkpoints/step-000000001200-3f9c2a1b/data-000.bin    tensor bytes, 64-byte aligned
    checkpoints/step-000000001200-3f9c2a1b/MANIFEST.json   written last: the commit
    checkpoints/step-000000001200-3f9c2a1b/QUARANTINE.json only if it failed verification

The manifest lists every data file it needs with its size (also files of earlier
checkpoints, for tensors that did not change) and every tensor with its place and an
xxh3-128 hash of its bytes, and it carries its own checksum so that a garbled manifest is
caught even when it still parses as JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from spotsafe.errors import CheckpointCorrupt

FORMAT = "spotsafe-checkpoint"
SCHEMA = 1
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_NAME = "MANIFEST.json"
QUARANTINE_NAME = "QUARANTINE.json"

_DIR_RE = re.compile(r"^step-(\d{12})-([0-9a-f]{8,32})$")


def checkpoint_dir(step: int, token: str) -> str:
    """The store path of the checkpoint at ``step`` written under ``token``."""
    return f"{CHECKPOINTS_DIR}/step-{step:012d}-{token}"


def parse_checkpoint_dir(path: str) -> int | None:
    """The step of a checkpoint directory path, or None if it is not one."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    m = _DIR_RE.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorEntry:
    """Where one tensor's bytes live and how to check them."""

    file: str  #: store path of the data file
    offset: int  #: byte offset of the tensor in the file (64-byte aligned)
    nbytes: int  #: bytes of tensor data
    span: int  #: bytes hashed: the data plus zero padding up to the next tensor
    dtype: str
    shape: list[int]
    xxh3: str  #: xxh3-128 hex digest of the span


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """Everything a reader needs to verify and load one checkpoint."""

    step: int
    epoch: int
    created_at: float  #: wall-clock seconds since the epoch
    writer: str  #: unique id of the Checkpointer that wrote it
    job_id: str | None
    attempt: int | None
    generation: int | None
    world_size: int
    versions: dict[str, str]
    config_fingerprint: str | None
    files: dict[str, int]  #: store path -> size in bytes, for every file the tensors use
    tensors: list[TensorEntry]
    tree: Any  #: the encoded state structure (see spotsafe.checkpoint.tree)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Bytes of every file this checkpoint needs."""
        return sum(self.files.values())

    def own_bytes(self, directory: str) -> int:
        """Bytes of the files written for this checkpoint (not shared with earlier ones)."""
        return sum(s for f, s in self.files.items() if f.startswith(directory + "/"))

    def content_digest(self) -> str:
        """A hash of the state itself (values, shapes, structure), not of when or where it
        was written: two runs that end bit for bit alike have the same digest."""
        content = {"tree": self.tree, "tensors": [(t.dtype, t.shape, t.xxh3) for t in self.tensors]}
        return xxhash.xxh3_128_hexdigest(_canonical(content))

    def to_bytes(self) -> bytes:
        body = asdict(self)
        canonical = _canonical(body)
        doc = {
            "format": FORMAT,
            "schema": SCHEMA,
            "xxh3": xxhash.xxh3_128_hexdigest(canonical),
            "manifest": body,
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse and check a manifest; :class:`CheckpointCorrupt` on any problem."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointCorrupt(f"{where}: manifest is not valid JSON ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointCorrupt(f"{where}: not a spotsafe manifest")
        if doc.get("schema") != SCHEMA:
            raise CheckpointCorrupt(
                f"{where}: manifest schema {doc.get('schema')!r}, this spotsafe reads {SCHEMA}"
                " (upgrade spotsafe to read newer checkpoints)"
            )
        body = doc.get("manifest")
        if not isinstance(body, dict) or xxhash.xxh3_128_hexdigest(_canonical(body)) != doc.get(
            "xxh3"
        ):
            raise CheckpointCorrupt(f"{where}: manifest checksum mismatch (garbled manifest)")
        try:
            tensors = [TensorEntry(**t) for t in body.pop("tensors")]
            return cls(tensors=tensors, **body)
        except (TypeError, KeyError) as e:
            raise CheckpointCorrupt(f"{where}: manifest is missing fields ({e})") from e


def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
