"""Readers of a store that is being written never take pruning for corruption.

A real writer process saves in a loop (keep_last=2, a frozen backbone whose data file every
checkpoint shares) while this process lists, verifies and restores the same store over and
over, through the library and the CLI. Retention deletes a checkpoint's manifest first, so a
file that vanished after a listing is corruption only while its manifest exists; a directory
that vanished mid-walk is gone, not an error.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import spotsafe
from spotsafe.checkpoint import Status, discover
from spotsafe.cli import cli
from spotsafe.storage import open_store
from tests.support.live_writer import make_state

READ_FOR_S = 8.0


@pytest.fixture
def live_store(tmp_path: Path):
    root = tmp_path / "store"
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.live_writer", str(root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "saving"
        yield root
        assert writer.poll() is None, "the writer died while it was read"
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.slow
def test_list_verify_and_restore_while_a_writer_prunes(live_store: Path) -> None:
    rounds = {"discover": 0, "verify": 0, "restore": 0, "ls": 0, "cli-verify": 0}
    restored_steps = []
    deadline = time.monotonic() + READ_FOR_S
    reader = spotsafe.Checkpointer(str(live_store), read_only=True)
    while time.monotonic() < deadline:
        listing = discover(open_store(str(live_store))).checkpoints
        assert not [c for c in listing if c.status is Status.CORRUPT], listing
        rounds["discover"] += 1

        checked = reader.verify()
        assert not [c for c in checked if c.status is Status.CORRUPT], checked
        rounds["verify"] += 1

        state, head = make_state()
        info = spotsafe.Checkpointer(str(live_store)).restore(state)
        assert info is not None, "a store with checkpoints never restores as fresh"
        assert all(torch.all(p == float(info.step)) for p in head.parameters())
        restored_steps.append(info.step)
        rounds["restore"] += 1

        for args, name in (
            (["ls", str(live_store)], "ls"),
            (["verify", str(live_store)], "cli-verify"),
        ):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, (name, result.output)
            rounds[name] += 1
    assert not list(live_store.glob("checkpoints/*/QUARANTINE.json")), (
        "a healthy checkpoint was quarantined"
    )
    assert len(set(restored_steps)) > 1, f"the writer made no progress while read: {rounds}"
