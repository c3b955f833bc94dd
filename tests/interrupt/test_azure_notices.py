"""Azure Scheduled Events: Preempt/Terminate for this VM, other VMs ignored, acknowledgement."""

from __future__ import annotations

import json

import pytest

from spotsafe.interrupt import AzureWatcher, NoticeWatcher, StopFlag, StopKind

from .conftest import FakeClocks
from .metadata_servers import AzureImds

EVENTS = "/metadata/scheduledevents"


def watcher(imds: AzureImds, clocks: FakeClocks) -> AzureWatcher:
    return AzureWatcher(endpoint=imds.url, clock=clocks.mono, wall_clock=clocks.wall)


def test_quiet_vm_polls_every_second_with_the_metadata_header(
    azure_imds: AzureImds, clocks: FakeClocks
) -> None:
    w = watcher(azure_imds, clocks)
    result = w.poll()
    assert result.requests == ()
    assert result.next_poll_s == 1.0
    assert w.vm_name == "spot-vm-1"  # read from IMDS compute/name
    (get,) = azure_imds.seen("GET", EVENTS)
    assert get.headers["metadata"] == "true"
    assert get.query == {"api-version": "2020-07-01"}
    assert w.last_error is None


@pytest.mark.parametrize("event_type", ["Preempt", "Terminate"])
def test_event_for_this_vm_stops_by_not_before(
    azure_imds: AzureImds, clocks: FakeClocks, event_type: str
) -> None:
    event_id = azure_imds.add_event(event_type, not_before=clocks.wall_s + 30.0)
    w = watcher(azure_imds, clocks)
    (r,) = w.poll().requests
    assert r.kind is StopKind.STOP
    assert r.source == f"azure:{event_type}"
    assert r.deadline_s == pytest.approx(clocks.mono_s + 30.0)
    assert r.detail["event_id"] == event_id
    assert r.detail["vm_name"] == "spot-vm-1"
    assert w.poll().requests == ()  # reported once


def test_event_for_another_vm_is_ignored(azure_imds: AzureImds, clocks: FakeClocks) -> None:
    azure_imds.add_event("Preempt", resources=["spot-vm-2"], not_before=clocks.wall_s + 30)
    azure_imds.add_event("Freeze", not_before=clocks.wall_s + 30)  # this VM, but not a stop
    w = watcher(azure_imds, clocks)
    assert w.poll().requests == ()
    assert w.last_error is None


def test_configured_vm_name_skips_the_lookup(azure_imds: AzureImds, clocks: FakeClocks) -> None:
    azure_imds.add_event("Preempt", resources=["spot-vm-2"], not_before=clocks.wall_s + 30)
    w = AzureWatcher(endpoint=azure_imds.url, vm_name="spot-vm-2", clock=clocks.mono)
    (r,) = w.poll().requests
    assert r.detail["vm_name"] == "spot-vm-2"
    assert azure_imds.seen("GET", "/metadata/instance/compute/name") == []


def test_started_event_with_empty_not_before_is_due_now(
    azure_imds: AzureImds, clocks: FakeClocks
) -> None:
    azure_imds.add_event("Preempt", not_before=None)
    (r,) = watcher(azure_imds, clocks).poll().requests
    assert r.deadline_s == clocks.mono_s


def test_acknowledge_posts_start_requests(azure_imds: AzureImds, clocks: FakeClocks) -> None:
    event_id = azure_imds.add_event("Preempt", not_before=clocks.wall_s + 30)
    other = azure_imds.add_event("Preempt", resources=["spot-vm-2"])
    flag = StopFlag()
    w = watcher(azure_imds, clocks)
    notices = NoticeWatcher(flag, [w])
    for r in w.poll().requests:
        flag.request(r)
    stop = flag.stop_requested
    assert stop is not None
    assert notices.acknowledge(stop) is True
    (post,) = azure_imds.seen("POST", EVENTS)
    assert post.headers["metadata"] == "true"
    assert json.loads(post.body) == {"StartRequests": [{"EventId": event_id}]}
    assert azure_imds.acks == [{"StartRequests": [{"EventId": event_id}]}]
    assert other not in post.body.decode()
    assert w.acknowledge() is True  # nothing left: no second POST
    assert len(azure_imds.seen("POST", EVENTS)) == 1


def test_acknowledge_all_after_the_watcher_stopped(
    azure_imds: AzureImds, clocks: FakeClocks
) -> None:
    event_id = azure_imds.add_event("Preempt", not_before=clocks.wall_s + 30)
    flag = StopFlag()
    w = watcher(azure_imds, clocks)
    with NoticeWatcher(flag, [w]) as notices:
        assert flag.wait(timeout_s=5.0) is not None
    assert notices.acknowledge() is True  # the Guard acks after the flush, watcher stopped
    assert azure_imds.acks == [{"StartRequests": [{"EventId": event_id}]}]


def test_acknowledge_failure_is_reported_not_raised(clocks: FakeClocks) -> None:
    with AzureImds() as imds:
        imds.add_event("Preempt", not_before=clocks.wall_s + 30)
        w = watcher(imds, clocks)
        assert len(w.poll().requests) == 1
    # The service is gone by the time the flush is done.
    assert w.acknowledge() is False
    assert w.last_error is not None


def test_missing_metadata_header_would_be_refused(azure_imds: AzureImds) -> None:
    # The server really checks the header the watcher sends (guards the other tests' meaning).
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(azure_imds.url + EVENTS + "?api-version=2020-07-01", timeout=5)
    assert e.value.code == 400
