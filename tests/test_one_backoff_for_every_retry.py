"""One backoff and one retry loop (spotsafe.backoff) for every part that tries again: the
supervisor's restarts, the S3 store's requests, the staging uploader, the supervisor's looks
at a live store and the notice watchers. Time, sleep and randomness are injected."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from spotsafe import backoff as backoff_module
from spotsafe.backoff import Backoff, retry_call
from spotsafe.errors import ConfigError, ObjectMissing, StorageError
from spotsafe.interrupt import AwsWatcher
from spotsafe.interrupt import watcher as watcher_module
from spotsafe.policy import Backoff as PolicyBackoff
from spotsafe.policy import RetryPolicy
from spotsafe.policy.pools import PRESETS
from spotsafe.storage import StagedStore
from spotsafe.storage.local import LocalStore
from spotsafe.storage.s3 import S3Options, S3Store
from spotsafe.supervisor import progress


class FakeTime:
    """A clock that moves only when slept on (and a little per look, like real time)."""

    def __init__(self, tick_s: float = 0.0) -> None:
        self.now = 0.0
        self.tick_s = tick_s
        self.slept: list[float] = []

    def clock(self) -> float:
        self.now += self.tick_s
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_every_retrying_part_uses_the_one_backoff() -> None:
    # Before: the watchers had their own Backoff class, the S3 store and the uploader their
    # own arithmetic, the supervisor's looks a tuple of pauses.
    assert PolicyBackoff is Backoff
    assert isinstance(RetryPolicy.from_pool(PRESETS["standard"]).failure_backoff, Backoff)
    assert isinstance(S3Options().backoff, Backoff)
    assert isinstance(progress.LOOK_AGAIN, Backoff)
    assert isinstance(AwsWatcher(endpoint="http://127.0.0.1:1").backoff, Backoff)
    assert isinstance(watcher_module.BUG_BACKOFF, Backoff)
    assert not hasattr(watcher_module, "Backoff") or watcher_module.Backoff is Backoff


def test_the_schedule_doubles_caps_and_jitters_from_the_injected_rng() -> None:
    b = Backoff(initial_s=1.0, max_s=30.0, multiplier=2.0, jitter=0.0)
    assert [b.delay_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay_s(10**9) == 30.0  # no overflow, however long the streak
    zero = Backoff(initial_s=0.0, max_s=10.0)
    assert zero.delay_s(5000, rng=random.Random(0)) == 0.0
    jittery = Backoff(initial_s=10.0, max_s=10.0, jitter=1.0)
    state = random.getstate()
    delays = [jittery.delay_s(1, rng=random.Random(7)) for _ in range(3)]
    assert random.getstate() == state  # the global RNG (the training's) is never drawn
    assert len(set(delays)) == 1 and 0 < delays[0] <= 10.0
    with pytest.raises(ValueError, match="needs an rng"):
        jittery.delay_s(1)
    with pytest.raises(ConfigError, match="max_s"):
        Backoff(initial_s=5.0, max_s=1.0)


def test_retry_call_stops_at_the_deadline_the_attempt_limit_or_a_fatal_error() -> None:
    t = FakeTime()
    calls: list[int] = []

    def always(n: int) -> None:
        calls.append(n)
        raise StorageError("throttled", retryable=True)

    b = Backoff(initial_s=1.0, max_s=4.0, jitter=0.0)
    with pytest.raises(StorageError, match="throttled"):
        retry_call(always, backoff=b, deadline_s=10.0, clock=t.clock, sleep=t.sleep)
    assert t.slept == [1.0, 2.0, 4.0] and calls == [1, 2, 3, 4]  # 7 s slept; +4 s is past 10

    t, calls[:] = FakeTime(), []
    with pytest.raises(StorageError):
        retry_call(always, backoff=b, max_attempts=2, clock=t.clock, sleep=t.sleep)
    assert calls == [1, 2] and t.slept == [1.0]

    def fatal(n: int) -> None:
        raise StorageError("denied", retryable=False)

    t = FakeTime()
    with pytest.raises(StorageError, match="denied"):
        retry_call(fatal, backoff=b, clock=t.clock, sleep=t.sleep)
    assert t.slept == []

    def gave_up(e: Exception, attempts: int, elapsed_s: float) -> Exception:
        return RuntimeError(f"gave up after {attempts} in {elapsed_s:g} s: {e}")

    t = FakeTime()
    with pytest.raises(RuntimeError, match="gave up after 4 in 7 s: throttled"):
        retry_call(always, backoff=b, deadline_s=10.0, clock=t.clock, sleep=t.sleep,
                   on_give_up=gave_up)  # fmt: skip


class _Unreachable:
    """A botocore client whose every request fails like a refused connection."""

    def __init__(self) -> None:
        self.calls = 0

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        raise ConnectionError("connection refused")


def test_s3_retries_with_no_backoff_end_at_the_deadline_not_in_an_overflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # backoff_base_s = 0 is allowed; with a fast failure (a refused connection) the old loop
    # reached 2.0 ** 1024 after ~1000 tries and died in an OverflowError instead of giving up.
    t = FakeTime(tick_s=0.0005)
    store = S3Store("s3://bucket/run", backoff_base_s=0, backoff_max_s=0, retry_deadline_s=1.0,
                    clock=t.clock, sleep=t.sleep)  # fmt: skip
    client = _Unreachable()
    monkeypatch.setattr(store, "_make_client", lambda: client)
    with pytest.raises(StorageError, match="gave up after") as info:
        store.list()
    assert info.value.retryable is True
    assert client.calls > 1100


def test_s3_retries_draw_full_jitter_from_the_stores_own_rng(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = FakeTime()
    store = S3Store("s3://bucket/run", backoff_base_s=1.0, backoff_max_s=8.0, retry_deadline_s=30.0,
                    clock=t.clock, sleep=t.sleep, rng=random.Random(3))  # fmt: skip
    monkeypatch.setattr(store, "_make_client", _Unreachable)
    state = random.getstate()
    with pytest.raises(StorageError, match="gave up after"):
        store.list()
    assert random.getstate() == state
    expected = Backoff(initial_s=1.0, max_s=8.0, multiplier=2.0, jitter=1.0)
    rng = random.Random(3)
    assert t.slept == [expected.delay_s(n, rng=rng) for n in range(1, len(t.slept) + 1)]
    assert sum(t.slept) <= 30.0


class _FailingStore(LocalStore):
    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def write(self, path, chunks):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise StorageError(f"injected failure writing {path}")
        return super().write(path, chunks)


def test_the_uploader_backs_off_by_its_backoff_and_starts_over_after_a_success(
    tmp_path: Path,
) -> None:
    slept: list[float] = []
    durable = _FailingStore(tmp_path / "durable", failures=4)
    staged = StagedStore(durable, tmp_path / "staging", sleep=slept.append,
                         backoff=Backoff(initial_s=3.0, max_s=10.0, jitter=0.0))  # fmt: skip
    staged.write_bytes("a.bin", b"1")
    for _ in range(5):
        try:
            staged.flush()
            break
        except StorageError:
            continue
    durable.failures = 1
    staged.write_bytes("b.bin", b"2")
    for _ in range(3):
        try:
            staged.flush()
            break
        except StorageError:
            continue
    staged.close()
    assert slept == [3.0, 6.0, 10.0, 10.0, 3.0]
    assert durable.read_bytes("b.bin") == b"2"


def test_the_supervisors_looks_again_follow_its_backoff() -> None:
    t = FakeTime()
    errors = iter([ObjectMissing("pruned"), StorageError("SlowDown", retryable=True)])

    def read() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "settled"

    assert progress.look_again(read, sleep=t.sleep, what="look") == "settled"
    assert t.slept == [progress.LOOK_AGAIN.delay_s(1), progress.LOOK_AGAIN.delay_s(2)]
    with pytest.raises(StorageError, match="denied"):
        progress.look_again(
            lambda: (_ for _ in ()).throw(StorageError("denied", retryable=False)),
            sleep=t.sleep,
            what="look",
        )


def test_a_failing_watcher_backs_off_to_the_cap() -> None:
    w = AwsWatcher(endpoint="http://127.0.0.1:1", interval_s=5.0, timeout_s=0.05)
    waits = [w.poll().next_poll_s for _ in range(5)]
    assert waits == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert backoff_module.MAX_DELAY_S >= watcher_module.MAX_BACKOFF_S
