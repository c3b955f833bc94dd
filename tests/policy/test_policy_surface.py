"""The policy package's public surface, its docstring examples, and what it may import."""

from __future__ import annotations

import ast
import doctest
import subprocess
import sys
from pathlib import Path

import pytest

import spotsafe.policy
from spotsafe.policy import interval, pools, retry

POLICY_DIR = Path(spotsafe.policy.__file__).parent


def _isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_public_surface_is_pinned_and_sorted() -> None:
    assert spotsafe.policy.__all__ == [
        "PRESETS",
        "AttemptRecord",
        "Auto",
        "Backoff",
        "Budget",
        "Done",
        "EverySeconds",
        "EverySteps",
        "ExitClass",
        "GiveUp",
        "IntervalState",
        "MaxLostWork",
        "Pool",
        "Prices",
        "Restart",
        "RetryPolicy",
        "RetryState",
        "SaveNow",
        "Wait",
        "classify_exit",
        "daly_interval_s",
        "format_pools",
        "get_pool",
        "load_pools",
        "mtbi_estimate",
        "pool_from_env",
        "young_interval_s",
    ]
    # Sorted as ruff (RUF022) and isort sort: CONSTANTS, then Classes, then functions.
    assert spotsafe.policy.__all__ == sorted(spotsafe.policy.__all__, key=_isort_key)
    for name in spotsafe.policy.__all__:
        assert hasattr(spotsafe.policy, name), name


@pytest.mark.parametrize("module", [interval, pools, retry], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("path", sorted(POLICY_DIR.glob("*.py")), ids=lambda p: p.name)
def test_policy_imports_only_the_standard_library_and_spotsafe_basics(path: Path) -> None:
    # `spotsafe simulate` and `spotsafe report` import these modules: no torch, no numpy, no
    # third-party packages (tomli only on 3.10, where tomllib is missing).
    # spotsafe.backoff (the one backoff) and spotsafe.env (the supervisor's environment) are
    # standard-library modules below every layer.
    allowed_spotsafe = {"spotsafe.errors", "spotsafe.policy", "spotsafe.backoff", "spotsafe.env"}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top == "spotsafe":
                assert any(module.startswith(a) for a in allowed_spotsafe), module
            else:
                assert top in sys.stdlib_module_names or top == "tomli", module


def test_policies_do_not_import_randomness_or_clocks() -> None:
    # Time and randomness are parameters: a policy that imported them could read them.
    for path in POLICY_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module}
            else:
                continue
            assert not names & {"random", "time", "datetime"}, f"{path.name} imports {names}"


def test_importing_policy_does_not_import_torch() -> None:
    code = "import sys, spotsafe.policy; sys.exit(1 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
