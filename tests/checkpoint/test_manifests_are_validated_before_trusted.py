"""A manifest is checked field by field before anything trusts it.

The checksum only proves that a manifest is the one its writer wrote; an adversary (or a bug
in another tool) can write a well-formed lie and recompute the checksum. Whatever the lie,
every reader gets a clean error or falls back to the older checkpoint: never another
exception, never a fresh start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import xxhash
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spotsafe
from spotsafe.checkpoint import Status, discover
from spotsafe.checkpoint.manifest import SCHEMA, Manifest, _canonical, json_depth
from spotsafe.cli import cli
from spotsafe.errors import CheckpointCorrupt, CheckpointMismatch
from spotsafe.storage import open_store
from spotsafe.supervisor import newest_valid_step
from tests.support.tiny import perturb, tiny_state, weights


def write_doc(path: Path, body: Any, *, schema: Any = SCHEMA) -> None:
    """Write ``body`` as a manifest whose checksum matches it."""
    doc = {
        "format": "spotsafe-checkpoint",
        "schema": schema,
        "xxh3": xxhash.xxh3_128_hexdigest(_canonical(body)),
        "manifest": body,
    }
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A store with checkpoints at steps 10 and 20 (incremental off: no shared files)."""
    root = tmp_path_factory.mktemp("pristine")
    ckpt = spotsafe.Checkpointer(str(root), incremental=False, events=False)
    state = tiny_state()
    state.step = 10
    ckpt.save(state)
    at_10 = weights(state)
    perturb(state)
    state.step = 20
    ckpt.save(state)
    ckpt.close()
    return root, at_10


def copy_store(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst / "store", ignore=shutil.ignore_patterns("lease"))
    return dst / "store"


def newest_manifest(root: Path) -> Path:
    return next((root / "checkpoints").glob("step-000000000020-*")) / "MANIFEST.json"


def assert_every_reader_copes(root: Path, at_10: dict[str, torch.Tensor]) -> None:
    """discover, ls, verify and restore: a clean outcome, and the step-20 lie never loads."""
    listing = discover(open_store(str(root))).checkpoints
    newest = next(c for c in listing if c.step == 20)
    assert newest.status in (Status.VALID, Status.CORRUPT, Status.NEWER)
    for args in (["ls", str(root)], ["verify", str(root)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code in (0, 1), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    state = tiny_state(seed=99)
    try:
        info = spotsafe.Checkpointer(str(root)).restore(state)
    except CheckpointMismatch:
        return  # a newer format, or a lie about the world size: a clean refusal
    assert info is not None, "a lying manifest must never turn into a fresh start"
    if info.step == 10:
        assert all(torch.equal(weights(state)[k], v) for k, v in at_10.items())


# --- the findings, one by one --------------------------------------------------------------


def test_json_nested_100000_levels_deep_is_corrupt(pristine, tmp_path) -> None:
    root = copy_store(pristine[0], tmp_path)
    newest_manifest(root).write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert json_depth(newest_manifest(root).read_bytes()) == 100_000
    listing = discover(open_store(str(root))).checkpoints
    assert [c.status for c in listing] == [Status.CORRUPT, Status.VALID]
    assert "levels deep" in listing[0].reason
    assert newest_valid_step(open_store(str(root))) == 10  # the supervisor's look, torch-free
    info = spotsafe.Checkpointer(str(root)).restore(tiny_state(seed=1))
    assert info is not None and info.step == 10
    assert (newest_manifest(root).parent / "QUARANTINE.json").exists()


@pytest.mark.parametrize(
    ("lie", "expected"),
    [
        (lambda b: b["tensors"][0].update(offset="0"), "offset"),
        (lambda b: b.update(files=list(b["files"])), "files"),
        (lambda b: b["tensors"][0].update(span=10**12), "span"),
        (lambda b: b.update(created_at="yesterday"), "created_at"),
        (lambda b: b["files"].update({"../../etc/passwd": 10}), "outside the checkpoints"),
        (lambda b: b["tensors"][0].update(shape=[10**9, 10**9]), "bytes, not a"),
        (lambda b: b.update(step=True), "step"),
        (lambda b: b.update(tree={"$tensor": 10**6}), "not in the manifest"),
        (lambda b: b.update(tree=[1, 2]), "malformed state tree"),
        (lambda b: b.pop("writer"), "writer"),
    ],
)
def test_a_lie_with_a_recomputed_checksum_is_corrupt(pristine, tmp_path, lie, expected) -> None:
    root = copy_store(pristine[0], tmp_path)
    path = newest_manifest(root)
    body = json.loads(path.read_text())["manifest"]
    lie(body)
    write_doc(path, body)
    with pytest.raises(CheckpointCorrupt, match=expected):
        Manifest.from_bytes(path.read_bytes(), "m")
    assert_every_reader_copes(root, pristine[1])


# --- any lie ---------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths_into(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) to a value inside ``doc``."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_into(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths_into(v, (*prefix, i))
    return out


@st.composite
def mutations(draw: st.DrawFn, body: dict[str, Any]) -> tuple[str, tuple[Any, ...], Any]:
    path = draw(st.sampled_from(paths_into(body)[1:]))
    kind = draw(st.sampled_from(["replace", "delete", "add"]))
    return kind, path, draw(JSON_VALUES)


def mutate(body: Any, mutation: tuple[str, tuple[Any, ...], Any]) -> None:
    kind, path, value = mutation
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if kind == "replace":
        parent[last] = value
    elif kind == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[f"{last}-extra"] = value
    else:
        parent.insert(last, value)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_mutation_with_a_recomputed_checksum_is_a_clean_error(pristine, data) -> None:
    root, _ = pristine
    body = json.loads(newest_manifest(root).read_text())["manifest"]
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(body, data.draw(mutations(body)))
    doc = {
        "format": "spotsafe-checkpoint",
        "schema": SCHEMA,
        "xxh3": xxhash.xxh3_128_hexdigest(_canonical(body)),
        "manifest": body,
    }
    raw = json.dumps(doc).encode()
    try:
        manifest = Manifest.from_bytes(raw, "m")
    except CheckpointCorrupt:
        return  # includes CheckpointTooNew's sibling cases below
    except CheckpointMismatch:
        return  # a newer dtype or state node: a clean refusal, never quarantined
    # Accepted: then it is consistent enough to check against the real files.
    assert all(e.file in manifest.files for e in manifest.tensors)
    for e in manifest.tensors:
        assert e.offset >= 0 and e.offset + e.span <= manifest.files[e.file]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_reader_copes_with_a_mutated_manifest(pristine, tmp_path_factory, data) -> None:
    root = copy_store(pristine[0], tmp_path_factory.mktemp("mutated"))
    path = newest_manifest(root)
    body = json.loads(path.read_text())["manifest"]
    mutate(body, data.draw(mutations(body)))
    write_doc(path, body)
    assert_every_reader_copes(root, pristine[1])
