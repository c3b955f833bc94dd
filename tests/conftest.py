"""Test-wide fixtures, among them the one real S3-protocol server (moto) of the whole session.

moto is imported inside the session fixture, so only tests that ask for S3 pay for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.s3server import S3Server


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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's ThreadedMotoServer on 127.0.0.1 and a free port, with the AWS_* environment set."""
    from tests.support.s3server import running_s3_server

    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh uuid-named bucket on the session's server."""
    return s3_server.create_bucket()
