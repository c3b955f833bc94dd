"""``spotsafe run``'s status: one live line on a terminal, plain periodic lines otherwise.

The line says the attempt, its furthest step, the newest checkpoint and its age, when the next
checkpoint is due (when the Guard knows), and the interruptions so far
(`spotsafe.supervisor.status.format_status` of `Supervisor.status`).

**On a terminal** (stderr is a TTY) the line is a ``rich.live.Live`` display at the bottom of
stderr. Everything else that reaches the terminal goes *through* its console, one whole line at
a time, so nothing is ever written across the live line: the child's stderr (and its stdout,
when that is the terminal too), and spotsafe's own log lines. A line the child has not ended
yet (a progress bar redrawn with ``\\r``) is shown inside the live region, just above the
status, as a terminal would show it, and printed for good when its newline comes.

**Otherwise** (a log file, a CI log, ``kubectl logs``) nothing is redrawn: the child's output
passes through untouched and unbuffered, and a plain ``spotsafe: attempt 2 · step 1250 ·
...`` line goes to stderr at each new attempt, wait or hang, and every `PLAIN_EVERY_S` seconds
-- but only between two of the child's lines on that stream, never inside one.
"""

from __future__ import annotations

import codecs
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

from spotsafe.supervisor.status import Phase, RunStatus, format_status

__all__ = ["PLAIN_EVERY_S", "StatusLine"]

PLAIN_EVERY_S = 60.0  # a plain status line a minute: a log that shows life, without noise
PLAIN_POLL_S = 0.5  # how often the plain mode looks for a new attempt or phase
LIVE_REFRESH_PER_S = 4  # live redraws per second: smooth enough, cheap on a slow terminal


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Lines:
    """A byte sink that hands each complete line (as text) to `emit` and keeps the rest, as
    a terminal shows it (only what follows the last carriage return)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.partial = ""
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self._lock:
            text = self.partial + self._decode(data)
            *lines, self.partial = text.split("\n")
            for line in lines:
                self.emit(line.rsplit("\r", 1)[-1])
            self.partial = self.partial.rsplit("\r", 1)[-1]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            rest, self.partial = self.partial + self._decode(b"", final=True), ""
        if rest:
            self.emit(rest)


class _LogStream:
    """A text stream for logging handlers: each complete line goes to `emit`."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.emit(line)
        return len(text)

    def flush(self) -> None:
        pass


class _Passthrough:
    """A byte sink that writes straight to `out` and remembers whether a line is open."""

    def __init__(self, out: IO[bytes], lock: threading.Lock) -> None:
        self.out = out
        self.lock = lock
        self.at_line_start = True

    def write(self, data: bytes) -> int:
        with self.lock:
            self.out.write(data)
            self.out.flush()
            if data:
                self.at_line_start = data.endswith(b"\n")
        return len(data)

    def flush(self) -> None:
        pass


class StatusLine:
    """Shows `status()` while a supervisor runs; use as a context manager around `run()`.

    Give the supervisor `child_stdout` / `child_stderr` as its child's sinks (None: the
    supervisor's own default, straight through).

    Args:
        status: the latest status (``lambda: supervisor.status``).
        stdout / stderr: where the child's output and the status go (default: ours).
        live: force the live line on or off (default: whether stderr is a terminal).
        plain_every_s: seconds between plain lines when not live.
        clock: wall-clock seconds, for the ages shown.

    Example:
        >>> import io
        >>> out, err = io.BytesIO(), io.BytesIO()
        >>> line = StatusLine(lambda: RunStatus(job_id="j", phase=Phase.RUNNING, attempt=1,
        ...                                     step=7), stdout=out, stderr=err, live=False)
        >>> with line:
        ...     _ = line.child_stderr.write(b"loss 0.5\\n")
        >>> err.getvalue().decode().splitlines()
        ['loss 0.5', 'spotsafe: attempt 1 · step 7 · no checkpoint yet · 0 interruptions']
    """

    def __init__(
        self,
        status: Callable[[], RunStatus | None],
        *,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        live: bool | None = None,
        plain_every_s: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.status = status
        self.clock = clock
        self.plain_every_s = plain_every_s
        self._out = stdout if stdout is not None else sys.stdout.buffer
        self._err = stderr if stderr is not None else sys.stderr.buffer
        out_tty = _isatty(self._out) if stdout is not None else _isatty(sys.stdout)
        err_tty = _isatty(self._err) if stderr is not None else _isatty(sys.stderr)
        self.live = err_tty if live is None else live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None
        self._console: Any = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.child_stdout: Any = None
        self.child_stderr: Any = None
        self._lines: list[_Lines] = []
        if self.live:
            self.child_stderr = self._line_sink()
            if out_tty:  # the same terminal: through the console too, or it would cross the line
                self.child_stdout = self._line_sink()
        else:
            self._err_lock = threading.Lock()
            self.child_stderr = _Passthrough(self._err, self._err_lock)
            self.child_stdout = _Passthrough(self._out, threading.Lock())

    # ------------------------------------------------------------------ live

    def _line_sink(self) -> _Lines:
        sink = _Lines(self._print)
        self._lines.append(sink)
        return sink

    def _print(self, line: str) -> None:
        """One whole line above the live status (or straight out before it starts)."""
        from rich.text import Text

        if self._console is not None:
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        else:
            self._err.write((line + "\n").encode("utf-8", errors="replace"))
            self._err.flush()

    def _renderable(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        parts = [Text.from_ansi(s.partial) for s in self._lines if s.partial]
        current = self.status()
        if current is not None:
            line = format_status(current, now_s=self.clock())
            parts.append(Text(f"spotsafe: {line}", style="bold cyan"))
        return Group(*parts)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        # Our own stderr as the console's file, so rich sees the terminal's width.
        stream: Any = sys.stderr if self._err is getattr(sys.stderr, "buffer", None) else None
        if stream is None:
            stream = _TextOut(self._err)
        else:
            stream.flush()
        self._console = Console(file=stream, force_terminal=True, highlight=False)
        self._live = Live(
            get_renderable=self._renderable,
            console=self._console,
            refresh_per_second=LIVE_REFRESH_PER_S,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()
        # spotsafe's own log lines would cross the live line too: send them through it.
        log_stream = _LogStream(self._print)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.stderr,
                sys.__stderr__,
            ):
                self._handlers.append((handler, handler.setStream(log_stream)))

    def _stop_live(self) -> None:
        for sink in self._lines:
            sink.close()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._console = None

    # ------------------------------------------------------------------ plain

    def _plain_loop(self) -> None:
        shown: tuple[int | None, Phase] | None = None
        last_s = self.clock()
        while not self._stop.wait(PLAIN_POLL_S):
            current = self.status()
            if current is None:
                continue
            now = self.clock()
            key = (current.attempt, current.phase)
            due = now - last_s >= self.plain_every_s
            changed = key != shown and current.phase is not Phase.RUNNING
            if (due or changed) and self._plain(current, now):
                shown, last_s = key, now

    def _plain(self, current: RunStatus, now_s: float) -> bool:
        """Write one plain line, unless the child's stderr is in the middle of a line."""
        sink = self.child_stderr
        assert isinstance(sink, _Passthrough)
        with self._err_lock:
            if not sink.at_line_start:
                return False  # never inside the child's line: try again at the next look
            line = f"spotsafe: {format_status(current, now_s=now_s)}\n"
            self._err.write(line.encode("utf-8", errors="replace"))
            self._err.flush()
        return True

    # ------------------------------------------------------------------ context

    def __enter__(self) -> StatusLine:
        if self.live:
            self._start_live()
        else:
            self._thread = threading.Thread(target=self._plain_loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.live:
            self._stop_live()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self.status()
        if current is not None:
            self._plain(current, self.clock())  # the last word: where the job stands


class _TextOut:
    """A text stream over a byte stream (the console's file)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text.encode("utf-8", errors="replace"))
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return True
