"""Real HTTP metadata services on loopback, speaking the clouds' protocols.

Each server is a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` and a free port, served from
a daemon thread; tests start them (``with AwsImds() as imds: ...``) and point the watchers at
``imds.url``. They check what real services check (IMDSv2 token and TTL header, GCP's
``Metadata-Flavor: Google``, Azure's ``Metadata: true`` and ``StartRequests`` body) and record
every request for assertions. Faults: ``delay_s`` holds each answer (a slow service),
``fail_status`` answers every request with that status, ``garbage`` answers with those bytes.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


Answer = tuple[int, dict[str, str], bytes]


class MetadataServer:
    """Base: serves ``handle()`` on a free loopback port until closed."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.delay_s = 0.0
        self.fail_status: int | None = None
        self.garbage: bytes | None = None
        self.closing = threading.Event()  # releases delayed and hanging answers at shutdown
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    method=self.command,
                    path=parts.path,
                    query=dict(urllib.parse.parse_qsl(parts.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with server._lock:
                    server.requests.append(seen)
                if server.delay_s:
                    server.closing.wait(server.delay_s)
                if server.fail_status is not None:
                    status, headers, body = server.fail_status, {}, b"internal error"
                elif server.garbage is not None:
                    status, headers, body = 200, {}, server.garbage
                else:
                    status, headers, body = server.handle(seen)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout, abort): nothing left to answer

            do_GET = do_PUT = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self.port = self._httpd.server_address[1]
        # serve_forever checks for shutdown every poll_interval s; 50 ms keeps teardown quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        """The recorded requests, filtered by method and path."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def handle(self, req: Seen) -> Answer:
        raise NotImplementedError

    def __enter__(self) -> MetadataServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def _json(status: int, doc: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(doc).encode()


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "text/plain", **(headers or {})}, text.encode()


class AwsImds(MetadataServer):
    """EC2 IMDSv2: token PUT with a TTL header, token-checked GETs, spot notices."""

    def __init__(self, *, v2_required: bool = True) -> None:
        super().__init__()
        self.v2_required = v2_required
        self.tokens: set[str] = set()
        self.instance_action: dict[str, str] | None = None  # None: 404, no notice
        self.rebalance: dict[str, str] | None = None
        self.put_status: int | None = None  # force the token PUT's status (400, 403, 404)
        self.get_status: int | None = None  # force every GET's status (403, 500)

    def expire_tokens(self) -> None:
        """Invalidate every issued token, as when its TTL runs out (next GET: 401)."""
        self.tokens.clear()

    def handle(self, req: Seen) -> Answer:
        if req.method == "PUT" and req.path == "/latest/api/token":
            if self.put_status is not None:
                return _text(self.put_status, "forced")
            if "x-forwarded-for" in req.headers:
                return _text(403, "Forbidden")  # IMDS refuses tokens through a proxy
            ttl = req.headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return _text(400, "Bad Request")
            token = uuid.uuid4().hex
            self.tokens.add(token)
            return _text(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
        if req.method != "GET":
            return _text(405, "Method Not Allowed")
        token = req.headers.get("x-aws-ec2-metadata-token")
        if token is not None and token not in self.tokens:
            return _text(401, "Unauthorized")
        if token is None and self.v2_required:
            return _text(401, "Unauthorized")
        if self.get_status is not None:
            return _text(self.get_status, "forced")
        if req.path == "/latest/meta-data/instance-id":
            return _text(200, "i-0123456789abcdef0")
        if req.path == "/latest/meta-data/spot/instance-action" and self.instance_action:
            return _json(200, self.instance_action)
        if req.path == "/latest/meta-data/events/recommendations/rebalance" and self.rebalance:
            return _json(200, self.rebalance)
        return _text(404, "Not Found")


class GcpMetadata(MetadataServer):
    """GCE metadata server: ``Metadata-Flavor: Google`` both ways, ETags, hanging GETs."""

    def __init__(self, *, flavor: bool = True) -> None:
        super().__init__()
        self.flavor = flavor  # False: a server that is not GCP's (omits the header)
        self.values = {
            "instance/preempted": "FALSE",
            "instance/maintenance-event": "NONE",
            "instance/id": "4520031799277581759",
        }
        self.changed = threading.Condition()
        self.hanging = threading.Event()  # set when a wait_for_change request starts to hang

    def set(self, key: str, value: str) -> None:
        """Change a value and release the hanging GETs that wait on it."""
        with self.changed:
            self.values[key] = value
            self.changed.notify_all()

    @staticmethod
    def etag(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()[:16]

    def handle(self, req: Seen) -> Answer:
        head = {"Metadata-Flavor": "Google"} if self.flavor else {}
        if req.headers.get("metadata-flavor") != "Google":
            return _text(403, "Missing Metadata-Flavor:Google header.", head)
        prefix = "/computeMetadata/v1/"
        if not req.path.startswith(prefix):
            return _text(404, "Not Found", head)
        key = req.path[len(prefix) :]
        if key == "":
            return _text(200, "instance/\nproject/\n", head)
        if key not in self.values:
            return _text(404, "Not Found", head)
        if req.query.get("wait_for_change") == "true":
            last = req.query.get("last_etag")
            timeout_s = float(req.query.get("timeout_sec", "3600"))
            with self.changed:
                start = self.etag(self.values[key])
                wanted = last if last is not None else start
                self.hanging.set()
                self.changed.wait_for(
                    lambda: self.etag(self.values[key]) != wanted or self.closing.is_set(),
                    timeout=timeout_s,
                )
        value = self.values[key]
        return _text(200, value, {**head, "ETag": self.etag(value)})


class AzureImds(MetadataServer):
    """Azure IMDS: ``Metadata: true``, compute/name, Scheduled Events with StartRequests."""

    def __init__(self, *, vm_name: str = "spot-vm-1") -> None:
        super().__init__()
        self.vm_name = vm_name
        self.incarnation = 1
        self.events: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []  # the valid StartRequests bodies received

    def add_event(
        self,
        event_type: str = "Preempt",
        resources: list[str] | None = None,
        not_before: float | None = None,
        event_id: str | None = None,
    ) -> str:
        """Schedule an event (``not_before`` in epoch seconds; None: empty NotBefore)."""
        event_id = event_id or str(uuid.uuid4()).upper()
        self.events.append(
            {
                "EventId": event_id,
                "EventStatus": "Scheduled",
                "EventType": event_type,
                "ResourceType": "VirtualMachine",
                "Resources": resources if resources is not None else [self.vm_name],
                "NotBefore": ""
                if not_before is None
                else email.utils.formatdate(not_before, usegmt=True),
                "Description": "",
                "EventSource": "Platform",
                "DurationInSeconds": -1,
            }
        )
        self.incarnation += 1
        return event_id

    def handle(self, req: Seen) -> Answer:
        if req.headers.get("metadata") != "true":
            return _json(400, {"error": "Bad request. Required metadata header not specified"})
        if "api-version" not in req.query:
            return _json(400, {"error": "Bad request. api-version was not specified"})
        if req.method == "GET" and req.path == "/metadata/instance/compute/name":
            return _text(200, self.vm_name)
        if req.path != "/metadata/scheduledevents":
            return _json(404, {"error": "Not found"})
        if req.method == "GET":
            return _json(200, {"DocumentIncarnation": self.incarnation, "Events": self.events})
        if req.method == "POST":
            try:
                doc = json.loads(req.body)
                ids = [s["EventId"] for s in doc["StartRequests"]]
            except (ValueError, KeyError, TypeError):
                return _json(400, {"error": "Bad request. StartRequests malformed"})
            known = {e["EventId"] for e in self.events}
            if not ids or not set(ids) <= known:
                return _json(400, {"error": "Bad request. unknown EventId"})
            self.acks.append(doc)
            for e in self.events:
                if e["EventId"] in ids:
                    e["EventStatus"] = "Started"
            self.incarnation += 1
            return 200, {}, b""
        return _json(405, {"error": "Method not allowed"})


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
