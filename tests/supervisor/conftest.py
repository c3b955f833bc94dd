"""Shared pieces for the supervisor tests: a fast pool, and the supervisor as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHILD = [sys.executable, "-m", "tests.supervisor.scripted_child"]


def write_pool(path: Path, **settings: object) -> Path:
    """A config file with pool `fast`: tiny backoff, no jitter, plus `settings`."""
    values: dict[str, object] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.02, "jitter": 0,
                                 "grace_s": 2, "lease_ttl_s": 2, **settings}  # fmt: skip
    lines = ["[pools.fast]", *(f"{k} = {v!r}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), SPOTSAFE_CLOUD="none",
               SPOTSAFE_ALLOW_EPHEMERAL="1")  # fmt: skip
    for name in ("SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL"):
        env.pop(name, None)
    env.update(extra)
    return env


@pytest.fixture
def spawn_supervisor() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``spotsafe run`` as a real process; every one still running is killed after."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(store: Path, config: Path, *command: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "spotsafe.cli", "run", "--store", str(store),
                "--config", str(config), "--pool", "fast", "--", *command]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO, env=child_env())  # fmt: skip
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
