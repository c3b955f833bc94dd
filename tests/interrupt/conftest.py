"""Fixtures: fake clocks, and the loopback metadata servers (started per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .metadata_servers import AwsImds, AzureImds, GcpMetadata


class FakeClocks:
    """A monotonic and a wall clock that move together, only when told to."""

    def __init__(self, mono_s: float = 1000.0, wall_s: float = 1_796_000_000.0) -> None:
        self.mono_s = mono_s
        self.wall_s = wall_s
        self.slept: list[float] = []

    def mono(self) -> float:
        return self.mono_s

    def wall(self) -> float:
        return self.wall_s

    def advance(self, seconds: float) -> None:
        self.mono_s += seconds
        self.wall_s += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@pytest.fixture
def clocks() -> FakeClocks:
    return FakeClocks()


@pytest.fixture
def aws_imds() -> Iterator[AwsImds]:
    with AwsImds() as server:
        yield server


@pytest.fixture
def gcp_metadata() -> Iterator[GcpMetadata]:
    with GcpMetadata() as server:
        yield server


@pytest.fixture
def azure_imds() -> Iterator[AzureImds]:
    with AzureImds() as server:
        yield server
