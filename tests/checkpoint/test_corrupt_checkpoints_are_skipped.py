"""Every kind of damage is detected, quarantined, and restore falls back to an older one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.checkpoint import Status
from spotsafe.errors import CheckpointMismatch, NoValidCheckpoint
from tests.support.tiny import perturb, tiny_state, weights


def two_checkpoints(root: Path) -> tuple[spotsafe.Checkpointer, dict[str, torch.Tensor], Path]:
    """Steps 10 and 20 in ``root``; returns the weights at step 10 and step 20's directory."""
    ckpt = spotsafe.Checkpointer(str(root), incremental=False)
    state = tiny_state()
    state.step = 10
    ckpt.save(state)
    at_10 = weights(state)
    perturb(state)
    state.step = 20
    ckpt.save(state)
    newest = next((root / "checkpoints").glob("step-000000000020-*"))
    return ckpt, at_10, newest


def data_file(directory: Path) -> Path:
    return next(directory.glob("data-*.bin"))


def truncate(d: Path) -> None:
    f = data_file(d)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def flip_bit(d: Path) -> None:
    f = data_file(d)
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0x10
    f.write_bytes(bytes(data))


def zero_length(d: Path) -> None:
    data_file(d).write_bytes(b"")


def missing_file(d: Path) -> None:
    data_file(d).unlink()


def garbled_manifest(d: Path) -> None:
    m = d / "MANIFEST.json"
    text = m.read_text()
    # Still valid JSON, one digit changed: only the manifest's own checksum catches this.
    m.write_text(text.replace('"offset": 0', '"offset": 64', 1))


def truncated_manifest(d: Path) -> None:
    m = d / "MANIFEST.json"
    m.write_bytes(m.read_bytes()[:100])


def appended_bytes(d: Path) -> None:
    with open(data_file(d), "ab") as f:
        f.write(b"x")


DAMAGE = [truncate, flip_bit, zero_length, missing_file, garbled_manifest, truncated_manifest,
          appended_bytes]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_damaged_newest_falls_back_and_is_quarantined(tmp_path, caplog, damage) -> None:
    ckpt, at_10, newest = two_checkpoints(tmp_path)
    damage(newest)
    state = tiny_state(seed=1)
    with caplog.at_level(logging.WARNING, logger="spotsafe"):
        info = spotsafe.Checkpointer(str(tmp_path)).restore(state)
    assert info is not None and info.step == 10 and info.fell_back
    assert all(torch.equal(at_10[k], v) for k, v in weights(state).items())
    assert "quarantined" in caplog.text
    assert (newest / "QUARANTINE.json").exists()
    # Never picked again: the next restore does not even look at it.
    caplog.clear()
    info = spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state(seed=1))
    assert info is not None and info.step == 10 and not info.fell_back
    listing = {c.step: c.status for c in ckpt.checkpoints()}
    assert listing == {20: Status.QUARANTINED, 10: Status.VALID}


def test_all_corrupt_raises_unless_fresh_start_is_asked_for(tmp_path) -> None:
    _, _, newest = two_checkpoints(tmp_path)
    flip_bit(newest)
    flip_bit(next((tmp_path / "checkpoints").glob("step-000000000010-*")))
    with pytest.raises(NoValidCheckpoint, match="none is valid"):
        spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state())
    # Quarantined ones still count as "checkpoints exist": no silent fresh start later.
    with pytest.raises(NoValidCheckpoint):
        spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state())
    state = tiny_state(seed=3)
    before = weights(state)
    assert spotsafe.Checkpointer(str(tmp_path)).restore(state, fresh_start_ok=True) is None
    assert all(torch.equal(before[k], v) for k, v in weights(state).items())


def test_checkpoint_of_another_job_is_never_loaded(tmp_path) -> None:
    theirs = spotsafe.Checkpointer(str(tmp_path), job_id="job-a", incremental=False)
    state = tiny_state()
    state.step = 30
    theirs.save(state)
    ours = spotsafe.Checkpointer(str(tmp_path), job_id="job-b")
    info = ours.restore(tiny_state(seed=2), fresh_start_ok=True)
    assert info is None
    assert [c.status for c in ours.checkpoints()] == [Status.FOREIGN]
    # Not ours to quarantine.
    assert not list(tmp_path.glob("checkpoints/*/QUARANTINE.json"))


def test_config_fingerprint_mismatch_is_a_clear_error(tmp_path) -> None:
    model = torch.nn.Linear(2, 2)
    state = spotsafe.TrainState(model=model, config={"lr": 0.1})
    state.step = 5
    spotsafe.Checkpointer(str(tmp_path)).save(state)
    other = spotsafe.TrainState(model=torch.nn.Linear(2, 2), config={"lr": 0.2})
    with pytest.raises(CheckpointMismatch, match="allow_config_change=True"):
        spotsafe.Checkpointer(str(tmp_path)).restore(other)
    info = spotsafe.Checkpointer(str(tmp_path)).restore(other, allow_config_change=True)
    assert info is not None and info.step == 5
    assert torch.equal(other.objects["model"].weight, model.weight)


def test_manifest_for_another_step_is_corrupt(tmp_path) -> None:
    _, _, newest = two_checkpoints(tmp_path)
    older = next((tmp_path / "checkpoints").glob("step-000000000010-*"))
    (newest / "MANIFEST.json").write_bytes((older / "MANIFEST.json").read_bytes())
    info = spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state())
    assert info is not None and info.step == 10 and info.fell_back


def test_quarantine_marker_explains_why(tmp_path) -> None:
    _, _, newest = two_checkpoints(tmp_path)
    truncate(newest)
    spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state())
    reason = json.loads((newest / "QUARANTINE.json").read_text())["reason"]
    assert "bytes" in reason


def test_a_fault_two_ranks_find_is_quarantined_once_with_the_first_reason(tmp_path) -> None:
    """Under DDP every rank verifies the replicated files, so each may find the same fault
    and mark it: the second mark changes nothing and raises nothing (a local store writes
    each object once, so writing the marker again would fail)."""
    from spotsafe.checkpoint import quarantine
    from spotsafe.storage import open_store

    _, _, newest = two_checkpoints(tmp_path)
    store = open_store(str(tmp_path))
    directory = f"checkpoints/{newest.name}"
    quarantine.mark(store, directory, reason="rank 0: 3 bytes short", at=1.0, by="rank0")
    quarantine.mark(store, directory, reason="rank 1: 3 bytes short", at=1.1, by="rank1")
    assert quarantine.reason(store, directory) == "rank 0: 3 bytes short"
