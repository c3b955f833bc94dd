"""The lease and the job record need "create unless it exists" with exactly one winner."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from spotsafe.storage import Store, open_store


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path, memory_url: str) -> Store:
    return open_store(str(tmp_path / "s") if request.param == "local" else memory_url)


def test_exactly_one_of_many_racing_writers_wins(store: Store) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        results.append(store.create_exclusive("job/lease/000001/holder.json", b"%d" % i))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.read_bytes("job/lease/000001/holder.json").isdigit()
    assert len(store.list("job")) == 1  # no temporary files left behind


def test_an_existing_object_is_never_replaced(store: Store) -> None:
    assert store.create_exclusive("a/b.json", b"first")
    assert not store.create_exclusive("a/b.json", b"second")
    assert store.read_bytes("a/b.json") == b"first"
