"""One attempt's child process: its own process group, its output, and its death with us.

The child runs in a new session (so its own process group: a signal reaches the launcher and
every worker it started). It must never outlive the supervisor, or a SIGKILLed supervisor on
a machine that lives on would leave a second writer behind. Two mechanisms, because each
misses a case:

* ``PR_SET_PDEATHSIG`` (Linux, via ctypes in the child before exec): the kernel SIGKILLs the
  child the moment the supervisor dies. It covers only the direct child.
* A watchdog: a tiny separate Python process that polls whether the supervisor still exists
  and then SIGKILLs the child's whole process group. It also covers systems without prctl.

A process group is not the whole tree: torchrun starts each worker in a session of its own
(torch's ``SubprocessHandler``), so a SIGKILL to the launcher's group leaves its workers
running, orphaned, still holding their collectives. `Child.kill_tree` therefore kills every
descendant it finds (Linux: ``/proc``) along with the group, and the supervisor uses it when
the grace is over. (The watchdog, after a SIGKILLed supervisor, still reaches the group only.)

Output is passed through to our stdout / stderr as it comes and a bounded copy is kept for the
store (the first and the last bytes, with a note of what was left out).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO

from spotsafe.errors import ConfigError

__all__ = ["Child", "OutputTail"]

log = logging.getLogger("spotsafe")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LOG_HEAD_BYTES = 64 * 1024  # the start of a log: the command line echo, the first error
LOG_TAIL_BYTES = 1024 * 1024  # the end of a log: where a crash's traceback is
WATCHDOG_POLL_S = 0.2  # how fast the watchdog notices a dead supervisor

# The watchdog: argv = supervisor pid, child process group. It exits when the group is gone;
# it kills the group when its parent (the supervisor) is gone. Standard library only, -I -S.
_WATCHDOG = f"""
import os, signal, sys, time
sup, pgid = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        sys.exit(0)
    except PermissionError:
        pass
    if os.getppid() != sup:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sys.exit(0)
    time.sleep({WATCHDOG_POLL_S!r})
"""


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: ask the kernel for SIGKILL when the parent dies."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None or not sys.platform.startswith("linux"):
        return  # the watchdog covers it
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(137)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children first), from ``/proc``; [] where there is none.

    Example:
        >>> import subprocess, sys
        >>> proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        >>> proc.pid in descendants(os.getpid()) or not os.path.isdir("/proc")
        True
        >>> proc.kill(); proc.wait()
        -9
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked, or is not ours to read
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


class OutputTail:
    """A bounded copy of a stream: the first `head` bytes and the last `tail` bytes."""

    def __init__(self, head: int = LOG_HEAD_BYTES, tail: int = LOG_TAIL_BYTES) -> None:
        self.head_max, self.tail_max = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self._lock = threading.Lock()

    def add(self, data: bytes) -> None:
        with self._lock:
            room = self.head_max - len(self.head)
            if room > 0:
                self.head += data[:room]
                data = data[room:]
            self.tail += data
            excess = len(self.tail) - self.tail_max
            if excess > 0:
                del self.tail[:excess]
                self.dropped += excess

    def getvalue(self) -> bytes:
        with self._lock:
            gap = f"\n[spotsafe: {self.dropped} bytes left out]\n".encode() if self.dropped else b""
            return bytes(self.head) + gap + bytes(self.tail)


class Child:
    """A running attempt: the process, its group, the pumps and the watchdog.

    `env` is the child's whole environment (the supervisor builds it with
    `spotsafe.env.ChildEnv.apply`, which also drops stale contract variables).

    Example:
        >>> import sys
        >>> import os
        >>> child = Child([sys.executable, "-c", "print('hi')"], env=os.environ, echo=False)
        >>> child.wait()
        0
        >>> child.output.getvalue()
        b'hi\\n'
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        echo: bool = True,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> None:
        parent = os.getpid()
        try:
            self.proc = subprocess.Popen(
                list(command),
                env=dict(env),  # the whole environment: the supervisor decides what is in it
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent),
            )
        except (FileNotFoundError, PermissionError) as e:
            raise ConfigError(f"cannot run {command[0]!r}: {e.strerror or e}") from e
        self.pid = self.proc.pid
        self.pgid = self.proc.pid  # a new session: the child leads its own group
        self.output = OutputTail()
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(parent), str(self.pgid)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out = stdout if stdout is not None else getattr(sys.stdout, "buffer", None)
        err = stderr if stderr is not None else getattr(sys.stderr, "buffer", None)
        self._pumps = [
            threading.Thread(target=self._pump, args=(pipe, sink if echo else None), daemon=True)
            for pipe, sink in ((self.proc.stdout, out), (self.proc.stderr, err))
        ]
        for t in self._pumps:
            t.start()

    def _pump(self, pipe: IO[bytes] | None, sink: IO[bytes] | None) -> None:
        assert pipe is not None
        fd = pipe.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.output.add(data)
            if sink is not None:
                try:
                    sink.write(data)
                    sink.flush()
                except (OSError, ValueError):
                    sink = None  # our own output is gone (closed terminal): keep the copy
        pipe.close()

    def poll(self) -> int | None:
        """The return code, or None while the child runs."""
        return self.proc.poll()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait up to `timeout_s` (None: forever); the return code, or None on timeout."""
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._finish()
        return code

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's whole process group (launcher and workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def kill_tree(self) -> None:
        """SIGKILL the child's process group and every descendant, wherever its group: a
        launcher's workers in sessions of their own included (see the module docstring)."""
        found = descendants(self.pid)  # before the kill: orphans are no longer ours to find
        self.signal_group(signal.SIGKILL)
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _finish(self) -> None:
        # The launcher is gone; kill what is left of its group (orphaned workers), then
        # collect the output the pumps still hold.
        self.signal_group(signal.SIGKILL)
        for t in self._pumps:
            t.join(timeout=5.0)
        if self._watchdog.poll() is None:
            self._watchdog.kill()
        self._watchdog.wait()
