"""A real HTTP proxy on loopback that injects S3 faults between a client and a server.

The client is pointed at the proxy as its endpoint; the proxy forwards every request to the
upstream server unchanged (the Host header included, so signatures stay valid) and relays
the response, unless a rule says otherwise. Rules match on method, path and query and fire
a given number of times:

- ``"503"``: a real ``503 SlowDown`` XML error (the request never reaches the server);
- ``"500"``: a ``500 InternalError``;
- ``"reset"``: the connection is reset (RST) before the request is forwarded;
- ``"reset_after"``: the request *is* applied upstream, then the connection is reset, so the
  client never learns that it succeeded (a lost response);
- ``"slow"``: the response is held for ``delay_s`` seconds;
- ``"403"``: a ``403 SignatureDoesNotMatch`` whose body echoes the access key id, as AWS does.

Every request is recorded (method, path, query, Range header, status), with the most
requests in flight at once per matching filter.

Example::

    with FaultProxy(upstream) as proxy:
        proxy.fail("503", times=2, method="PUT", query="partNumber=")
        ...
        assert proxy.count(method="PUT", query="partNumber=") >= 2
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("503", "500", "reset", "reset_after", "slow", "403")

_ERROR_BODIES = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass
class Rule:
    """Inject ``fault`` into the next ``times`` requests that match."""

    fault: str
    times: int
    method: str | None = None
    path: str | None = None  # a regex searched in the path
    query: str | None = None  # a substring of the query string
    delay_s: float = 0.0
    fired: int = 0

    def matches(self, method: str, path: str, query: str) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.path is None or re.search(self.path, path) is not None)
            and (self.query is None or self.query in query)
        )


@dataclass(frozen=True)
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    query: str
    range: str | None
    fault: str | None
    status: int | None


@dataclass
class _State:
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    inflight: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    max_inflight: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultProxy:
    """A forwarding HTTP proxy on 127.0.0.1 and a free port; see the module docstring."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.state = _State()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        #: (method, query substring) filters whose concurrency is tracked.
        self.watch: list[tuple[str | None, str | None]] = []

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(
        self,
        fault: str,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        query: str | None = None,
        delay_s: float = 1.0,
    ) -> Rule:
        """Inject ``fault`` into the next ``times`` matching requests (a huge number: always)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        rule = Rule(fault, times, method, path, query, delay_s)
        with self.state.lock:
            self.state.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule (requests seen are kept)."""
        with self.state.lock:
            self.state.rules.clear()

    def track(self, method: str | None = None, query: str | None = None) -> None:
        """Record the most concurrent requests matching ``method`` and ``query``."""
        self.watch.append((method, query))

    def max_inflight(self, method: str | None = None, query: str | None = None) -> int:
        return self.state.max_inflight.get((method, query), 0)

    @property
    def seen(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.seen)

    def requests(self, *, method: str | None = None, query: str | None = None) -> list[Seen]:
        """Requests received that match ``method`` and contain ``query`` in their query."""
        return [
            s
            for s in self.seen
            if (method is None or s.method == method) and (query is None or query in s.query)
        ]

    def count(self, *, method: str | None = None, query: str | None = None) -> int:
        return len(self.requests(method=method, query=query))

    def _take_rule(self, method: str, path: str, query: str) -> Rule | None:
        with self.state.lock:
            for rule in self.state.rules:
                if rule.fired < rule.times and rule.matches(method, path, query):
                    rule.fired += 1
                    return rule
        return None


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows failures, not access logs

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:  # forward the chunked encoding as it came
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        return b""

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _send_error(self, status: int, code: str, message: str, extra: str = "") -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
            "<RequestId>FAULTPROXY</RequestId><HostId>proxy</HostId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in ("connection", "proxy-connection", "keep-alive"):
                    conn.putheader(name, value)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _handle(self) -> None:
        state = self.proxy.state
        split = urllib.parse.urlsplit(self.path)
        method, path, query = self.command, split.path, split.query
        body = self._read_body()
        rule = self.proxy._take_rule(method, path, query)
        fault = rule.fault if rule else None
        watched = [
            w
            for w in self.proxy.watch
            if (w[0] is None or w[0] == method) and (w[1] is None or w[1] in query)
        ]
        with state.lock:
            for w in watched:
                state.inflight[w] = state.inflight.get(w, 0) + 1
                state.max_inflight[w] = max(state.max_inflight.get(w, 0), state.inflight[w])
        recorded = False

        def record(status: int | None) -> None:
            """Note the request before its answer goes out: a client that has its answer
            must find the request in the log (recorded after, a test could look first)."""
            nonlocal recorded
            if not recorded:
                recorded = True
                with state.lock:
                    state.seen.append(
                        Seen(method, path, query, self.headers.get("Range"), fault, status)
                    )

        try:
            if rule is not None and fault == "slow":
                time.sleep(rule.delay_s)
            if fault in ("503", "500"):
                status, code, message = _ERROR_BODIES[fault]
                record(status)
                self._send_error(status, code, message)
            elif fault == "403":
                record(403)
                key = self.headers.get("Authorization", "")
                key_id = re.search(r"Credential=([^/]+)/", key)
                echoed = key_id.group(1) if key_id else ""
                self._send_error(
                    403,
                    "SignatureDoesNotMatch",
                    f"The request signature we calculated does not match (key {echoed}).",
                    f"<AWSAccessKeyId>{echoed}</AWSAccessKeyId>",
                )
            elif fault == "reset":
                record(None)
                self._reset()
            else:
                status, reason, headers, data = self._forward(body)
                record(status)
                if fault == "reset_after":
                    self._reset()
                else:
                    self.send_response(status, reason)
                    for name, value in headers:
                        lower = name.lower()
                        if lower in ("transfer-encoding", "connection"):
                            continue
                        if lower == "content-length" and method != "HEAD":
                            continue  # recomputed below; a HEAD keeps the object's length
                        self.send_header(name, value)
                    if method != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(data)
        finally:
            record(None)  # a request that failed before its answer (never twice)
            with state.lock:
                for w in watched:
                    state.inflight[w] -= 1

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
