"""The error tree is complete in spotsafe.errors: drawn in its docstring, exported, every
error classified retryable or fatal, and the command line exits 75 for a retryable error
and 2 for a user error."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import spotsafe
import spotsafe.errors as errors
from spotsafe.cli import exit_code_for

SRC = Path(spotsafe.__file__).parent


def _classes() -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.SpotsafeError)
    }


def _drawn_tree() -> dict[str, str | None]:
    """Class name -> parent name, read from the tree in the module docstring."""
    assert errors.__doc__ is not None
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        m = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z][A-Za-z]+)(?:\s|$)", line)
        if m is None or m.group(2) not in _classes():
            continue
        depth = len(line) - len(line.lstrip(" │├└─"))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[m.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, m.group(2)))
    return parents


def test_the_docstring_draws_every_error_under_its_real_parent() -> None:
    drawn = _drawn_tree()
    for name, cls in _classes().items():
        assert name in drawn, f"{name} is not drawn in the spotsafe.errors docstring"
        real = cls.__base__.__name__ if cls is not errors.SpotsafeError else None
        assert drawn[name] == real, f"{name} is drawn under {drawn[name]}, inherits {real}"


def test_every_error_is_exported_and_the_new_ones_are_classified() -> None:
    assert sorted(errors.__all__) == sorted(_classes())
    assert errors.StaleAttempt.retryable is False and issubclass(
        errors.StaleAttempt, errors.StorageError
    )
    assert errors.MetadataUnavailable.retryable is True
    assert errors.LeaseLost.retryable is False
    assert errors.LeaseHeld.retryable is True


def test_the_old_import_paths_name_the_same_classes() -> None:
    from spotsafe import _http, lease, supervisor

    assert lease.LeaseLost is errors.LeaseLost
    assert supervisor.LeaseLost is errors.LeaseLost
    assert _http.MetadataUnavailable is errors.MetadataUnavailable


def test_no_module_defines_a_public_error_of_its_own() -> None:
    for path in SRC.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                assert not any(b.endswith(("Error", "Exception")) for b in bases) or (
                    node.name in _classes()
                ), f"{path.relative_to(SRC)} defines {node.name}: put it in spotsafe.errors"


def test_a_stale_attempt_is_refused_with_its_own_error(memory_url: str) -> None:
    from spotsafe.jobrecord import check_fence
    from spotsafe.storage import open_store

    store = open_store(memory_url)
    store.write_bytes("job/attempts/000004-start.json", b"{}")
    with pytest.raises(errors.StaleAttempt, match="attempt 4 has started"):
        check_fence(store, 3)
    check_fence(store, 4)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.StorageError("connection reset"), 75),
        (errors.LeaseHeld("another supervisor runs the job"), 75),
        (errors.MetadataUnavailable("no answer"), 75),
        (errors.StorageError("access denied", retryable=False), 2),
        (errors.ConfigError("unknown pool"), 2),
        (errors.StaleAttempt("attempt 3 is stale"), 2),
    ],
)
def test_the_cli_exit_code_follows_the_classification(
    error: errors.SpotsafeError, code: int
) -> None:
    assert exit_code_for(error) == code


def test_the_console_exits_75_for_a_retryable_error_and_2_for_a_user_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from spotsafe.cli import cli
    from spotsafe.cli import ls as ls_command

    def unreachable(url: str) -> object:
        raise errors.StorageError(f"could not list {url}: connection reset", retryable=True)

    with monkeypatch.context() as m:
        m.setattr(ls_command, "open_to_read", unreachable)
        flaky = CliRunner().invoke(cli, ["ls", "s3://bucket/run"])
    assert flaky.exit_code == 75, flaky.output
    assert flaky.output.startswith("spotsafe: could not list") and flaky.exception is not None
    bad = subprocess.run([sys.executable, "-m", "spotsafe.cli", "ls", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
