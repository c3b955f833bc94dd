"""Azure Scheduled Events: ``Preempt`` (spot eviction) and ``Terminate`` for this VM.

Protocol: ``GET $BASE/metadata/scheduledevents?api-version=2020-07-01`` with ``Metadata: true``
returns ``{"DocumentIncarnation": n, "Events": [{"EventId", "EventType", "ResourceType",
"Resources": [vm names], "EventStatus", "NotBefore": RFC 1123 date, ...}]}``. Each event names
the VMs it hits; on a scale set the document lists events of other VMs too. Once the job is
ready, ``POST`` the same URL with ``{"StartRequests": [{"EventId": ...}]}`` so Azure proceeds
without waiting for ``NotBefore``.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from spotsafe._http import Client, MetadataUnavailable

# Where the metadata service is: one home for the endpoints (spotsafe.cloud probes them too).
from spotsafe.cloud import AZURE_DEFAULT_ENDPOINT
from spotsafe.cloud import AZURE_ENDPOINT_ENV as ENDPOINT_ENV
from spotsafe.cloud import AZURE_NAME_PATH as NAME_PATH
from spotsafe.interrupt.request import StopKind, StopRequest
from spotsafe.interrupt.watcher import PollingWatcher, logger

__all__ = ["AZURE_DEFAULT_ENDPOINT", "AzureWatcher"]

POLL_S = 1.0  # Azure suggests polling about once a second; Preempt gives >= 30 s notice
EVENTS_PATH = "/metadata/scheduledevents?api-version=2020-07-01"
# Reboot and Redeploy also end the process, but with 15 min / 10 min notice; pass stop_on to
# include them. Preempt (spot eviction) and Terminate are the ones that lose the VM.
STOP_EVENT_TYPES = frozenset({"Preempt", "Terminate"})


def parse_rfc1123(text: str) -> float:
    """Seconds since the epoch of ``Mon, 19 Sep 2016 18:29:47 GMT``; ValueError if unreadable."""
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError) as e:
        raise ValueError(f"not an RFC 1123 date: {text!r}") from e
    return when.timestamp()


class AzureWatcher(PollingWatcher):
    """Watches Azure Scheduled Events for a Preempt/Terminate naming this VM, and acknowledges.

    Args:
        endpoint: IMDS base URL (``$SPOTSAFE_AZURE_METADATA_ENDPOINT`` by default).
        vm_name: This VM's name; None asks IMDS (``compute/name``) on the first poll.
        stop_on: Event types that stop the job.
        interval_s: Seconds between polls.
        timeout_s: HTTP timeout per request, in seconds.
        clock: Monotonic clock, in seconds (deadlines are on it).
        wall_clock: Wall clock, seconds since the epoch (to convert ``NotBefore``).

    Example:
        >>> w = AzureWatcher(endpoint="http://127.0.0.1:1", vm_name="vm-0", timeout_s=0.2)
        >>> w.poll().requests  # nothing listens there: not a preemption
        ()
    """

    name = "azure"

    def __init__(
        self,
        *,
        endpoint: str = AZURE_DEFAULT_ENDPOINT,
        vm_name: str | None = None,
        stop_on: Iterable[str] = STOP_EVENT_TYPES,
        interval_s: float = POLL_S,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(interval_s=interval_s, clock=clock)
        self.endpoint = endpoint.rstrip("/")
        self.vm_name = vm_name
        self.stop_on = frozenset(stop_on)
        self.wall_clock = wall_clock
        self.http = Client(timeout_s=timeout_s)
        # Its own client: abort() (the watcher stopping) must not cancel the ack after a flush.
        self._ack_http = Client(timeout_s=timeout_s)
        self._lock = threading.Lock()  # acknowledge() runs on the Guard's thread
        self._reported: dict[str, StopRequest] = {}  # EventId -> request
        self._acknowledged: set[str] = set()

    @classmethod
    def from_env(cls, env: Mapping[str, str], **kwargs: Any) -> AzureWatcher:
        """Build with the endpoint from ``SPOTSAFE_AZURE_METADATA_ENDPOINT``."""
        return cls(endpoint=env.get(ENDPOINT_ENV) or AZURE_DEFAULT_ENDPOINT, **kwargs)

    def abort(self) -> None:
        """Unblock a request in flight."""
        self.http.abort()

    def _get_json(self, path: str) -> Any:
        resp = self.http.request("GET", self.endpoint + path, headers={"Metadata": "true"})
        if resp.status != 200:
            raise MetadataUnavailable(f"azure: GET {path} answered {resp.status}")
        try:
            return json.loads(resp.text())
        except json.JSONDecodeError as e:
            raise MetadataUnavailable(f"azure: GET {path} is not JSON: {resp.body[:200]!r}") from e

    def _own_name(self) -> str:
        if self.vm_name is None:
            resp = self.http.request("GET", self.endpoint + NAME_PATH, headers={"Metadata": "true"})
            name = resp.text().strip() if resp.status == 200 else ""
            if not name:
                raise MetadataUnavailable(f"azure: could not read this VM's name ({resp.status})")
            self.vm_name = name
        return self.vm_name

    def _check(self) -> list[StopRequest]:
        me = self._own_name()
        doc = self._get_json(EVENTS_PATH)
        events = doc.get("Events") if isinstance(doc, dict) else None
        if not isinstance(events, list):
            raise MetadataUnavailable(f"azure: scheduled events without an Events list: {doc!r}")
        found: list[StopRequest] = []
        for ev in events:
            if not isinstance(ev, dict):
                raise MetadataUnavailable(f"azure: scheduled event is not an object: {ev!r}")
            event_id = str(ev.get("EventId", ""))
            kind = str(ev.get("EventType", ""))
            resources = ev.get("Resources") or []
            if not event_id or kind not in self.stop_on:
                continue
            if not isinstance(resources, list) or me not in resources:
                logger.debug("azure: %s %s is for %s, not %s", kind, event_id, resources, me)
                continue
            with self._lock:
                if event_id in self._reported:
                    continue
            r = self._request(ev, event_id, kind)
            with self._lock:
                self._reported[event_id] = r
            found.append(r)
        return found

    def _request(self, ev: Mapping[str, Any], event_id: str, kind: str) -> StopRequest:
        now = self.clock()
        not_before = str(ev.get("NotBefore") or "")
        if not_before:
            try:
                deadline = now + (parse_rfc1123(not_before) - self.wall_clock())
            except ValueError:
                logger.warning("azure: unreadable NotBefore %r; assuming it is now", not_before)
                deadline = now
        else:
            deadline = now  # an empty NotBefore means the event has started
        return StopRequest(
            source=f"azure:{kind}",
            kind=StopKind.STOP,
            deadline_s=deadline,
            received_s=now,
            detail={
                "event_id": event_id,
                "event_type": kind,
                "not_before": not_before,
                "event_status": str(ev.get("EventStatus", "")),
                "vm_name": self.vm_name or "",
            },
        )

    def acknowledge(self, request: StopRequest | None = None) -> bool:
        """Approve the reported events so Azure proceeds now; call after the flush.

        Args:
            request: One request from this watcher (``detail["event_id"]``); None approves
                every event reported and not yet acknowledged. Requests of other sources are
                ignored.

        Returns:
            Whether the acknowledgement succeeded, True when there was nothing to acknowledge.
            Never raises for a service error: the event then simply starts at ``NotBefore``.
        """
        with self._lock:
            if request is None:
                ids = [i for i in self._reported if i not in self._acknowledged]
            else:
                event_id = request.detail.get("event_id")
                if not request.source.startswith("azure:") or not event_id:
                    return True
                ids = [] if event_id in self._acknowledged else [event_id]
        if not ids:
            return True
        body = json.dumps({"StartRequests": [{"EventId": i} for i in ids]}).encode()
        try:
            resp = self._ack_http.request(
                "POST",
                self.endpoint + EVENTS_PATH,
                headers={"Metadata": "true", "Content-Type": "application/json"},
                body=body,
            )
        except MetadataUnavailable as e:
            self._last_error = e
            logger.warning("azure: could not acknowledge %s: %s", ids, e)
            return False
        if resp.status != 200:
            self._last_error = MetadataUnavailable(f"azure: ack answered {resp.status}")
            logger.warning("azure: acknowledging %s answered %d", ids, resp.status)
            return False
        with self._lock:
            self._acknowledged.update(ids)
        logger.info("azure: acknowledged scheduled events %s", ids)
        return True
