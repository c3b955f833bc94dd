"""Listing and verifying a store needs no torch (spotsafe.checkpoint.view.StoreView), and
finds exactly what the Checkpointer finds: a flipped bit, a state tree that does not decode."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import xxhash

import spotsafe
from spotsafe.checkpoint import Status, StoreView
from spotsafe.checkpoint.manifest import _canonical
from tests.support.tiny import tiny_state, two_checkpoints

REPO = Path(__file__).resolve().parents[2]


def run_without_torch(code: str) -> str:
    """Run ``code`` in a fresh interpreter; fail if it imported torch. Its stdout."""
    check = "\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + check],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def newest_dir(root: Path) -> Path:
    return next((root / "checkpoints").glob("step-000000000020-*"))


def test_store_view_lists_verifies_and_releases_without_torch(tmp_path: Path) -> None:
    two_checkpoints(tmp_path)
    data = newest_dir(tmp_path) / "data-000.bin"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0x01
    data.write_bytes(bytes(raw))
    (newest_dir(tmp_path) / "QUARANTINE.json").write_text('{"reason": "looked bad"}')
    out = run_without_torch(f"""
        from spotsafe.checkpoint.view import StoreView
        view = StoreView({str(tmp_path)!r})
        print([(c.step, c.status.value) for c in view.checkpoints()])
        print([c.step for c in view.release(20)])
        print([(c.step, c.status.value) for c in view.verify()])
    """)
    assert out.splitlines() == [
        "[(20, 'quarantined'), (10, 'valid')]",
        "[20]",
        "[(20, 'corrupt'), (10, 'valid')]",
    ]


def test_the_cli_lists_and_verifies_without_torch(tmp_path: Path) -> None:
    two_checkpoints(tmp_path)
    run_without_torch(f"""
        from spotsafe.cli import cli
        for args in (["ls", {str(tmp_path)!r}], ["verify", {str(tmp_path)!r}]):
            try:
                cli(args, standalone_mode=False)
            except SystemExit as e:
                assert not e.code, e.code
    """)


def test_store_view_and_checkpointer_verify_agree(tmp_path: Path) -> None:
    two_checkpoints(tmp_path)
    data = newest_dir(tmp_path) / "data-000.bin"
    raw = bytearray(data.read_bytes())
    raw[-80] ^= 0x40  # in the last tensor's bytes
    data.write_bytes(bytes(raw))
    by_view = StoreView(str(tmp_path)).verify()
    by_checkpointer = spotsafe.Checkpointer(str(tmp_path), read_only=True).verify()
    assert [(c.step, c.status) for c in by_view] == [(20, Status.CORRUPT), (10, Status.VALID)]
    assert [(c.step, c.status, c.reason) for c in by_view] == [
        (c.step, c.status, c.reason) for c in by_checkpointer
    ]
    assert "checksum mismatch" in by_view[0].reason


def rewrite_tree(root: Path, tree: object) -> None:
    """Give the newest manifest another state tree, with a checksum that matches."""
    path = newest_dir(root) / "MANIFEST.json"
    doc = json.loads(path.read_text())
    doc["manifest"]["tree"] = tree
    doc["xxh3"] = xxhash.xxh3_128_hexdigest(_canonical(doc["manifest"]))
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "bad",
    [
        {"$ndarray": 0, "dtype": "<f8", "shape": [3, 3]},  # more bytes than the tensor has
        {"$npscalar": "<f8", "b64": "AAAA"},  # 3 bytes are not a float64
        {"$bytes": "not base64!"},
        {"$device": "cuda:zero"},
        {"$dict": [[{"$list": []}, 1]]},  # a list as a dict key
    ],
)
def test_a_tree_that_does_not_decode_is_corrupt_to_every_reader(
    tmp_path: Path, bad: object
) -> None:
    two_checkpoints(tmp_path)
    rewrite_tree(tmp_path, {"$dict": [["objects", bad]]})
    by_view = StoreView(str(tmp_path)).verify()
    assert [(c.step, c.status) for c in by_view] == [(20, Status.CORRUPT), (10, Status.VALID)]
    info = spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=3))
    assert info is not None and info.step == 10 and info.fell_back
