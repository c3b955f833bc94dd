"""GCP preemption and host-maintenance notices from the Compute Engine metadata server.

Protocol: ``GET http://$GCE_METADATA_HOST/computeMetadata/v1/instance/preempted`` with
``Metadata-Flavor: Google``; every answer carries ``Metadata-Flavor: Google`` and an ``ETag``.
With ``wait_for_change=true&last_etag=E&timeout_sec=T`` the server holds the request until the
value's ETag differs from ``E`` (or ``T`` seconds pass), so a change is seen the moment it
happens. ``preempted`` turns ``TRUE`` about 30 s before the VM stops;
``instance/maintenance-event`` turns ``TERMINATE_ON_HOST_MAINTENANCE`` 60 s before a terminate.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from spotsafe._http import Client, MetadataUnavailable, Response

# Where the metadata service is: one home for the endpoints (spotsafe.cloud probes them too).
from spotsafe.cloud import GCP_DEFAULT_HOST
from spotsafe.cloud import GCP_HOST_ENV as HOST_ENV
from spotsafe.interrupt.request import StopKind, StopRequest
from spotsafe.interrupt.watcher import PollingWatcher

__all__ = ["GCP_DEFAULT_HOST", "GcpWatcher"]

PREEMPT_NOTICE_S = 30.0  # GCP: preempted turns TRUE 30 s before the ACPI shutdown
MAINTENANCE_NOTICE_S = 60.0  # GCP: 60 s notice before a TERMINATE_ON_HOST_MAINTENANCE
HANG_S = 5  # hanging GET timeout_sec; bounds how late other watchers in the thread are polled
# A server that ignores wait_for_change answers at once; never re-poll faster than this (s).
MIN_REPOLL_S = 1.0

PREEMPTED = "instance/preempted"
MAINTENANCE = "instance/maintenance-event"
TERMINATE = "TERMINATE_ON_HOST_MAINTENANCE"


class GcpWatcher(PollingWatcher):
    """Watches ``instance/preempted`` (hanging GET) and ``instance/maintenance-event``.

    Args:
        host: Metadata server ``host[:port]`` (``$GCE_METADATA_HOST`` by default), plain HTTP.
        hang_s: ``timeout_sec`` of the hanging GET, in seconds.
        timeout_s: HTTP timeout in seconds, added to ``hang_s`` for the hanging GET.
        clock: Monotonic clock, in seconds.

    Example:
        >>> w = GcpWatcher(host="127.0.0.1:1", timeout_s=0.2)
        >>> w.poll().requests  # nothing listens there: not a preemption
        ()
    """

    name = "gcp"

    def __init__(
        self,
        *,
        host: str = GCP_DEFAULT_HOST,
        hang_s: int = HANG_S,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval_s=MIN_REPOLL_S, clock=clock)
        self.base = f"http://{host}/computeMetadata/v1/"
        self.hang_s = hang_s
        self.http = Client(timeout_s=timeout_s)
        self._preempted_etag: str | None = None
        self._reported: set[str] = set()
        self._next_s = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], **kwargs: Any) -> GcpWatcher:
        """Build with the host from ``GCE_METADATA_HOST``."""
        return cls(host=env.get(HOST_ENV) or GCP_DEFAULT_HOST, **kwargs)

    def abort(self) -> None:
        """Unblock the hanging GET in flight."""
        self.http.abort()

    def _get(self, key: str, query: Mapping[str, str] | None = None) -> Response:
        url = self.base + key
        if query:
            url += "?" + urllib.parse.urlencode(query)
        wait = bool(query and query.get("wait_for_change") == "true")
        resp = self.http.request(
            "GET",
            url,
            headers={"Metadata-Flavor": "Google"},
            timeout_s=self.http.timeout_s + (self.hang_s if wait else 0),
        )
        # The header proves we talk to a GCE metadata server, not some other service there.
        if resp.header("Metadata-Flavor") != "Google":
            raise MetadataUnavailable(f"gcp: {key}: answer lacks 'Metadata-Flavor: Google'")
        if resp.status != 200:
            raise MetadataUnavailable(f"gcp: GET {key} answered {resp.status}")
        return resp

    def _check(self) -> list[StopRequest]:
        found: list[StopRequest] = []
        started = self.clock()
        maintenance = self._get(MAINTENANCE).text().strip()
        if maintenance == TERMINATE and maintenance not in self._reported:
            self._reported.add(maintenance)
            found.append(
                self._request(
                    "gcp:maintenance-event",
                    MAINTENANCE_NOTICE_S,
                    {"maintenance-event": maintenance},
                )
            )
        if found:
            return found  # report at once; don't hang on preempted while a stop waits
        query = {}
        if self._preempted_etag is not None:
            query = {
                "wait_for_change": "true",
                "last_etag": self._preempted_etag,
                "timeout_sec": str(self.hang_s),
            }
        resp = self._get(PREEMPTED, query)
        etag = resp.header("ETag")
        value = resp.text().strip()
        changed = etag != self._preempted_etag
        self._preempted_etag = etag
        if value == "TRUE" and "preempted" not in self._reported:
            self._reported.add("preempted")
            found.append(
                self._request(
                    "gcp:preempted", PREEMPT_NOTICE_S, {"preempted": value, "etag": etag or ""}
                )
            )
        # After a real hang (or a change) poll again at once; a server that answered
        # immediately with nothing new is not hanging, so don't spin on it.
        quick = self.clock() - started < MIN_REPOLL_S
        self._next_s = MIN_REPOLL_S if (quick and not changed and query) else 0.0
        return found

    def _next_poll_s(self) -> float:
        return self._next_s

    def _request(self, source: str, notice_s: float, detail: dict[str, str]) -> StopRequest:
        now = self.clock()
        return StopRequest(
            source=source,
            kind=StopKind.STOP,
            deadline_s=now + notice_s,
            received_s=now,
            detail=detail,
        )
