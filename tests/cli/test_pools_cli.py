"""`spotsafe pools` says which config file it read, or that the built-in presets apply; the
CLI's numbers are finite and bounded, refused in one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from spotsafe.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_without_a_config_file_it_says_the_presets_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("pools")
    assert code == 0
    assert out.splitlines()[0].startswith("pools (built-in presets: no --config, ./spotsafe.toml")


def test_it_names_the_spotsafe_toml_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spotsafe.toml").write_text("[pools.sweep]\nmax_failures = 0\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("pools")
    assert code == 0
    assert out.splitlines()[0] == f"pools from {tmp_path / 'spotsafe.toml'}; default: standard"
    assert "sweep" in out.splitlines()[1]


def test_it_names_the_pyproject_table_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.spotsafe.pools.nightly]\nkeep_last = 4\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("pools")
    assert code == 0
    heading = out.splitlines()[0]
    assert heading == f"pools from {tmp_path / 'pyproject.toml'} [tool.spotsafe]; default: standard"


def test_it_names_an_explicit_config_by_its_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "team.toml").write_text("[pools.team]\nmax_failures = 1\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("pools", "--config", "team.toml")
    assert code == 0
    assert out.splitlines()[0] == f"pools from {tmp_path / 'team.toml'}; default: standard"


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ("--grace-s", "nan", "a finite number > 0 and <= 3600"),  # was accepted, failed later
        ("--grace-s", "inf", "a finite number > 0 and <= 3600"),
        ("--grace-s", "1e300", "a finite number > 0 and <= 3600"),
        ("--grace-s", "0", "a finite number > 0 and <= 3600"),
        ("--max-delay-s", "nan", "a finite number >= 0 and <= 3600"),
        ("--max-delay-s", "-1", "a finite number >= 0 and <= 3600"),
        ("--kills", "0", "an integer >= 1 and <= 10000"),
        ("--kills", "100001", "an integer >= 1 and <= 10000"),
        ("--seed", "-1", "an integer >= 0 and <= 4294967295"),
    ],
)
def test_chaos_refuses_non_finite_and_out_of_range_numbers_in_one_line(
    tmp_path: Path, option: str, value: str, rule: str
) -> None:
    code, out, err = run("chaos", "--workdir", str(tmp_path / "w"), option, value, "--", "true")
    assert code == 2
    assert err == f"spotsafe: {option} = {value}: must be {rule}\n"
    assert out == "" and not (tmp_path / "w").exists()  # refused before anything ran


def test_the_library_refuses_them_too(tmp_path: Path) -> None:
    from spotsafe.errors import ConfigError
    from spotsafe.supervisor.chaos import run_chaos

    with pytest.raises(ConfigError, match=r"^grace_s = nan: must be a finite number > 0"):
        run_chaos(["true"], kills=1, seed=0, workdir=tmp_path / "w", grace_s=float("nan"))
    assert not (tmp_path / "w").exists()
