"""AWS IMDSv2: token flow, its 400/401/403/404 answers, spot notices and rebalance."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from spotsafe.interrupt import AwsWatcher, StopKind

from .conftest import FakeClocks
from .metadata_servers import AwsImds

ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
TOKEN = "/latest/api/token"
NOTICE_TIME = dt.datetime(2026, 11, 29, 3, 40, tzinfo=dt.timezone.utc).timestamp()


def watcher(imds: AwsImds, clocks: FakeClocks) -> AwsWatcher:
    return AwsWatcher(endpoint=imds.url, timeout_s=2.0, clock=clocks.mono, wall_clock=clocks.wall)


def test_quiet_instance_uses_a_token_and_finds_nothing(
    aws_imds: AwsImds, clocks: FakeClocks
) -> None:
    w = watcher(aws_imds, clocks)
    result = w.poll()
    assert result.requests == ()
    assert result.next_poll_s == 5.0  # AWS's advice
    puts = aws_imds.seen("PUT", TOKEN)
    assert len(puts) == 1
    assert puts[0].headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    token = next(iter(aws_imds.tokens))
    gets = aws_imds.seen("GET", ACTION)
    assert [g.headers.get("x-aws-ec2-metadata-token") for g in gets] == [token]
    assert w.last_error is None
    w.poll()
    assert len(aws_imds.seen("PUT", TOKEN)) == 1  # the token is reused


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_instance_action_stops_with_the_deadline_from_time(
    aws_imds: AwsImds, clocks: FakeClocks, action: str
) -> None:
    w = watcher(aws_imds, clocks)
    assert w.poll().requests == ()
    clocks.wall_s = NOTICE_TIME - 120.0  # the notice's time is two minutes from "now"
    aws_imds.instance_action = {"action": action, "time": "2026-11-29T03:40:00Z"}
    (r,) = w.poll().requests
    assert r.kind is StopKind.STOP
    assert r.source == "aws:instance-action"
    assert r.received_s == clocks.mono_s
    assert r.deadline_s == pytest.approx(clocks.mono_s + 120.0)
    assert r.detail == {"action": action, "time": "2026-11-29T03:40:00Z"}
    assert w.poll().requests == ()  # the notice stays up; it is reported once


def test_expired_token_is_renewed_on_401(aws_imds: AwsImds, clocks: FakeClocks) -> None:
    w = watcher(aws_imds, clocks)
    w.poll()
    aws_imds.expire_tokens()
    aws_imds.instance_action = {"action": "terminate", "time": "2026-11-29T03:40:00Z"}
    (r,) = w.poll().requests
    assert r.detail["action"] == "terminate"
    assert len(aws_imds.seen("PUT", TOKEN)) == 2
    sent = [g.headers.get("x-aws-ec2-metadata-token") for g in aws_imds.seen("GET", ACTION)]
    assert len(sent) == 3  # ok, 401 with the old token, ok with the new one
    assert sent[2] in aws_imds.tokens and sent[1] not in aws_imds.tokens


def test_token_is_renewed_before_its_ttl_runs_out(aws_imds: AwsImds, clocks: FakeClocks) -> None:
    w = AwsWatcher(endpoint=aws_imds.url, token_ttl_s=600, clock=clocks.mono)
    w.poll()
    clocks.advance(500.0)
    w.poll()
    assert len(aws_imds.seen("PUT", TOKEN)) == 1
    clocks.advance(50.0)  # within the 60 s margin before expiry
    w.poll()
    assert len(aws_imds.seen("PUT", TOKEN)) == 2


def test_400_on_token_put_is_an_error_not_a_stop(
    aws_imds: AwsImds, clocks: FakeClocks, caplog: pytest.LogCaptureFixture
) -> None:
    aws_imds.put_status = 400
    aws_imds.instance_action = {"action": "terminate", "time": "2026-11-29T03:40:00Z"}
    w = watcher(aws_imds, clocks)
    with caplog.at_level(logging.WARNING, logger="spotsafe.interrupt"):
        results = [w.poll() for _ in range(3)]
    assert all(r.requests == () for r in results)
    assert [r.next_poll_s for r in results] == [5.0, 10.0, 20.0]  # backs off
    assert "400" in str(w.last_error)
    assert w.failures == 3
    assert len(caplog.records) == 1  # logged once
    aws_imds.put_status = None
    (r,) = w.poll().requests  # keeps watching, and sees the notice once it can
    assert r.detail["action"] == "terminate"
    assert w.failures == 0


def test_403_everywhere_means_imds_is_off_not_a_stop(aws_imds: AwsImds, clocks: FakeClocks) -> None:
    aws_imds.put_status = 403
    aws_imds.get_status = 403
    aws_imds.v2_required = False
    w = watcher(aws_imds, clocks)
    assert w.poll().requests == ()
    assert "403" in str(w.last_error)


def test_put_404_falls_back_to_imdsv1(aws_imds: AwsImds, clocks: FakeClocks) -> None:
    aws_imds.put_status = 404
    aws_imds.v2_required = False
    aws_imds.instance_action = {"action": "stop", "time": "2026-11-29T03:40:00Z"}
    w = watcher(aws_imds, clocks)
    (r,) = w.poll().requests
    assert r.detail["action"] == "stop"
    assert "x-aws-ec2-metadata-token" not in aws_imds.seen("GET", ACTION)[0].headers


def test_rebalance_only_asks_to_save_now_once(aws_imds: AwsImds, clocks: FakeClocks) -> None:
    aws_imds.rebalance = {"noticeTime": "2026-11-29T03:30:00Z"}
    w = watcher(aws_imds, clocks)
    (r,) = w.poll().requests
    assert r.kind is StopKind.SAVE_NOW
    assert r.source == "aws:rebalance-recommendation"
    assert r.deadline_s is None
    assert r.detail == {"noticeTime": "2026-11-29T03:30:00Z"}
    assert w.poll().requests == ()
    aws_imds.rebalance = {"noticeTime": "2026-11-29T04:30:00Z"}  # a new recommendation
    (again,) = w.poll().requests
    assert again.kind is StopKind.SAVE_NOW


def test_garbage_answer_is_not_a_stop(aws_imds: AwsImds, clocks: FakeClocks) -> None:
    w = watcher(aws_imds, clocks)
    w.poll()  # gets a token first
    aws_imds.garbage = b"\x00\xffnot json"
    assert w.poll().requests == ()
    assert w.last_error is not None


def test_unreadable_time_still_stops_with_two_minutes(
    aws_imds: AwsImds, clocks: FakeClocks
) -> None:
    aws_imds.instance_action = {"action": "terminate", "time": "soon"}
    (r,) = watcher(aws_imds, clocks).poll().requests
    assert r.deadline_s == clocks.mono_s + 120.0
