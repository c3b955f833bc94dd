"""Retention never deletes the newest checkpoints, the one the run resumed from, a file a kept
checkpoint refers to, or anything before a newer checkpoint has committed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.checkpoint import Status
from spotsafe.errors import ConfigError, StorageError
from spotsafe.storage.local import LocalStore
from tests.support.tiny import perturb, tiny_state, weights


def steps(root: Path) -> list[int]:
    """The steps that have a committed manifest."""
    manifests = (root / "checkpoints").glob("step-*/MANIFEST.json")
    return sorted(int(m.parent.name.split("-")[1]) for m in manifests)


def test_keep_last_must_be_at_least_two(tmp_path) -> None:
    with pytest.raises(ConfigError, match="keep_last=1"):
        spotsafe.Checkpointer(str(tmp_path), keep_last=1)


def test_keeps_the_newest_keep_last(tmp_path) -> None:
    ckpt = spotsafe.Checkpointer(str(tmp_path), keep_last=3)
    state = tiny_state()
    for step in range(1, 8):
        perturb(state)
        state.step = step
        ckpt.save(state)
    assert steps(tmp_path) == [5, 6, 7]
    assert {c.status for c in ckpt.checkpoints()} == {Status.VALID}


def test_keeps_the_checkpoint_the_run_resumed_from(tmp_path) -> None:
    first = spotsafe.Checkpointer(str(tmp_path), keep_last=2)
    state = tiny_state()
    state.step = 5
    first.save(state)
    resumed = spotsafe.Checkpointer(str(tmp_path), keep_last=2)
    assert resumed.restore(tiny_state()).step == 5  # type: ignore[union-attr]
    for step in (6, 7, 8, 9):
        perturb(state)
        state.step = step
        resumed.save(state)
    assert steps(tmp_path) == [5, 8, 9]


class FailingStore(LocalStore):
    """Fails the n-th write (a manifest or a data file), like a full disk or a dead link."""

    def __init__(self, root: Path, fail_at: int) -> None:
        super().__init__(root)
        self.writes = 0
        self.fail_at = fail_at

    def write(self, path, chunks):  # type: ignore[no-untyped-def]
        self.writes += 1
        if self.writes == self.fail_at:
            raise StorageError(f"injected failure writing {path}")
        return super().write(path, chunks)


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_failed_save_prunes_nothing(tmp_path, fail_at: int) -> None:
    ckpt = spotsafe.Checkpointer(str(tmp_path), keep_last=2, incremental=False, shard_bytes=4096)
    state = tiny_state(width=64)
    for step in (1, 2):
        perturb(state)
        state.step = step
        ckpt.save(state)
    at_2 = weights(state)
    failing = spotsafe.Checkpointer(FailingStore(tmp_path, fail_at), keep_last=2, shard_bytes=4096)
    perturb(state)
    state.step = 3
    with pytest.raises(StorageError, match="injected"):
        failing.save(state)
    assert steps(tmp_path) == [1, 2]
    restored = tiny_state(seed=9, width=64)
    info = spotsafe.Checkpointer(str(tmp_path)).restore(restored)
    assert info is not None and info.step == 2
    assert all(torch.equal(at_2[k], v) for k, v in weights(restored).items())


def test_partial_writes_of_dead_attempts_are_cleaned_up(tmp_path) -> None:
    ckpt = spotsafe.Checkpointer(str(tmp_path), keep_last=2)
    state = tiny_state()
    state.step = 1
    ckpt.save(state)
    dead = tmp_path / "checkpoints" / "step-000000000002-deadbeef"
    dead.mkdir()
    (dead / "data-000.bin").write_bytes(b"half a tensor")
    assert {c.status for c in ckpt.checkpoints()} == {Status.VALID, Status.PARTIAL}
    state.step = 3
    ckpt.save(state)
    assert not dead.exists()


def test_incremental_files_survive_retention(tmp_path) -> None:
    """A frozen layer written once is referenced by later checkpoints and outlives its own."""
    torch.manual_seed(0)
    frozen = torch.nn.Linear(128, 128)
    head = torch.nn.Linear(128, 2)
    state = spotsafe.TrainState(frozen=frozen, head=head)
    ckpt = spotsafe.Checkpointer(str(tmp_path), keep_last=2)
    sizes = []
    for step in range(1, 6):
        with torch.no_grad():
            head.weight.add_(1.0)
        state.step = step
        sizes.append(ckpt.save(state).bytes_written)
    frozen_bytes = sum(p.numel() * 4 for p in frozen.parameters())
    assert all(s < frozen_bytes for s in sizes[1:]), sizes
    assert steps(tmp_path) == [4, 5]
    fresh_frozen, fresh_head = torch.nn.Linear(128, 128), torch.nn.Linear(128, 2)
    info = spotsafe.Checkpointer(str(tmp_path)).restore(
        spotsafe.TrainState(frozen=fresh_frozen, head=fresh_head)
    )
    assert info is not None and info.step == 5 and not info.fell_back
    assert torch.equal(fresh_frozen.weight, frozen.weight)
    assert torch.equal(fresh_head.weight, head.weight)
