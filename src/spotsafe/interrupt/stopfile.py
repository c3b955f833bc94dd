"""A stop file: its appearance means STOP (Kubernetes preStop hooks, schedulers, tests).

A preStop hook such as ``touch /tmp/spotsafe-stop`` runs before Kubernetes sends SIGTERM; with
``SPOTSAFE_STOP_FILE=/tmp/spotsafe-stop`` the job starts stopping at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from spotsafe._http import MetadataUnavailable
from spotsafe.interrupt.request import StopKind, StopRequest
from spotsafe.interrupt.signals import DEFAULT_GRACE_S
from spotsafe.interrupt.watcher import PollingWatcher

__all__ = ["STOP_FILE_ENV", "StopFileWatcher"]

STOP_FILE_ENV = "SPOTSAFE_STOP_FILE"
POLL_S = 1.0  # a stat() per second is free, and well inside any grace period
MAX_REASON_BYTES = 200  # the file may say why; keep only a line's worth


class StopFileWatcher(PollingWatcher):
    """Requests a STOP when ``path`` appears, with ``deadline = now + grace_s``.

    Args:
        path: The file to watch.
        grace_s: Seconds between the file appearing and the expected kill.
        interval_s: Seconds between checks.
        clock: Monotonic clock, in seconds.

    Example:
        >>> w = StopFileWatcher("/nonexistent/stop")
        >>> w.poll().requests
        ()
    """

    name = "stop-file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        grace_s: float = DEFAULT_GRACE_S,
        interval_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval_s=interval_s, clock=clock)
        self.path = os.fspath(path)
        self.grace_s = grace_s
        self._reported = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], **kwargs: Any) -> StopFileWatcher | None:
        """Build from ``SPOTSAFE_STOP_FILE``; None when it is unset or empty."""
        path = env.get(STOP_FILE_ENV)
        return cls(path, **kwargs) if path else None

    def _check(self) -> list[StopRequest]:
        if self._reported:
            return []
        try:
            with open(self.path, "rb") as f:
                reason = f.read(MAX_REASON_BYTES).decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return []  # the normal case: nobody asked us to stop
        except OSError as e:
            # Permission or I/O trouble is not a stop request, but it must be visible.
            raise MetadataUnavailable(f"stop file {self.path}: {e}") from e
        self._reported = True
        now = self.clock()
        return [
            StopRequest(
                source=f"file:{self.path}",
                kind=StopKind.STOP,
                deadline_s=now + self.grace_s,
                received_s=now,
                detail={"path": self.path, "reason": reason},
            )
        ]
