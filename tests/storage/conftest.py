"""Fixtures for the storage tests: a real S3-protocol server and a fault-injecting proxy.

moto is imported inside the session fixture, so only tests that ask for S3 pay for it.
"""

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


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the server, one per test."""
    from tests.support.fault_proxy import FaultProxy

    with FaultProxy(s3_server.endpoint_url) as p:
        yield p
