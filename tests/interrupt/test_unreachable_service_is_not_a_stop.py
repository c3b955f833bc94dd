"""A metadata service that is unreachable, slow or confused is not a preemption:
log once, back off, keep watching; the watcher thread never dies."""

from __future__ import annotations

import logging
import threading

import pytest

from spotsafe.interrupt import (
    AwsWatcher,
    AzureWatcher,
    GcpWatcher,
    NoticeWatcher,
    PollingWatcher,
    StopFlag,
    StopKind,
    StopRequest,
)
from spotsafe.interrupt.watcher import Poll

from .conftest import FakeClocks
from .metadata_servers import AwsImds, AzureImds, GcpMetadata, MetadataServer, closed_port_url


def make(cloud: str, url: str, clocks: FakeClocks, timeout_s: float) -> PollingWatcher:
    if cloud == "aws":
        return AwsWatcher(endpoint=url, timeout_s=timeout_s, clock=clocks.mono)
    if cloud == "gcp":
        return GcpWatcher(host=url.removeprefix("http://"), timeout_s=timeout_s, clock=clocks.mono)
    return AzureWatcher(endpoint=url, timeout_s=timeout_s, clock=clocks.mono)


def server(cloud: str) -> MetadataServer:
    return {"aws": AwsImds, "gcp": GcpMetadata, "azure": AzureImds}[cloud]()


CLOUDS = ["aws", "gcp", "azure"]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_closed_port_is_logged_once_and_backed_off(
    cloud: str, clocks: FakeClocks, caplog: pytest.LogCaptureFixture
) -> None:
    w = make(cloud, closed_port_url(), clocks, timeout_s=1.0)
    with caplog.at_level(logging.DEBUG, logger="spotsafe.interrupt"):
        polls = [w.poll() for _ in range(4)]
    assert all(p.requests == () for p in polls)
    delays = [p.next_poll_s for p in polls]
    assert delays == sorted(delays) and delays[-1] > delays[0]  # backs off
    assert w.failures == 4 and w.polls == 4  # kept polling
    assert len(warnings_of(caplog)) == 1  # logged once
    assert "not a preemption" in warnings_of(caplog)[0].getMessage()
    assert w.last_error is not None


@pytest.mark.parametrize("cloud", CLOUDS)
def test_slow_service_times_out_without_a_stop(
    cloud: str, clocks: FakeClocks, caplog: pytest.LogCaptureFixture
) -> None:
    with server(cloud) as srv:
        srv.delay_s = 5.0  # answers long after the 0.2 s timeout (released at close)
        w = make(cloud, srv.url, clocks, timeout_s=0.2)
        with caplog.at_level(logging.WARNING, logger="spotsafe.interrupt"):
            first, second = w.poll(), w.poll()
        assert first.requests == second.requests == ()
        assert "timed out" in str(w.last_error)
        assert len(warnings_of(caplog)) == 1
        assert len(srv.requests) == 2  # it did try again


@pytest.mark.parametrize("cloud", CLOUDS)
def test_recovery_is_logged_and_a_new_outage_warns_again(
    cloud: str, clocks: FakeClocks, caplog: pytest.LogCaptureFixture
) -> None:
    with server(cloud) as srv:
        w = make(cloud, srv.url, clocks, timeout_s=2.0)
        with caplog.at_level(logging.INFO, logger="spotsafe.interrupt"):
            srv.fail_status = 503
            w.poll()
            w.poll()
            srv.fail_status = None
            ok = w.poll()
            srv.fail_status = 500
            w.poll()
        assert ok.requests == () and w.failures == 1
        assert len(warnings_of(caplog)) == 2
        assert any("answers again" in r.getMessage() for r in caplog.records)


class Exploding(PollingWatcher):
    """A watcher with a bug: raises something no poll should."""

    name = "exploding"

    def __init__(self) -> None:
        super().__init__(interval_s=1.0, clock=lambda: 0.0)
        self.calls = 0
        self.third = threading.Event()

    def poll(self) -> Poll:
        self.calls += 1
        if self.calls >= 3:
            self.third.set()
        raise RuntimeError("bug")


class Counter(PollingWatcher):
    name = "counter"

    def __init__(self) -> None:
        super().__init__(interval_s=1.0, clock=lambda: 0.0)
        self.fire = threading.Event()

    def _check(self) -> list[StopRequest]:
        if not self.fire.is_set():
            return []
        return [StopRequest(source="test", kind=StopKind.STOP, deadline_s=None, received_s=0)]


def test_the_thread_survives_a_buggy_watcher(caplog: pytest.LogCaptureFixture) -> None:
    clocks = FakeClocks()
    bad, good = Exploding(), Counter()
    flag = StopFlag()
    slept = threading.Event()

    def sleep(seconds: float) -> None:
        clocks.sleep(seconds)
        slept.set()
        threading.Event().wait(0.001)  # yield to the test thread

    with (
        caplog.at_level(logging.ERROR, logger="spotsafe.interrupt"),
        NoticeWatcher(flag, [bad, good], clock=clocks.mono, sleep=sleep) as notices,
    ):
        assert bad.third.wait(5.0)  # polled again after the bug: the thread lives
        good.fire.set()
        assert flag.wait(timeout_s=5.0) is not None
        assert notices.running
    assert isinstance(notices.last_errors["exploding"], RuntimeError)
    assert len([r for r in caplog.records if r.exc_info]) == 1  # traceback logged once
    assert all(s > 0 for s in clocks.slept)


def test_stop_wakes_the_default_sleep_at_once() -> None:
    notices = NoticeWatcher(StopFlag(), [Counter()]).start()  # sleeps 1 s between polls
    assert notices.running
    stopped = threading.Event()
    threading.Thread(target=lambda: (notices.stop(timeout_s=5.0), stopped.set())).start()
    assert stopped.wait(0.5)
    assert not notices.running
