"""The examples in docstrings run, so they cannot rot; and they are there, so this test
cannot pass by running nothing.

Every module of the package is collected; each one runs its examples and must fail none.
Every module is expected to carry examples unless it is listed below with the reason it
has none; a listed module that gains examples must leave the list, so the list stays true.

The integration modules that import a framework (Transformers, Lightning, Accelerate) run
their examples in the session's one integrations child process, which imports the three
frameworks once for tests/integrations too (tests/support/integrations_runs.py): imported
here, they would cost this process seconds of CPU and stay loaded for the rest of the suite.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import pkgutil

import pytest

import spotsafe
from tests.support import integrations_runs

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(spotsafe.__path__, "spotsafe.")
    if not m.name.endswith("__main__")
)

# Floors, not targets: a collection or discovery that breaks shows up as a drop. Raise them
# as the package grows (69 modules and 250 examples when this was written).
MIN_MODULES = 60
MIN_EXAMPLES = 230

# Modules without examples, and why. Package __init__ files only re-export; private modules
# (a `_` in the name) and the CLI's subcommands (tested through the command line) are not
# public surface. The rest are engine modules still owed an example.
REEXPORTS = {"spotsafe.checkpoint", "spotsafe.interrupt", "spotsafe.policy", "spotsafe.storage",
             "spotsafe.supervisor"}  # fmt: skip
CLI_COMMANDS = {f"spotsafe.cli.{c}" for c in ("chaos", "ls", "pools", "run", "verify")}
OWED = {
    "spotsafe.checkpoint.claim",
    "spotsafe.checkpoint.distributed",
    "spotsafe.checkpoint.fetch",
    "spotsafe.checkpoint.layout",
    "spotsafe.checkpoint.ranks",
    "spotsafe.checkpoint.reader",
    "spotsafe.checkpoint.snapshot",
    "spotsafe.checkpoint.tree",
    "spotsafe.checkpoint.writer",
    "spotsafe.rng",
}
WITHOUT_EXAMPLES = REEXPORTS | CLI_COMMANDS | OWED


def _private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


@functools.cache
def run_examples(name: str) -> doctest.TestResults:
    module = importlib.import_module(name)
    return doctest.testmod(module, optionflags=doctest.ELLIPSIS)


def examples(name: str, request: pytest.FixtureRequest) -> doctest.TestResults:
    """The results of ``name``'s examples, run here or in the integrations child."""
    if name not in integrations_runs.FRAMEWORK_MODULES:
        return run_examples(name)
    ran = integrations_runs.results(request, "doctest")[name]
    print(ran["output"])  # doctest's report of a failure, shown by pytest
    return doctest.TestResults(ran["failed"], ran["attempted"])


@pytest.fixture(autouse=True)
def _quiet_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTSAFE_CLOUD", "none")  # examples build Guards: no metadata probes


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, request: pytest.FixtureRequest) -> None:
    result = examples(name, request)
    assert result.failed == 0
    if name in WITHOUT_EXAMPLES or _private(name):
        assert result.attempted == 0 or _private(name), (
            f"{name} has examples now: take it off the list in this test"
        )
    else:
        assert result.attempted > 0, f"{name} has no docstring example (or list it here, why)"


def test_the_examples_are_found_and_run(request: pytest.FixtureRequest) -> None:
    assert len(MODULES) >= MIN_MODULES, MODULES
    assert set(MODULES) >= WITHOUT_EXAMPLES, WITHOUT_EXAMPLES - set(MODULES)
    total = sum(examples(name, request).attempted for name in MODULES)
    assert total >= MIN_EXAMPLES, f"only {total} docstring examples ran"
