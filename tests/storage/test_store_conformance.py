"""One behaviour for every store: a local path, memory://, a real S3-protocol server through
our S3 client and through the generic fsspec path (s3fs), and the two-tier staged store.

Each backend runs the same tests; object-store failure modes (a missing bucket, an
unreachable endpoint, credentials in messages) are at the end. A staged store lists what is
durable, so the tests let its uploads land (``flush``, a no-op elsewhere) before they list.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from spotsafe.errors import ConfigError, ObjectMissing, StorageError
from spotsafe.storage import StagedStore, Store, open_store
from spotsafe.storage.fsspec_store import FsspecStore
from tests.storage.conftest import FAST_RETRIES, PART
from tests.support.s3server import ACCESS_KEY, SECRET_KEY

BIG = 2 * PART + 12_345  # three parts on S3: multipart write, parallel ranged reads


@functools.cache
def _s3fs(endpoint_url: str) -> Any:
    import s3fs

    # One client for the session (s3fs takes a second to set one up); no listing cache, so
    # that a listing sees every write.
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint_url},
                             skip_instance_cache=True, use_listings_cache=False)  # fmt: skip


def fsspec_s3(endpoint_url: str, bucket: str) -> FsspecStore:
    """The generic fsspec path to an S3 bucket: s3fs, as any fsspec URL would be opened."""
    root = f"{bucket}/run-{uuid.uuid4().hex[:8]}"
    return FsspecStore(_s3fs(endpoint_url), root, f"s3://{root}")


BACKENDS = ["local", "memory", "s3", "fsspec-s3", "staged"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    if request.param == "local":
        yield open_store(tmp_path / "store")
    elif request.param == "memory":
        yield open_store(request.getfixturevalue("memory_url"))
    elif request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        yield open_store(
            f"s3://{bucket}/run-{uuid.uuid4().hex[:8]}", part_size=PART, **FAST_RETRIES
        )
    elif request.param == "fsspec-s3":
        server = request.getfixturevalue("s3_server")
        yield fsspec_s3(server.endpoint_url, request.getfixturevalue("s3_bucket"))
    else:
        staged = StagedStore(open_store(tmp_path / "durable"), tmp_path / "staging")
        yield staged
        staged.close()


def settled(store: Store) -> Store:
    """`store` once every write is where a listing looks (a staged store's uploads landed)."""
    store.flush()
    return store


def _payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_write_then_read_back(store: Store) -> None:
    data = _payload(10_000)
    chunks = [data[:10], bytearray(data[10:5000]), memoryview(np.frombuffer(data[5000:], np.uint8))]
    assert store.write("ckpt/a.bin", chunks) == len(data)
    assert store.read_bytes("ckpt/a.bin") == data
    assert store.read_range("ckpt/a.bin", 100, 250) == data[100:250]
    assert store.read_range("ckpt/a.bin", 9_990, 20_000) == data[9_990:]
    assert store.read_range("ckpt/a.bin", 20_000, 20_010) == b""


def test_big_object_round_trip(store: Store) -> None:
    data = _payload(BIG, seed=1)
    # Chunks that straddle part boundaries, as the Checkpointer's tensor spans do.
    view = memoryview(data)
    chunks = [view[i : i + 3_000_000] for i in range(0, BIG, 3_000_000)]
    assert store.write("ckpt/big.bin", chunks) == BIG
    out = np.zeros(BIG, np.uint8)
    store.read_into("ckpt/big.bin", memoryview(out))
    assert out.tobytes() == data
    head = bytearray(1000)
    store.read_into("ckpt/big.bin", memoryview(head))
    assert bytes(head) == data[:1000]


def test_read_into_a_longer_buffer_than_the_object_fails(store: Store) -> None:
    store.write_bytes("short", b"abc")
    with pytest.raises(StorageError):
        store.read_into("short", memoryview(bytearray(10)))


def test_empty_object(store: Store) -> None:
    assert store.write("empty", []) == 0
    assert store.read_bytes("empty") == b""
    assert settled(store).list() == {"empty": 0}


def test_list_gives_sizes_relative_to_the_root(store: Store) -> None:
    store.write_bytes("checkpoints/s1/MANIFEST", b"m" * 7)
    store.write_bytes("checkpoints/s1/data-000.bin", b"d" * 100)
    store.write_bytes("checkpoints/s2/data-000.bin", b"d" * 3)
    store.write_bytes("other/x", b"x")
    assert settled(store).list("checkpoints") == {
        "checkpoints/s1/MANIFEST": 7,
        "checkpoints/s1/data-000.bin": 100,
        "checkpoints/s2/data-000.bin": 3,
    }
    assert store.list("checkpoints/s1") == {
        "checkpoints/s1/MANIFEST": 7,
        "checkpoints/s1/data-000.bin": 100,
    }
    assert set(store.list()) == {
        "checkpoints/s1/MANIFEST",
        "checkpoints/s1/data-000.bin",
        "checkpoints/s2/data-000.bin",
        "other/x",
    }


def test_a_prefix_is_a_directory_not_a_string_prefix(store: Store) -> None:
    store.write_bytes("checkpoints-old/x", b"x")
    store.write_bytes("checkpoints/y", b"y")
    assert settled(store).list("checkpoints") == {"checkpoints/y": 1}


def test_an_absent_prefix_lists_empty(store: Store) -> None:
    assert store.list("nothing/here") == {}
    assert store.list() == {}


def test_delete(store: Store) -> None:
    store.write_bytes("d/a", b"1")
    store.write_bytes("d/b", b"22")
    store.write_bytes("d/c", b"333")
    settled(store).delete(["d/a", "d/b", "d/never-existed"])
    assert store.list("d") == {"d/c": 3}
    store.delete([])
    store.delete(["d/a"])  # already gone: fine
    assert store.list("d") == {"d/c": 3}


def test_missing_objects_raise_object_missing(store: Store) -> None:
    store.write_bytes("present", b"x")  # the root exists; only the object is missing
    with pytest.raises(ObjectMissing):
        store.read_bytes("absent")
    with pytest.raises(ObjectMissing):
        store.read_range("absent", 0, 10)
    with pytest.raises(ObjectMissing):
        store.read_into("absent", memoryview(bytearray(10)))
    with pytest.raises(ObjectMissing):
        store.read_into("absent", memoryview(bytearray(BIG)))


# ----------------------------------------------------------------- S3 failure modes


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_s3_url_is_routed_to_s3store_with_options(s3_bucket: str) -> None:
    from spotsafe.storage.s3 import S3Store

    store = open_store(f"s3://{s3_bucket}/p", part_size=PART, concurrency=3)
    assert isinstance(store, S3Store)
    assert (store.options.part_size, store.options.concurrency) == (PART, 3)
    # AWS_ENDPOINT_URL (set by the session fixture) is what reaches the server.
    store.write_bytes("x", b"1")
    assert store.list() == {"x": 1}


@pytest.mark.parametrize(
    "bad",
    [{"part_sise": PART}, {"part_size": 1024}, {"concurrency": 0}, {"retry_deadline_s": -1}],
)
def test_bad_s3_options_are_config_errors(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad)).replace("sise", "si[sz]e")):
        open_store("s3://bucket/run", **bad)


def test_unknown_option_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'part_size'"):
        open_store("s3://bucket/run", part_sise=PART)


@pytest.mark.parametrize("client", ["s3", "fsspec-s3"])
def test_a_missing_bucket_is_an_error_never_an_empty_store(s3_server, client: str) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    if client == "s3":
        store: Store = open_store(f"s3://{bucket}/run", **FAST_RETRIES)
    else:
        store = fsspec_s3(s3_server.endpoint_url, bucket)
    with pytest.raises(StorageError, match="does not exist") as info:
        store.list()
    assert info.value.retryable is False
    for op in (lambda: store.read_bytes("x"), lambda: store.write_bytes("x", b"1")):
        with pytest.raises(StorageError, match="does not exist") as info:
            op()
        assert not isinstance(info.value, ObjectMissing)  # a missing bucket is no missing file


@pytest.mark.parametrize("op", ["list", "write", "read"])
def test_unreachable_endpoint_fails_within_the_bound(op: str) -> None:
    store = open_store(
        "s3://bucket/run",
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        retry_deadline_s=1.0,
        backoff_base_s=0.05,
        backoff_max_s=0.2,
        connect_timeout_s=1.0,
    )
    calls = {
        "list": lambda: store.list(),
        "write": lambda: store.write_bytes("x", b"1"),
        "read": lambda: store.read_bytes("x"),
    }
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="gave up after") as info:
        calls[op]()
    assert time.monotonic() - t0 < 20.0  # bounded (unbounded: until the test's timeout)
    assert info.value.retryable is True
    assert not isinstance(info.value, ObjectMissing)


def test_credentials_never_appear_in_errors_or_logs(
    s3_bucket: str, proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spotsafe")
    store = open_store(f"s3://{s3_bucket}/run", endpoint_url=proxy.url, **FAST_RETRIES)
    messages = []
    # The proxy answers like AWS does to a bad signature: the key id is in the body.
    proxy.fail("403", times=1, method="PUT")
    with pytest.raises(StorageError) as info:
        store.write_bytes("x", b"1")
    assert info.value.retryable is False
    assert "credentials" in str(info.value)
    messages.append(str(info.value))
    proxy.fail("503", times=1, method="GET")  # logged at DEBUG, then retried
    store.write_bytes("y", b"2")
    assert store.read_bytes("y") == b"2"
    for url in (
        f"s3://{ACCESS_KEY}:{SECRET_KEY}@{s3_bucket}/run",
        f"s3://{ACCESS_KEY}:{SECRET_KEY.replace('/', '')}@{s3_bucket}/run",
    ):
        with pytest.raises(ConfigError) as cinfo:
            open_store(url)
        messages.append(str(cinfo.value))
    messages.extend(r.getMessage() for r in caplog.records)
    assert any("SlowDown" in m for m in messages)  # the retry was logged...
    for m in messages:  # ...and nothing anywhere names the credentials
        assert ACCESS_KEY not in m
        assert SECRET_KEY not in m


# The lease and the job record need "create unless it exists" with exactly one winner.


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
    assert len(settled(store).list("job")) == 1  # no temporary files left behind


def test_an_existing_object_is_never_replaced(store: Store) -> None:
    assert store.create_exclusive("a/b.json", b"first")
    assert not store.create_exclusive("a/b.json", b"second")
    assert store.read_bytes("a/b.json") == b"first"
