"""Signals become stop requests: SIGTERM, SIGINT and SIGUSR1 (Slurm's ``--signal``) by default.

The handlers only record a :class:`~spotsafe.interrupt.request.StopRequest` in the flag (see
``request.py`` for why that is handler-safe). No checkpoint I/O and no collectives ever run in
a handler: the Guard does that at the next step boundary, in ordinary code.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

from spotsafe.errors import ConfigError
from spotsafe.interrupt.request import StopFlag, StopKind, StopRequest

__all__ = ["DEFAULT_GRACE_S", "DEFAULT_SIGNALS", "SignalCatcher"]

# Kubernetes' default terminationGracePeriodSeconds: SIGTERM, then SIGKILL 30 s later.
DEFAULT_GRACE_S = 30.0

# SIGTERM: every orchestrator; SIGINT: Ctrl-C; SIGUSR1: Slurm's `--signal=B:USR1@120`.
DEFAULT_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name)
)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class SignalCatcher:
    """Context manager that turns signals into STOP requests on a :class:`StopFlag`.

    Each caught signal records a STOP with ``deadline_s = clock() + grace_s``. A second SIGINT
    means "stop now": its handler raises :class:`KeyboardInterrupt`. The previous handlers are
    restored on exit.

    Only the main thread may install signal handlers (a CPython rule). Off the main thread
    ``__enter__`` raises :class:`~spotsafe.errors.ConfigError` rather than warning and carrying
    on: a job that silently lacks its SIGTERM handler is killed without a flush on the first
    preemption, the very loss spotsafe exists to prevent, so skipping it must be a choice
    written in code — pass ``signals=()`` (cloud notices and the stop file still work).

    Args:
        flag: Where requests are recorded.
        signals: The signals to catch.
        grace_s: Seconds between the signal and the expected SIGKILL.
        clock: Monotonic clock, in seconds.

    Example:
        >>> flag = StopFlag()
        >>> with SignalCatcher(flag, grace_s=30.0):
        ...     pass  # the training loop polls flag.stop_requested at each step
    """

    def __init__(
        self,
        flag: StopFlag,
        *,
        signals: Sequence[signal.Signals | int] = DEFAULT_SIGNALS,
        grace_s: float = DEFAULT_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not grace_s >= 0:
            raise ConfigError(f"SignalCatcher grace_s must be >= 0 seconds, got {grace_s!r}")
        self.flag = flag
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.grace_s = grace_s
        self._clock = clock
        self._previous: dict[signal.Signals, _Handler] = {}
        # Written only by handlers, which all run in the main thread; a plain int is enough.
        self._sigint_count = 0

    @property
    def installed(self) -> bool:
        """Whether the handlers are currently installed."""
        return bool(self._previous)

    def __enter__(self) -> SignalCatcher:
        if self.signals and threading.current_thread() is not threading.main_thread():
            raise ConfigError(
                "SignalCatcher must be entered in the main thread (CPython only delivers "
                f"signals there), but this is thread {threading.current_thread().name!r}; "
                "create it in the main thread, or pass signals=() to rely on cloud notices "
                "and the stop file only"
            )
        if self._previous:
            raise ConfigError("SignalCatcher is already installed; it is not reentrant")
        self._sigint_count = 0
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            # None means "installed outside Python"; the closest restorable state is SIG_DFL.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: only record state, never block.
        sig = signal.Signals(signum)
        if sig is signal.SIGINT:
            self._sigint_count += 1
            if self._sigint_count > 1:
                raise KeyboardInterrupt("second SIGINT: stop now, without a flush")
        now = self._clock()
        self.flag.request(
            StopRequest(
                source=f"signal:{sig.name}",
                kind=StopKind.STOP,
                deadline_s=now + self.grace_s,
                received_s=now,
                detail={"signal": sig.name, "signum": str(int(sig))},
            )
        )
