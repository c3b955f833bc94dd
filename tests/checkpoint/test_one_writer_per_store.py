"""One writer per store: a second process is refused; retention never deletes what another
committed manifest uses; a prune that fails never fails the save that committed.

Two writers on one store used to destroy each other: each one's retention deleted data files
that the other's incremental manifests still used, until every checkpoint was corrupt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.checkpoint import Status
from spotsafe.errors import LeaseHeld, StorageError
from spotsafe.storage.local import LocalStore
from tests.support.live_writer import make_state

REPO = Path(__file__).resolve().parents[2]


def start_writer(root: Path) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.live_writer", str(root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "saving"
    return writer


def test_a_second_writer_process_is_refused_until_the_first_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "store"
    writer = start_writer(root)
    try:
        state, _ = make_state()
        ckpt = spotsafe.Checkpointer(str(root))
        state.step = 10**6
        with pytest.raises(LeaseHeld, match="in use by another writer"):
            ckpt.save(state)
        assert not list(root.glob("checkpoints/step-000001000000-*")), "refused, yet it wrote"
        # Reading is never refused.
        assert ckpt.restore(make_state()[0]) is not None
    finally:
        writer.kill()
        writer.wait()
    # Killed without releasing: on the same machine a dead holder's lease is free at once.
    ckpt.save(state)
    ckpt.close()
    assert next(c.step for c in ckpt.checkpoints()) == 10**6


def test_two_checkpointers_in_one_process_never_break_each_others_checkpoints(
    tmp_path: Path,
) -> None:
    # One process's Checkpointers share its claim on the store (a script that restarts its
    # loop, a notebook cell run twice); retention then must respect both one's manifests.
    a_state, a_head = make_state()
    b_state, b_head = make_state()
    a = spotsafe.Checkpointer(str(tmp_path), keep_last=2, events=False)
    b = spotsafe.Checkpointer(str(tmp_path), keep_last=2, events=False)
    for step in range(1, 13):
        # b saves every fourth step: by then a's retention has passed over b's last save,
        # whose backbone file b's next save refers to instead of writing it again.
        state, head, ckpt = (b_state, b_head, b) if step % 4 == 0 else (a_state, a_head, a)
        with torch.no_grad():
            for p in head.parameters():
                p.fill_(float(step))
        state.step = step
        ckpt.save(state)  # shares the frozen backbone's file with its own previous save
    listing = spotsafe.Checkpointer(str(tmp_path), read_only=True).verify()
    committed = [c for c in listing if c.status in (Status.VALID, Status.CORRUPT)]
    assert committed and all(c.status is Status.VALID for c in committed), listing
    a.close()
    b.close()


class DeleteFails(LocalStore):
    """A store whose deletes fail, as on a bucket without s3:DeleteObject permission."""

    def delete(self, paths):  # type: ignore[no-untyped-def]
        if list(paths):
            raise StorageError(f"could not delete under {self.url}: permission denied")


def test_a_failed_prune_does_not_fail_a_committed_save(tmp_path: Path) -> None:
    ckpt = spotsafe.Checkpointer(DeleteFails(tmp_path), keep_last=2)
    state, head = make_state()
    for step in range(1, 6):
        with torch.no_grad():
            for p in head.parameters():
                p.fill_(float(step))
        state.step = step
        assert ckpt.save(state).step == step  # committed: the failed prune is only logged
    ckpt.close()
    assert [c.step for c in ckpt.checkpoints()] == [5, 4, 3, 2, 1]
    events = [
        json.loads(line)
        for f in sorted(tmp_path.glob("events/**/*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    failures = [e for e in events if e.get("kind") == "prune_failed"]
    assert failures and "permission denied" in failures[0]["error"]


class ListingFails(LocalStore):
    """A store whose listings of checkpoints/ fail while ``failing`` is set (a throttled or
    unreachable bucket: reads and writes of known paths still go through)."""

    failing = True

    def list(self, prefix: str = ""):  # type: ignore[no-untyped-def]
        if self.failing and prefix.strip("/") == "checkpoints":
            raise StorageError(f"could not list {self.url}/checkpoints: SlowDown")
        return super().list(prefix)


def committed(ckpt: spotsafe.Checkpointer) -> list[int]:
    return [c.step for c in ckpt.checkpoints() if c.status is Status.VALID]


def read_events(root: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for f in sorted(root.glob("events/**/*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_failed_listings_and_deletes_never_fail_a_save_and_training_goes_on(
    tmp_path: Path,
) -> None:
    store = ListingFails(tmp_path)
    ckpt = spotsafe.Checkpointer(store, keep_last=2)
    state, head = make_state()
    # Every save of a guarded loop commits; the retention after each one fails to list.
    with spotsafe.Guard(ckpt, state, every_steps=1, watchers=[], async_saves=False) as guard:
        for _ in range(6):
            with torch.no_grad():
                head.weight.add_(1.0)
            guard.step()
    assert state.step == 6
    store.failing = False
    assert committed(ckpt) == [6, 5, 4, 3, 2, 1]  # nothing pruned yet
    events = read_events(tmp_path)
    assert not [e for e in events if e.get("kind") == "save_failed"]
    failures = [e for e in events if e.get("kind") == "prune_failed"]
    assert len(failures) == 6 and all("SlowDown" in str(e["error"]) for e in failures)
    # The next save's retention, listing again, catches up.
    state.step = 7
    ckpt.save(state)
    assert committed(ckpt) == [7, 6]
    ckpt.close()


def test_a_prune_that_crashes_does_not_fail_a_committed_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spotsafe.checkpoint import retention

    def broken(state: object) -> object:
        raise RuntimeError("a bug in retention")

    monkeypatch.setattr(retention, "plan_retention", broken)
    ckpt = spotsafe.Checkpointer(str(tmp_path), keep_last=2)
    state, _ = make_state()
    for step in (1, 2, 3):
        state.step = step
        assert ckpt.save_async(state).wait().step == step
    ckpt.close()
    failures = [e for e in read_events(tmp_path) if e.get("kind") == "prune_failed"]
    assert len(failures) == 3 and failures[0]["error_type"] == "RuntimeError"
