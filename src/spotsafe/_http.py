"""A tiny stdlib HTTP client for metadata services: one request per connection, abortable.

Standard library only (http.client), so ``spotsafe.interrupt`` and ``spotsafe.cloud`` import
fast and pull no dependency; it lives below both (the cloud resolver probes with it, the
notice watchers poll with it). Non-2xx answers are returned, not raised: each protocol gives
401/404 a meaning. A transport failure is `spotsafe.errors.MetadataUnavailable`.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from spotsafe.errors import MetadataUnavailable

__all__ = ["Client", "MetadataUnavailable", "Response"]

# A metadata answer is a few hundred bytes; cap the read so a confused peer can't flood us.
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def text(self) -> str:
        """The body as UTF-8 text; :class:`MetadataUnavailable` if it is not."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MetadataUnavailable(f"answer is not UTF-8 text: {self.body[:60]!r}") from e


class Client:
    """Plain-HTTP requests with a timeout, abortable from another thread (for prompt stop)."""

    def __init__(self, *, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"HTTP timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._current: http.client.HTTPConnection | None = None
        self._aborted = False

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """Send one request; raise :class:`MetadataUnavailable` on any transport failure.

        Args:
            method: HTTP method.
            url: ``http://host[:port]/path?query``.
            headers: Request headers.
            body: Request body.
            timeout_s: Socket timeout for this request (default: the client's), e.g. longer
                than a hanging GET's own timeout.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise MetadataUnavailable(f"metadata URL must be http://host[:port]/..., got {url!r}")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=self.timeout_s if timeout_s is None else timeout_s
        )
        with self._lock:
            if self._aborted:
                raise MetadataUnavailable("client was aborted (watcher stopping)")
            self._current = conn
        try:
            conn.request(method, target, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            data = resp.read(MAX_BODY_BYTES)
            return Response(status=resp.status, headers=dict(resp.getheaders()), body=data)
        except (OSError, http.client.HTTPException) as e:
            # OSError covers refused, unreachable, timeouts (socket.timeout) and resets;
            # HTTPException covers a peer that does not speak HTTP.
            raise MetadataUnavailable(f"{method} {url}: {type(e).__name__}: {e}") from e
        finally:
            with self._lock:
                self._current = None
            conn.close()

    def abort(self) -> None:
        """Unblock a request in flight (e.g. a hanging GET) and refuse new ones."""
        with self._lock:
            self._aborted = True
            conn = self._current
        sock = conn.sock if conn is not None else None
        if sock is not None:
            # Already closed by the peer or by the request itself: nothing left to unblock.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
