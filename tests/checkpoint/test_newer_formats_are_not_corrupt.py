"""A checkpoint from a newer spotsafe is not corrupt: a clear error, never a quarantine, never
a silent fall back to older state. A quarantine can be lifted after a human looked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import spotsafe
from spotsafe.checkpoint import Status
from spotsafe.cli import cli
from spotsafe.errors import CheckpointMismatch, CheckpointTooNew, NoValidCheckpoint
from tests.checkpoint.test_manifests_are_validated_before_trusted import write_doc
from tests.support import tiny
from tests.support.tiny import tiny_state


def two_checkpoints(root: Path) -> Path:
    """Steps 10 and 20 in ``root``; step 20's manifest."""
    return tiny.two_checkpoints(root) / "MANIFEST.json"


def newer_schema(doc: dict) -> None:
    doc["schema"] += 1
    doc["manifest"]["versions"]["spotsafe"] = "9.1.0"


def newer_dtype(doc: dict) -> None:
    doc["manifest"]["tensors"][0]["dtype"] = "float4_e2m1"


def newer_tree_node(doc: dict) -> None:
    doc["manifest"]["tree"] = {"$jagged": [1, 2]}


@pytest.mark.parametrize("change", [newer_schema, newer_dtype, newer_tree_node])
def test_a_newer_format_is_refused_clearly_and_never_quarantined(tmp_path: Path, change) -> None:
    manifest = two_checkpoints(tmp_path)
    original = manifest.read_bytes()
    doc = json.loads(original)
    change(doc)
    write_doc(manifest, doc["manifest"], schema=doc["schema"])

    with pytest.raises(CheckpointTooNew, match="upgrade spotsafe") as raised:
        spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=3))
    assert isinstance(raised.value, CheckpointMismatch)
    if change is newer_schema:
        assert "written by spotsafe 9.1.0" in str(raised.value)
    assert not (manifest.parent / "QUARANTINE.json").exists()

    result = CliRunner().invoke(cli, ["ls", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].split()[4] == "newer"  # STEP TIME SIZE(2) STATE
    result = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert result.exit_code == 0, result.output  # not corrupt

    # Back to this version's format: it loads, nothing stuck to it.
    manifest.write_bytes(original)
    info = spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=3))
    assert info is not None and info.step == 20


def test_verify_release_lifts_a_quarantine(tmp_path: Path) -> None:
    manifest = two_checkpoints(tmp_path)
    data = manifest.parent / "data-000.bin"
    original = data.read_bytes()
    data.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    info = spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=3))
    assert info is not None and info.step == 10
    assert (manifest.parent / "QUARANTINE.json").exists()

    data.write_bytes(original)  # an operator restored the file from a backup
    result = CliRunner().invoke(cli, ["verify", str(tmp_path), "--release", "20"])
    assert result.exit_code == 0, result.output
    assert "released checkpoints/step-000000000020-" in result.stdout
    assert "1 checkpoint(s) verified" in result.stdout
    assert not (manifest.parent / "QUARANTINE.json").exists()
    info = spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=3))
    assert info is not None and info.step == 20

    result = CliRunner().invoke(cli, ["verify", str(tmp_path), "--release", "20"])
    assert result.exit_code == 2
    assert "no quarantined checkpoint at step 20" in result.stderr


def test_a_run_with_another_job_id_is_refused_not_started_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOTSAFE_JOB_ID", "job-a")
    two_checkpoints(tmp_path)
    monkeypatch.setenv("SPOTSAFE_JOB_ID", "job-b")
    with pytest.raises(CheckpointMismatch, match="holds checkpoints of job job-a"):
        spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=3))
    assert spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(), fresh_start_ok=True) is None


def test_all_quarantined_names_the_way_out(tmp_path: Path) -> None:
    two_checkpoints(tmp_path)
    for d in (tmp_path / "checkpoints").iterdir():
        (d / "QUARANTINE.json").write_text('{"reason": "bad"}')
    with pytest.raises(NoValidCheckpoint, match="spotsafe verify --release STEP"):
        spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=3))


def test_ls_and_verify_of_a_path_that_does_not_exist_are_errors(tmp_path: Path) -> None:
    for command in ("ls", "verify"):
        result = CliRunner().invoke(cli, [command, str(tmp_path / "no-such-run")])
        assert result.exit_code == 2
        assert "no such directory" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "no-such-run").exists(), "looking must not create the store"


def test_the_note_column_does_not_repeat_the_store_path(tmp_path: Path) -> None:
    manifest = two_checkpoints(tmp_path)
    (manifest.parent / "data-000.bin").unlink()
    result = CliRunner().invoke(cli, ["ls", str(tmp_path)])
    line = result.stdout.splitlines()[1]
    assert "corrupt" in line and line.count(str(tmp_path)) == 0, line
    assert Status.CORRUPT.value in line
