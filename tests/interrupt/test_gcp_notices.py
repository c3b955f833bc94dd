"""GCP: hanging GET on instance/preempted with ETags, maintenance events, Metadata-Flavor."""

from __future__ import annotations

import threading
import time

import pytest

from spotsafe.interrupt import GcpWatcher, NoticeWatcher, StopFlag, StopKind
from spotsafe.interrupt.watcher import Poll

from .conftest import FakeClocks
from .metadata_servers import GcpMetadata

PREEMPTED = "/computeMetadata/v1/instance/preempted"


def test_first_poll_reads_then_hangs_with_the_etag(
    gcp_metadata: GcpMetadata, clocks: FakeClocks
) -> None:
    w = GcpWatcher(host=gcp_metadata.host, hang_s=10, clock=clocks.mono)
    first = w.poll()
    assert first.requests == ()
    assert first.next_poll_s == 0.0  # go straight into the hanging GET
    assert all(r.headers["metadata-flavor"] == "Google" for r in gcp_metadata.requests)

    results: list[Poll] = []
    t = threading.Thread(target=lambda: results.append(w.poll()))
    t.start()
    assert gcp_metadata.hanging.wait(5.0)  # the server holds the request
    assert t.is_alive()
    gcp_metadata.set("instance/preempted", "TRUE")
    t.join(5.0)
    (r,) = results[0].requests
    assert r.kind is StopKind.STOP
    assert r.source == "gcp:preempted"
    assert r.deadline_s == clocks.mono_s + 30.0
    hanging = gcp_metadata.seen("GET", PREEMPTED)[-1]
    assert hanging.query == {
        "wait_for_change": "true",
        "last_etag": GcpMetadata.etag("FALSE"),
        "timeout_sec": "10",
    }


def test_already_preempted_is_seen_on_the_first_poll(
    gcp_metadata: GcpMetadata, clocks: FakeClocks
) -> None:
    gcp_metadata.set("instance/preempted", "TRUE")
    w = GcpWatcher(host=gcp_metadata.host, hang_s=1, clock=clocks.mono)
    (r,) = w.poll().requests
    assert r.detail["preempted"] == "TRUE"
    assert w.poll().requests == ()  # reported once, though the value stays TRUE (1 s hang)


def test_hang_that_times_out_without_change_is_not_a_stop(
    gcp_metadata: GcpMetadata, clocks: FakeClocks
) -> None:
    w = GcpWatcher(host=gcp_metadata.host, hang_s=1, clock=clocks.mono)
    w.poll()
    result = w.poll()  # the server holds it 1 s, then answers FALSE with the same ETag
    assert result.requests == ()
    assert len(gcp_metadata.seen("GET", PREEMPTED)) == 2


def test_maintenance_terminate_stops(gcp_metadata: GcpMetadata, clocks: FakeClocks) -> None:
    w = GcpWatcher(host=gcp_metadata.host, hang_s=1, clock=clocks.mono)
    w.poll()
    gcp_metadata.set("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE")
    (r,) = w.poll().requests
    assert r.source == "gcp:maintenance-event"
    assert r.deadline_s == clocks.mono_s + 60.0
    assert r.detail == {"maintenance-event": "TERMINATE_ON_HOST_MAINTENANCE"}


def test_migrate_maintenance_is_not_a_stop(gcp_metadata: GcpMetadata, clocks: FakeClocks) -> None:
    gcp_metadata.set("instance/maintenance-event", "MIGRATE_ON_HOST_MAINTENANCE")
    w = GcpWatcher(host=gcp_metadata.host, clock=clocks.mono)
    assert w.poll().requests == ()
    assert w.last_error is None


def test_a_server_without_metadata_flavor_is_not_gcp(clocks: FakeClocks) -> None:
    with GcpMetadata(flavor=False) as impostor:
        impostor.set("instance/preempted", "TRUE")
        w = GcpWatcher(host=impostor.host, clock=clocks.mono)
        assert w.poll().requests == ()
        assert "Metadata-Flavor" in str(w.last_error)


def test_stop_interrupts_a_hanging_get_at_once(gcp_metadata: GcpMetadata) -> None:
    w = GcpWatcher(host=gcp_metadata.host, hang_s=60)
    notices = NoticeWatcher(StopFlag(), [w]).start()
    assert gcp_metadata.hanging.wait(5.0)
    started = time.monotonic()
    notices.stop(timeout_s=5.0)
    assert time.monotonic() - started < 1.0
    assert not notices.running


def test_a_notice_reaches_the_flag_through_the_thread(gcp_metadata: GcpMetadata) -> None:
    flag = StopFlag()
    with NoticeWatcher(flag, [GcpWatcher(host=gcp_metadata.host, hang_s=30)]):
        assert gcp_metadata.hanging.wait(5.0)
        assert flag.stop_requested is None
        gcp_metadata.set("instance/preempted", "TRUE")
        r = flag.wait(timeout_s=5.0)
    assert r is not None and r.source == "gcp:preempted"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_not_a_stop(
    gcp_metadata: GcpMetadata, clocks: FakeClocks, status: int
) -> None:
    gcp_metadata.fail_status = status
    w = GcpWatcher(host=gcp_metadata.host, clock=clocks.mono)
    assert w.poll().requests == ()
    assert w.last_error is not None
