"""The pytest side of tests/support/integrations_child.py: one child process for every
framework scenario and every integration module's docstring examples of a test session.

Importing Transformers, Lightning and Accelerate costs about 11 s of CPU together and about
25 s apart (most of it is torch's compiler stack, which all three import), so a session
starts the child once, for what its collected tests need: the framework test modules of
tests/integrations, and the docstring examples of :data:`FRAMEWORK_MODULES` that
tests/test_docstring_examples.py selected. The stop steps are random (each test prints its
own on failure).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# The integration modules whose import imports a framework: their docstring examples run in
# the child, which has imported it already.
FRAMEWORK_MODULES = (
    "spotsafe.integrations.accelerate",
    "spotsafe.integrations.lightning",
    "spotsafe.integrations.transformers",
)
# Each framework test module, its parts, and the stop steps each part's scenario draws from
# (the first step after the first periodic save, to the step before the last). Under DDP
# with Lightning (3 optimizer steps an epoch, a save every 3 that skips an epoch's end) the
# one step after a periodic save (4) that is not an epoch's last is 5.
TESTS = {
    "test_accelerate_resumes_exactly.py": {"accelerate": range(4, 8)},
    "test_lightning_callback_resumes_exactly.py": {"lightning": range(4, 12)},
    "test_transformers_trainer_resumes_exactly.py": {"transformers": range(4, 8)},
    "test_ddp_stops_and_resumes_exactly.py": {
        "accelerate_ddp": range(4, 8),
        "lightning_ddp": range(5, 6),
        "transformers_ddp": range(4, 8),
    },
}
DOCSTRING_TEST = "test_docstring_examples.py"

_RESULTS = pytest.StashKey[dict[str, Any]]()


def _plan(session: pytest.Session) -> dict[str, Any]:
    """What the collected tests of ``session`` need from the child."""
    plan: dict[str, Any] = {}
    doctests: set[str] = set()
    for item in session.items:
        name = item.path.name
        if name in TESTS:
            for part, stops in TESTS[name].items():
                plan.setdefault(part, random.Random().choice(stops))
        elif name == DOCSTRING_TEST:
            callspec = getattr(item, "callspec", None)
            if callspec is None:  # the test that counts every module's examples
                doctests |= set(FRAMEWORK_MODULES)
            elif callspec.params.get("name") in FRAMEWORK_MODULES:
                doctests.add(callspec.params["name"])
    if doctests:
        plan["doctest"] = sorted(doctests)
    return plan


def results(request: pytest.FixtureRequest, part: str) -> dict[str, Any]:
    """The child's results for ``part`` ("transformers", "lightning", "accelerate", each
    with "_ddp" too, "doctest"); the child runs once a session, at the first ask."""
    session = request.session
    if _RESULTS not in session.stash:
        work = request.getfixturevalue("tmp_path_factory").mktemp("integrations")
        session.stash[_RESULTS] = _run_child(work, _plan(session))
    everything = session.stash[_RESULTS]
    assert part in everything, f"the child was not asked for {part}: {sorted(everything)}"
    found: dict[str, Any] = everything[part]
    assert "error" not in found, found.get("error")
    return found


def _run_child(work: Path, plan: dict[str, Any]) -> dict[str, Any]:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        SPOTSAFE_CLOUD="none",  # no metadata probes
        SPOTSAFE_ALLOW_EPHEMERAL="1",  # stores under the test's tmp folder
    )
    for name in ("SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.integrations_child", str(work), json.dumps(plan)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    loaded: dict[str, Any] = json.loads((work / "results.json").read_text())
    return loaded
