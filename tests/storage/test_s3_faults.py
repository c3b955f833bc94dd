"""S3 under faults, through a real proxy between the client and a real S3-protocol server.

After every fault a save has either committed or failed clearly within its bound; a reader
never sees a partial checkpoint; and storage retries never touch the global RNGs that
bitwise-exact resume depends on.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

import spotsafe
from spotsafe.checkpoint.checkpointer import Status
from spotsafe.errors import StorageError
from spotsafe.storage import Store, open_store
from tests.storage.conftest import FAST_RETRIES, PART

PARTS = "partNumber="  # in the query of every UploadPart
THREE_PARTS = 2 * PART + 4321


def _store(bucket: str, proxy: Any, **options: Any) -> Store:
    opts: dict[str, Any] = {"part_size": PART, **FAST_RETRIES, **options}
    return open_store(f"s3://{bucket}/run-{uuid.uuid4().hex[:8]}", endpoint_url=proxy.url, **opts)


def _payload(n: int) -> bytes:
    return np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()


def _global_rng_states() -> tuple[Any, ...]:
    return random.getstate(), repr(np.random.get_state()), torch.get_rng_state().clone()


def _assert_same_rng_states(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert before[0] == after[0], "python's random module was drawn from"
    assert before[1] == after[1], "numpy's global RNG was drawn from"
    assert torch.equal(before[2], after[2]), "torch's CPU RNG was drawn from"


# ------------------------------------------------------------------ multipart and ranges


def test_multipart_is_engaged_above_the_part_size(s3_bucket: str, proxy) -> None:
    store = _store(s3_bucket, proxy)
    store.write("at-part-size", [_payload(PART)])
    assert proxy.count(method="PUT", query=PARTS) == 0  # exactly one part: one PUT
    store.write("above", [_payload(PART + 1)])
    assert proxy.count(method="PUT", query=PARTS) == 2
    assert proxy.count(method="POST", query="uploads") == 1
    assert store.list() == {"at-part-size": PART, "above": PART + 1}


def test_parts_upload_in_parallel_within_the_concurrency(s3_bucket: str, proxy) -> None:
    store = _store(s3_bucket, proxy, concurrency=2)
    proxy.track("PUT", PARTS)
    proxy.fail("slow", times=99, method="PUT", query=PARTS, delay_s=0.3)
    data = _payload(4 * PART + 1)
    store.write("x", [data])
    assert proxy.count(method="PUT", query=PARTS) == 4  # equal parts: no 1-byte fifth one
    assert proxy.max_inflight("PUT", PARTS) == 2  # parallel, and never more than asked


def test_big_reads_are_parallel_ranged_gets(s3_bucket: str, proxy) -> None:
    store = _store(s3_bucket, proxy)
    data = _payload(THREE_PARTS)
    store.write("x", [data])
    out = bytearray(len(data))
    store.read_into("x", memoryview(out))
    assert out == data
    ranges = {s.range for s in proxy.requests(method="GET") if s.path.endswith("/x")}
    assert ranges == {
        f"bytes=0-{PART - 1}",
        f"bytes={PART}-{2 * PART - 1}",
        f"bytes={2 * PART}-{THREE_PARTS - 1}",
    }


# ------------------------------------------------------------------ transient faults

TRANSIENT = [
    pytest.param("503", "PUT", PARTS, 3, id="slowdown-on-parts"),
    pytest.param("500", "POST", "uploads", 2, id="500-on-create"),
    pytest.param("500", "POST", "uploadId=", 2, id="500-on-complete"),
    pytest.param("reset", "PUT", PARTS, 2, id="reset-before-part"),
    pytest.param("reset_after", "PUT", PARTS, 2, id="lost-part-response"),
    pytest.param("reset_after", "POST", "uploadId=", 1, id="lost-complete-response"),
    pytest.param("slow", "PUT", PARTS, 1, id="part-timeout"),
]


@pytest.mark.parametrize(("fault", "method", "query", "times"), TRANSIENT)
def test_a_write_rides_out_transient_faults(
    s3_bucket: str, s3_server, proxy, fault: str, method: str, query: str, times: int
) -> None:
    store = _store(s3_bucket, proxy, read_timeout_s=0.5)
    rule = proxy.fail(fault, times=times, method=method, query=query, delay_s=1.5)
    data = _payload(THREE_PARTS)
    before = _global_rng_states()
    assert store.write("x", [data]) == len(data)
    _assert_same_rng_states(before, _global_rng_states())
    assert rule.fired == times
    assert store.read_bytes("x") == data
    assert s3_server.multipart_uploads(s3_bucket) == []


@pytest.mark.parametrize("fault", ["503", "500", "reset", "slow"])
def test_reads_and_listings_ride_out_transient_faults(s3_bucket: str, proxy, fault: str) -> None:
    store = _store(s3_bucket, proxy, read_timeout_s=0.5)
    data = _payload(THREE_PARTS)
    store.write("x", [data])
    store.write_bytes("small", b"abc")
    rule = proxy.fail(fault, times=4, method="GET", delay_s=1.5)
    before = _global_rng_states()
    out = bytearray(len(data))
    store.read_into("x", memoryview(out))
    assert out == data
    assert store.read_bytes("small") == b"abc"
    assert store.list() == {"x": len(data), "small": 3}
    _assert_same_rng_states(before, _global_rng_states())
    assert rule.fired == 4


def test_the_client_itself_never_retries(s3_bucket: str, proxy) -> None:
    """With no time to retry, one 503 fails the write: botocore has no hidden retries
    (whose jitter would draw from python's global random)."""
    store = _store(s3_bucket, proxy, retry_deadline_s=0)
    proxy.fail("503", times=1, method="PUT")
    with pytest.raises(StorageError, match="SlowDown"):
        store.write_bytes("x", b"1")
    assert proxy.count(method="PUT") == 1


# ------------------------------------------------------------------ failures past the bound

# Far below what the failure it guards against takes (retrying for 30 s or forever), far above
# what a loaded 2-core machine needs (the suite once took 4 s here for a 1 s deadline).
UNBOUNDED_S = 20.0


def test_a_persistent_outage_fails_within_the_bound_and_aborts(
    s3_bucket: str, s3_server, proxy
) -> None:
    store = _store(s3_bucket, proxy, retry_deadline_s=1.0)
    proxy.fail("503", times=10**6, method="PUT", query=PARTS)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="gave up after") as info:
        store.write("x", [_payload(THREE_PARTS)])
    # Bounded by the 1 s deadline, not by the machine: unbounded, it would retry the 10**6
    # failures until the test's timeout. A generous margin keeps a loaded machine green.
    assert time.monotonic() - t0 < UNBOUNDED_S
    assert info.value.retryable is True
    assert store.list() == {}
    assert proxy.count(method="DELETE", query="uploadId=") == 1
    assert s3_server.multipart_uploads(s3_bucket) == []  # no orphan parts


def test_a_fatal_error_is_not_retried(s3_bucket: str, s3_server, proxy) -> None:
    store = _store(s3_bucket, proxy, retry_deadline_s=30.0)
    proxy.fail("403", times=1, method="PUT", query="partNumber=2")
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="credentials") as info:
        store.write("x", [_payload(THREE_PARTS)])
    assert time.monotonic() - t0 < UNBOUNDED_S  # not retried for the 30 s deadline
    assert info.value.retryable is False
    assert proxy.count(method="PUT", query="partNumber=2") == 1
    assert s3_server.multipart_uploads(s3_bucket) == []


def test_a_failing_chunk_source_aborts_the_upload(s3_bucket: str, s3_server, proxy) -> None:
    store = _store(s3_bucket, proxy)

    def chunks() -> Any:
        yield _payload(PART + 10)
        raise RuntimeError("tensor copy failed")

    with pytest.raises(RuntimeError):
        store.write("x", chunks())
    assert store.list() == {}
    assert s3_server.multipart_uploads(s3_bucket) == []
    store.write("y", [_payload(3 * PART)])  # and no part buffer was leaked
    store.write("z", [_payload(3 * PART)])


# ------------------------------------------------------------------ checkpoints on S3


@pytest.fixture
def checkpointer(proxy) -> Iterator[Callable[[Store], spotsafe.Checkpointer]]:
    """Checkpointers closed (their pending events written) while the proxy still runs."""
    made: list[spotsafe.Checkpointer] = []

    def make(store: Store) -> spotsafe.Checkpointer:
        made.append(spotsafe.Checkpointer(store, keep_last=2))
        return made[-1]

    yield make
    proxy.clear()
    for c in made:
        c.close()


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))
    # ~12 MiB of state: the data file is uploaded in parts.
    model.register_buffer("table", torch.randn(3 * 1024 * 1024))
    return model


def _state(model: torch.nn.Module, step: int) -> spotsafe.TrainState:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 8)).sum().backward()
    opt.step()
    state = spotsafe.TrainState(model=model, optimizer=opt)
    state.step = step
    return state


def test_exact_restore_of_a_checkpoint_saved_through_faults(
    s3_bucket: str, proxy, checkpointer
) -> None:
    store = _store(s3_bucket, proxy)
    ckpt = checkpointer(store)
    model = _model()
    state = _state(model, step=5)
    proxy.fail("503", times=3, method="PUT", query=PARTS)
    proxy.fail("reset", times=1, method="PUT", path=r"MANIFEST\.json$")
    before = _global_rng_states()
    ckpt.save(state)
    _assert_same_rng_states(before, _global_rng_states())
    assert proxy.count(method="PUT", query=PARTS) > 3  # the multipart path was taken

    fresh = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))
    fresh.register_buffer("table", torch.zeros(3 * 1024 * 1024))
    restored = spotsafe.TrainState(
        model=fresh, optimizer=torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    )
    proxy.fail("503", times=2, method="GET")
    info = checkpointer(store).restore(restored)
    assert info is not None and info.step == 5
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    momentum = [s["momentum_buffer"] for s in restored.objects["optimizer"].state.values()]
    assert len(momentum) == 4 and all(m is not None for m in momentum)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param({"method": "PUT", "query": PARTS}, id="data-parts"),
        pytest.param({"method": "PUT", "path": r"MANIFEST\.json$"}, id="manifest"),
        pytest.param({"method": "POST", "query": "uploadId="}, id="complete"),
    ],
)
def test_a_failed_save_is_never_seen_as_a_checkpoint(
    s3_bucket: str, proxy, checkpointer, target: dict[str, str]
) -> None:
    store = _store(s3_bucket, proxy, retry_deadline_s=0.5)
    ckpt = checkpointer(store)
    model = _model()
    ckpt.save(_state(model, step=1))
    model.table.add_(1.0)  # new bytes: the big data file is written again (not incremental)
    proxy.fail("503", times=10**6, **target)
    with pytest.raises(StorageError):
        ckpt.save(_state(model, step=2))
    proxy.clear()

    reader = checkpointer(store)
    listing = reader.checkpoints()
    assert [c.step for c in listing if c.status is Status.VALID] == [1]
    fresh = _model()
    info = reader.restore(spotsafe.TrainState(model=fresh))
    assert info is not None and info.step == 1


# ------------------------------------------------------------------ progress of long retries


class _Clock:
    """A fake monotonic clock; each retry pause also stands for a request that took 5 s."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds + 5.0


def test_a_long_retry_says_so_rate_limited(
    s3_bucket: str, proxy, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    store = _store(s3_bucket, proxy, retry_deadline_s=120.0, clock=clock, sleep=clock.sleep)
    store.write_bytes("x", b"abc")
    proxy.fail("503", times=16, method="GET")  # ~80 s of failures on the fake clock
    with caplog.at_level(logging.INFO, logger="spotsafe"):
        assert store.read_bytes("x") == b"abc"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying ")]
    # Said once past 10 s, then at most every 30 s: not once per retry (16 of them).
    assert 2 <= len(lines) <= 3, lines
    assert lines[0].startswith(f"retrying read {store.url}/x: 1") and " s of 120 s (" in lines[0]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.getMessage() in lines)


def test_a_short_retry_stays_quiet(s3_bucket: str, proxy, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(s3_bucket, proxy)
    store.write_bytes("x", b"abc")
    proxy.fail("503", times=2, method="GET")
    with caplog.at_level(logging.INFO, logger="spotsafe"):
        assert store.read_bytes("x") == b"abc"
    assert not [r for r in caplog.records if r.getMessage().startswith("retrying ")]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("retry_deadline_s", 1e300),
        ("retry_deadline_s", float("inf")),  # was accepted: retried for ever
        ("backoff_max_s", 1e300),
        ("read_timeout_s", float("nan")),
        ("connect_timeout_s", 1e9),
        ("concurrency", 10**6),
    ],
)
def test_s3_options_have_upper_bounds(option: str, value: float) -> None:
    from spotsafe.errors import ConfigError
    from spotsafe.storage.s3 import S3Options

    with pytest.raises(ConfigError, match=rf"^{option}="):
        S3Options(**{option: value})
