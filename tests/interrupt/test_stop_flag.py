"""StopFlag: STOP keeps the earliest deadline, SAVE_NOW is separate and consumable."""

from __future__ import annotations

import threading

import pytest

from spotsafe.interrupt import StopFlag, StopKind, StopRequest


def stop(source: str, deadline_s: float | None, received_s: float = 0.0) -> StopRequest:
    return StopRequest(
        source=source, kind=StopKind.STOP, deadline_s=deadline_s, received_s=received_s
    )


def test_no_request_means_no_stop() -> None:
    flag = StopFlag()
    assert flag.stop_requested is None
    assert flag.take_save_now() is None
    assert flag.stop_requests == ()


def test_stop_keeps_the_earliest_deadline_and_every_request() -> None:
    flag = StopFlag()
    late = stop("signal:SIGTERM", 130.0)
    early = stop("aws:instance-action", 110.0, received_s=1.0)
    unknown = stop("file:/tmp/stop", None, received_s=2.0)
    for r in (late, early, unknown):
        flag.request(r)
    assert flag.stop_requested is early
    assert flag.stop_requests == (late, early, unknown)


def test_a_deadline_beats_no_deadline() -> None:
    flag = StopFlag()
    flag.request(stop("file:/x", None))
    flag.request(stop("gcp:preempted", 30.0))
    got = flag.stop_requested
    assert got is not None and got.source == "gcp:preempted"


def test_save_now_does_not_stop_and_is_consumed_once() -> None:
    flag = StopFlag()
    first = StopRequest(
        source="aws:rebalance-recommendation",
        kind=StopKind.SAVE_NOW,
        deadline_s=None,
        received_s=5.0,
    )
    flag.request(first)
    flag.request(
        StopRequest(source="aws:other", kind=StopKind.SAVE_NOW, deadline_s=None, received_s=6.0)
    )
    assert flag.stop_requested is None
    assert flag.take_save_now() is first  # two warnings between steps: one save
    assert flag.take_save_now() is None


def test_wait_returns_when_another_thread_requests() -> None:
    flag = StopFlag()
    r = stop("aws:instance-action", 10.0)
    threading.Timer(0.05, flag.request, args=(r,)).start()
    assert flag.wait(timeout_s=5.0) is r


def test_wait_times_out_with_none() -> None:
    assert StopFlag().wait(timeout_s=0.05) is None


def test_request_is_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match="source"):
        stop("", 1.0)
    with pytest.raises(ValueError, match="deadline_s"):
        stop("x", float("nan"))
    detail = {"action": "stop"}
    r = StopRequest(
        source="aws:instance-action",
        kind=StopKind.STOP,
        deadline_s=None,
        received_s=0.0,
        detail=detail,
    )
    detail["action"] = "changed"
    assert r.detail["action"] == "stop"
    with pytest.raises(TypeError):
        r.detail["action"] = "x"  # type: ignore[index]
    assert r.remaining_s(5.0) is None
    assert stop("x", 30.0).remaining_s(40.0) == -10.0
