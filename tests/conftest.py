"""Test-wide fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _allow_ephemeral_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    # Test stores live under tmp_path and memory://; the guard itself has its own tests.
    monkeypatch.setenv("SPOTSAFE_ALLOW_EPHEMERAL", "1")
    for name in ("SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A uuid-scoped memory:// root: fsspec's memory store is global to the process."""
    import fsspec

    root = f"memory://spotsafe-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
