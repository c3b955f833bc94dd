"""`spotsafe ls`, `verify` and `pools`: what they print, their exit codes, one line per user
error and never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import spotsafe
from spotsafe.cli import cli
from tests.support.tiny import tiny_state, two_checkpoints

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ls_shows_step_time_size_and_state(tmp_path) -> None:
    two_checkpoints(tmp_path)
    (tmp_path / "checkpoints" / "step-000000000030-deadbeef").mkdir()
    (tmp_path / "checkpoints" / "step-000000000030-deadbeef" / "data-000.bin").write_bytes(b"x")
    code, out, _ = run("ls", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["STEP", "TIME", "SIZE", "STATE", "NOTE", "PATH"]
    assert lines[1].startswith("30") and "partial" in lines[1]
    assert lines[2].startswith("20") and "valid" in lines[2] and "KiB" in lines[2]
    assert lines[3].startswith("10") and "valid" in lines[3]


def test_ls_of_an_empty_store(tmp_path) -> None:
    code, out, _ = run("ls", str(tmp_path))
    assert code == 0 and "no checkpoints" in out


def test_verify_passes_then_fails_on_one_flipped_bit(tmp_path) -> None:
    two_checkpoints(tmp_path)
    code, out, _ = run("verify", str(tmp_path))
    assert code == 0 and "2 checkpoint(s) verified" in out
    data = next((tmp_path / "checkpoints").glob("step-000000000010-*/data-000.bin"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0x01
    data.write_bytes(bytes(raw))
    code, out, err = run("verify", str(tmp_path))
    assert code == 1
    assert "corrupt" in out and "checksum mismatch" in out
    assert "1 of 2 checkpoint(s) are corrupt" in err
    # verify is read-only: nothing was quarantined
    assert not list(tmp_path.glob("checkpoints/*/QUARANTINE.json"))
    code, _, _ = run("verify", str(tmp_path), "--step", "20")
    assert code == 0


def test_user_errors_are_one_line_without_traceback(tmp_path) -> None:
    code, _, err = run("verify", str(tmp_path), "--step", "5")
    assert code == 2
    assert err.strip().splitlines() == [f"spotsafe: {tmp_path}: no checkpoint at step 5"]
    bad = tmp_path / "spotsafe.toml"
    bad.write_text("[pools.standard]\nmax_failurs = 3\n")
    code, _, err = run("pools", "--config", str(bad))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "max_failures" in err  # did you mean


def test_the_console_script_prints_no_traceback(tmp_path) -> None:
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    done = subprocess.run(
        [sys.executable, "-m", "spotsafe.cli", "ls", str(target)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("spotsafe: ") and str(target) in done.stderr


def test_a_read_only_checkpointer_never_writes(tmp_path) -> None:
    import pytest

    from spotsafe.errors import ConfigError

    two_checkpoints(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    ckpt = spotsafe.Checkpointer(str(tmp_path), read_only=True)
    state = tiny_state()
    assert ckpt.restore(state) is not None
    with pytest.raises(ConfigError, match="read_only"):
        ckpt.save(state)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_ls_notes_a_checkpoint_whose_loader_cannot_resume_exactly(tmp_path) -> None:
    import warnings

    import torch

    data = torch.utils.data.TensorDataset(torch.arange(8.0))
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1, persistent_workers=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NotExactWarning itself is the data tests' concern
        state = spotsafe.TrainState(loader=loader)
    ckpt = spotsafe.Checkpointer(str(tmp_path), events=False)
    state.step = 1
    ckpt.save(state)
    ckpt.close()
    code, out, _ = run("ls", str(tmp_path))
    assert code == 0 and "not exact: loader" in out.splitlines()[1]
