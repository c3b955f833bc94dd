"""Fixtures for the storage tests: a fault-injecting proxy in front of the session's S3-protocol
server (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.fault_proxy import FaultProxy
    from tests.support.s3server import S3Server

# Small parts keep the multipart tests fast; 5 MiB is S3's (and moto's) smallest part.
PART = 5 * 1024 * 1024
# Tests retry fast and give up within seconds, not the production two minutes.
FAST_RETRIES = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "retry_deadline_s": 5.0}


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the server, one per test."""
    from tests.support.fault_proxy import FaultProxy

    with FaultProxy(s3_server.endpoint_url) as p:
        yield p
