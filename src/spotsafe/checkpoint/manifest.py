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
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import xxhash

from spotsafe._version import __version__
from spotsafe.errors import CheckpointCorrupt, CheckpointTooNew

FORMAT = "spotsafe-checkpoint"
SCHEMA = 1
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_NAME = "MANIFEST.json"
QUARANTINE_NAME = "QUARANTINE.json"

_DIR_RE = re.compile(r"^step-(\d{12})-([0-9a-f]{8,32})$")

# Bounds that no real checkpoint comes near and that keep a hostile manifest cheap to reject.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024  # a 10,000-tensor model's manifest is ~3 MB
MAX_JSON_DEPTH = 512  # the state tree takes ~2 levels per container; Python recurses to ~1000
MAX_FILE_BYTES = 1 << 48  # 256 TiB per data file
MAX_STEP = 10**12 - 1  # the directory name holds 12 digits
MAX_WORLD_SIZE = 1 << 20
MAX_WALL_S = 1e11  # about the year 5100
MAX_DIMS = 64
MAX_TEXT = 4096

#: The tensor dtypes of the format, with their item size in bytes (torch-free: discovery
#: checks manifests without importing torch; spotsafe.checkpoint.tree maps them to torch).
DTYPE_SIZES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex64": 8, "complex128": 16,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "uint16": 2, "uint32": 4, "uint64": 8, "float8_e4m3fn": 1, "float8_e5m2": 1,
}  # fmt: skip

# The state tree's node kinds: tag -> (the other keys of the node, the type of its value).
_TREE_NODES: dict[str, tuple[tuple[str, ...], type | tuple[type, ...]]] = {
    "$tensor": ((), int),
    "$ndarray": (("dtype", "shape"), int),
    "$npscalar": (("b64",), str),
    "$dict": ((), list),
    "$list": ((), list),
    "$tuple": ((), list),
    "$bytes": ((), str),
    "$dtype": ((), str),
    "$device": ((), str),
    "$set": ((), list),
}
# A data file lives in a checkpoint directory (its own or an earlier one's), one or two
# levels down (rank-00001/data-000.bin); no '..', no absolute path, no backslash. The one
# name with a leading dot is DCP's own ".metadata" (spotsafe.checkpoint.dcp_storage).
_FILE_RE = re.compile(
    r"^checkpoints/step-\d{12}-[0-9a-f]{8,32}"
    r"(?:/(?:\.metadata|[A-Za-z0-9_][A-Za-z0-9._-]{0,127})){1,2}$"
)
# A numpy dtype as ``ndarray.dtype.str`` writes it; never an object dtype ('O').
_NUMPY_DTYPE_RE = re.compile(r"^[<>|=][biufcSUVmM?]\d{0,4}(?:\[[A-Za-z0-9]{1,8}\])?$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{32}$")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENING = frozenset(b"[{")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


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
        """Parse and check a manifest before anything trusts it.

        Raises:
            CheckpointCorrupt: the manifest is too large, too deeply nested, garbled, or a
                field has the wrong type or an impossible value.
            CheckpointTooNew: a newer spotsafe wrote it (schema, dtype or tree node this
                version does not know); it is not corrupt, and never quarantined.
        """
        return parse_manifest(data, where)


def parse_manifest(data: bytes, where: str) -> Manifest:
    """See :meth:`Manifest.from_bytes`: a size-bounded, depth-bounded, fully typed parse."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise CheckpointCorrupt(
            f"{where}: manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES} bytes"
        )
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise CheckpointCorrupt(
            f"{where}: manifest nests {depth} levels deep, at most {MAX_JSON_DEPTH}"
        )
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointCorrupt(f"{where}: manifest is not valid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointCorrupt(f"{where}: not a spotsafe manifest")
    schema = doc.get("schema")
    body = doc.get("manifest")
    if type(schema) is not int or schema < 1:
        raise CheckpointCorrupt(f"{where}: manifest schema {schema!r} is not a version number")
    if schema > SCHEMA:
        raise CheckpointTooNew(
            f"{where} was {_writer(body)} (manifest schema {schema}); this spotsafe"
            f" {__version__} reads schema {SCHEMA}: upgrade spotsafe to load it"
        )
    if not isinstance(body, dict) or xxhash.xxh3_128_hexdigest(_canonical(body)) != doc.get("xxh3"):
        raise CheckpointCorrupt(f"{where}: manifest checksum mismatch (garbled manifest)")
    return _Checker(where, body).manifest()


def json_depth(data: bytes) -> int:
    """How deeply ``data`` nests JSON arrays and objects (brackets inside strings do not count).

    Bounding it before parsing keeps a hostile manifest from exhausting the recursion of
    the JSON parser, the checksum's re-encoding and the state decoder.

    >>> json_depth(b'{"a": [1, {"b": "[[["}]}')
    3
    """
    text = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in text:
        depth += 1 if byte in _OPENING else -1
        deepest = max(deepest, depth)
    return deepest


def _writer(body: Any) -> str:
    version = None
    if isinstance(body, dict) and isinstance(body.get("versions"), dict):
        version = body["versions"].get("spotsafe")
    if isinstance(version, str):
        return f"written by spotsafe {version[:40]}"
    return "written by a newer spotsafe"


class _Checker:
    """Checks every field of a manifest body for type and range; builds the Manifest."""

    def __init__(self, where: str, body: dict[str, Any]) -> None:
        self.where = where
        self.body = body

    def fail(self, what: str) -> CheckpointCorrupt:
        return CheckpointCorrupt(f"{self.where}: manifest {what}")

    def field(self, name: str) -> Any:
        if name not in self.body:
            raise self.fail(f"lacks the field {name!r}")
        return self.body[name]

    def integer(self, name: str, value: Any, low: int, high: int) -> int:
        if type(value) is not int or not low <= value <= high:
            raise self.fail(
                f"field {name} = {str(value)[:40]!r}: not an integer in [{low}, {high}]"
            )
        return value

    def text(self, name: str, value: Any, *, optional: bool = False) -> Any:
        if (value is None and optional) or (isinstance(value, str) and len(value) <= MAX_TEXT):
            return value
        raise self.fail(f"field {name} = {str(value)[:40]!r}: not a string")

    def manifest(self) -> Manifest:
        b = self.body
        known = {f.name for f in fields(Manifest)}
        unknown = sorted(set(b) - known)
        if unknown:
            raise self.fail(f"has unknown fields {unknown}")
        created_at = self.field("created_at")
        if type(created_at) not in (int, float) or not 0 <= created_at <= MAX_WALL_S:
            raise self.fail(f"field created_at = {str(created_at)[:40]!r}: not a time")
        files = self.files(self.field("files"))
        tensors = self.tensors(self.field("tensors"), files)
        tree = self.field("tree")
        check_tree(tree, len(tensors), self.where)
        versions = self.field("versions")
        if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
            raise self.fail("field versions is not a map of names to strings")
        extra = b.get("extra", {})
        if not isinstance(extra, dict):
            raise self.fail("field extra is not a map")
        attempt, generation = self.field("attempt"), self.field("generation")
        return Manifest(
            step=self.integer("step", self.field("step"), 0, MAX_STEP),
            epoch=self.integer("epoch", self.field("epoch"), 0, MAX_STEP),
            created_at=float(created_at),
            writer=self.text("writer", self.field("writer")),
            job_id=self.text("job_id", self.field("job_id"), optional=True),
            attempt=None if attempt is None else self.integer("attempt", attempt, 0, MAX_STEP),
            generation=None
            if generation is None
            else self.integer("generation", generation, 0, MAX_STEP),
            world_size=self.integer("world_size", self.field("world_size"), 1, MAX_WORLD_SIZE),
            versions=versions,
            config_fingerprint=self.text(
                "config_fingerprint", self.field("config_fingerprint"), optional=True
            ),
            files=files,
            tensors=tensors,
            tree=tree,
            extra=extra,
        )

    def files(self, files: Any) -> dict[str, int]:
        if not isinstance(files, dict):
            raise self.fail("field files is not a map of paths to sizes")
        for path, size in files.items():
            if not _FILE_RE.match(path):
                raise self.fail(f"names the file {path[:80]!r}, outside the checkpoints")
            self.integer(f"files[{path!r}]", size, 0, MAX_FILE_BYTES)
        return files

    def tensors(self, entries: Any, files: dict[str, int]) -> list[TensorEntry]:
        if not isinstance(entries, list):
            raise self.fail("field tensors is not a list")
        out = []
        names = {f.name for f in fields(TensorEntry)}
        for i, e in enumerate(entries):
            where = f"tensors[{i}]"
            if not isinstance(e, dict) or set(e) != names:
                raise self.fail(f"{where} does not have exactly the fields {sorted(names)}")
            file, dtype, shape = e["file"], e["dtype"], e["shape"]
            if not isinstance(file, str) or file not in files:
                raise self.fail(f"{where} is in {str(file)[:80]!r}, a file it does not list")
            if not isinstance(dtype, str):
                raise self.fail(f"{where}.dtype is not a string")
            if dtype not in DTYPE_SIZES:
                raise CheckpointTooNew(
                    f"{self.where} holds a tensor of dtype {dtype[:40]!r}, which this spotsafe"
                    f" {__version__} does not know: it was {_writer(self.body)}; upgrade"
                    " spotsafe to load it"
                )
            if (
                not isinstance(shape, list)
                or len(shape) > MAX_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)
            ):
                raise self.fail(f"{where}.shape {str(shape)[:80]} is not a list of sizes")
            size = files[file]
            offset = self.integer(f"{where}.offset", e["offset"], 0, size)
            nbytes = self.integer(f"{where}.nbytes", e["nbytes"], 0, size)
            span = self.integer(f"{where}.span", e["span"], nbytes, size)
            if offset + span > size:
                raise self.fail(f"{where} ends at byte {offset + span}, past the end of {file}")
            if math.prod(shape) * DTYPE_SIZES[dtype] != nbytes:
                raise self.fail(f"{where} has {nbytes} bytes, not a {dtype}{shape}")
            if not isinstance(e["xxh3"], str) or not _DIGEST_RE.match(e["xxh3"]):
                raise self.fail(f"{where}.xxh3 is not an xxh3-128 digest")
            out.append(TensorEntry(**e))
        return out


def check_tree(tree: Any, n_tensors: int, where: str) -> None:
    """Whether every node of an encoded state tree is one this version knows, with the
    right types (see spotsafe.checkpoint.tree); raises if not. Iterative: no recursion."""
    todo: list[Any] = [tree]
    while todo:
        node: Any = todo.pop()
        if node is None or isinstance(node, (bool, int, float, str)):
            continue
        tags = [k for k in node if k.startswith("$")] if isinstance(node, dict) else []
        if len(tags) != 1:
            raise CheckpointCorrupt(f"{where}: malformed state tree node {str(node)[:80]}")
        tag = tags[0]
        value: Any = node[tag]
        expected = _TREE_NODES.get(tag)
        if expected is None:
            raise CheckpointTooNew(
                f"{where}: the state holds a {tag[1:]!r} value, which this spotsafe"
                f" {__version__} does not know; upgrade spotsafe to load it"
            )
        companions, kind = expected
        if set(node) != {tag, *companions} or not isinstance(node[tag], kind):
            raise CheckpointCorrupt(f"{where}: malformed {tag[1:]} node {str(node)[:80]}")
        if tag == "$ndarray" and not (
            isinstance(node["dtype"], str)
            and _NUMPY_DTYPE_RE.match(node["dtype"])
            and isinstance(node["shape"], list)
            and all(type(d) is int and d >= 0 for d in node["shape"])
        ):
            raise CheckpointCorrupt(f"{where}: malformed ndarray node {str(node)[:80]}")
        if tag in ("$tensor", "$ndarray") and not (type(value) is int and 0 <= value < n_tensors):
            raise CheckpointCorrupt(f"{where}: {tag[1:]} #{value} is not in the manifest")
        if tag == "$dtype" and value not in DTYPE_SIZES:
            raise CheckpointTooNew(
                f"{where}: the state names dtype {value[:40]!r}, which this spotsafe"
                f" {__version__} does not know; upgrade spotsafe to load it"
            )
        if tag == "$dict":
            for pair in value:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise CheckpointCorrupt(f"{where}: malformed dict item {str(pair)[:80]}")
                todo.extend(pair)
        elif tag in ("$list", "$tuple", "$set"):
            todo.extend(value)


def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
