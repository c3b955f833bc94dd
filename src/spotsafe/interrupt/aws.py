"""AWS EC2 spot interruption notices over IMDSv2.

Protocol: ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` returns a
session token; each GET sends it as ``X-aws-ec2-metadata-token`` (401 = token expired, get a
new one). ``/latest/meta-data/spot/instance-action`` is 404 until AWS decides to interrupt, then
``{"action": "terminate"|"stop"|"hibernate", "time": "2026-11-29T03:40:00Z"}`` two minutes
ahead. ``/latest/meta-data/events/recommendations/rebalance`` (``{"noticeTime": ...}``) is an
earlier, softer warning: save now, keep training.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from spotsafe._http import Client, MetadataUnavailable, Response

# Where the metadata service is: one home for the endpoints (spotsafe.cloud probes them too).
from spotsafe.cloud import AWS_DEFAULT_ENDPOINT
from spotsafe.cloud import AWS_ENDPOINT_ENV as ENDPOINT_ENV
from spotsafe.cloud import AWS_TOKEN_PATH as TOKEN_PATH
from spotsafe.interrupt.request import StopKind, StopRequest
from spotsafe.interrupt.watcher import PollingWatcher, logger

__all__ = ["AWS_DEFAULT_ENDPOINT", "AwsWatcher"]

POLL_S = 5.0  # AWS recommends polling instance-action every 5 s
TOKEN_TTL_S = 21600  # 6 h, the IMDSv2 maximum; one PUT per 6 h
TOKEN_REFRESH_MARGIN_S = 60.0  # renew a minute before expiry rather than eat a 401
NOTICE_S = 120.0  # AWS gives two minutes; used when `time` is missing or unreadable
ACTIONS = ("terminate", "stop", "hibernate")

ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"


def parse_iso8601_utc(text: str) -> dt.datetime:
    """Parse AWS's ``2026-11-29T03:40:00Z``; ValueError if it is not such a time."""
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when


class AwsWatcher(PollingWatcher):
    """Watches EC2 IMDSv2 for the spot interruption notice and the rebalance recommendation.

    Args:
        endpoint: IMDS base URL (``$AWS_EC2_METADATA_SERVICE_ENDPOINT`` by default).
        interval_s: Seconds between polls.
        timeout_s: HTTP timeout per request, in seconds.
        clock: Monotonic clock, in seconds (deadlines are on it).
        wall_clock: Wall clock, seconds since the epoch (to convert AWS's ``time``).

    Example:
        >>> w = AwsWatcher(endpoint="http://127.0.0.1:1", timeout_s=0.2)
        >>> w.poll().requests  # nothing listens there: not a preemption
        ()
    """

    name = "aws"

    def __init__(
        self,
        *,
        endpoint: str = AWS_DEFAULT_ENDPOINT,
        interval_s: float = POLL_S,
        timeout_s: float = 2.0,
        token_ttl_s: int = TOKEN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval_s=interval_s, clock=clock)
        self.endpoint = endpoint.rstrip("/")
        self.token_ttl_s = token_ttl_s
        self.wall_clock = wall_clock
        self.http = Client(timeout_s=timeout_s)
        self._token: str | None = None
        self._token_expires_s = 0.0
        self._use_token = True  # False after a 403/404/405 on PUT: IMDSv1 only (as botocore)
        self._seen_actions: set[tuple[str, str]] = set()
        self._seen_rebalance: set[str] = set()

    @classmethod
    def from_env(cls, env: Mapping[str, str], **kwargs: Any) -> AwsWatcher:
        """Build with the endpoint from ``AWS_EC2_METADATA_SERVICE_ENDPOINT``."""
        return cls(endpoint=env.get(ENDPOINT_ENV) or AWS_DEFAULT_ENDPOINT, **kwargs)

    def abort(self) -> None:
        """Unblock a request in flight."""
        self.http.abort()

    def _check(self) -> list[StopRequest]:
        found: list[StopRequest] = []
        action = self._get(ACTION_PATH)
        if action is not None:
            r = self._action_request(action)
            if r is not None:
                found.append(r)
        rebalance = self._get(REBALANCE_PATH)
        if rebalance is not None:
            r = self._rebalance_request(rebalance)
            if r is not None:
                found.append(r)
        return found

    def _fetch_token(self) -> None:
        resp = self.http.request(
            "PUT",
            self.endpoint + TOKEN_PATH,
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl_s)},
        )
        if resp.status == 200 and resp.body.strip():
            self._token = resp.text().strip()
            self._token_expires_s = self.clock() + self.token_ttl_s - TOKEN_REFRESH_MARGIN_S
            return
        if resp.status in (403, 404, 405):
            # As botocore: no IMDSv2 here (or PUT blocked); try IMDSv1 GETs without a token.
            logger.info("aws: token PUT answered %d; falling back to IMDSv1", resp.status)
            self._use_token = False
            self._token = None
            return
        raise MetadataUnavailable(f"aws: token PUT answered {resp.status}: {resp.body[:200]!r}")

    def _get(self, path: str) -> Any:
        """GET ``path`` as JSON; None for 404 (no notice). Renews the token once on 401."""
        for attempt in range(2):
            if self._use_token and (self._token is None or self.clock() >= self._token_expires_s):
                self._fetch_token()
            headers = {"X-aws-ec2-metadata-token": self._token} if self._token else {}
            resp = self.http.request("GET", self.endpoint + path, headers=headers)
            if resp.status == 401 and attempt == 0:
                # Token expired or IMDSv2 now required: get a fresh one and retry once.
                self._token = None
                self._use_token = True
                continue
            return self._decode(path, resp)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _decode(path: str, resp: Response) -> Any:
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise MetadataUnavailable(f"aws: GET {path} answered {resp.status}")
        try:
            return json.loads(resp.text())
        except json.JSONDecodeError as e:
            raise MetadataUnavailable(f"aws: GET {path} is not JSON: {resp.body[:200]!r}") from e

    def _deadline_from(self, when: dt.datetime, now_s: float) -> float:
        return now_s + (when.timestamp() - self.wall_clock())

    def _action_request(self, doc: Any) -> StopRequest | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("action"), str):
            raise MetadataUnavailable(f"aws: instance-action without an action: {doc!r}")
        action = doc["action"]
        when_text = str(doc.get("time", ""))
        key = (action, when_text)
        if key in self._seen_actions:
            return None  # reported already; the notice stays up until the instance goes
        self._seen_actions.add(key)
        if action not in ACTIONS:
            # A new action name is still an interruption notice on this endpoint: stop.
            logger.warning("aws: unknown instance-action %r, treating it as a stop", action)
        now = self.clock()
        try:
            deadline = self._deadline_from(parse_iso8601_utc(when_text), now)
        except ValueError:
            logger.warning(
                "aws: unreadable instance-action time %r; assuming %.0f s", when_text, NOTICE_S
            )
            deadline = now + NOTICE_S
        return StopRequest(
            source="aws:instance-action",
            kind=StopKind.STOP,
            deadline_s=deadline,
            received_s=now,
            detail={"action": action, "time": when_text},
        )

    def _rebalance_request(self, doc: Any) -> StopRequest | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("noticeTime"), str):
            raise MetadataUnavailable(f"aws: rebalance recommendation without noticeTime: {doc!r}")
        notice = doc["noticeTime"]
        if notice in self._seen_rebalance:
            return None
        self._seen_rebalance.add(notice)
        return StopRequest(
            source="aws:rebalance-recommendation",
            kind=StopKind.SAVE_NOW,
            deadline_s=None,  # a recommendation, not a schedule: no deadline is promised
            received_s=self.clock(),
            detail={"noticeTime": notice},
        )
