"""The progress channel: how far an attempt got, told by its Guard to its supervisor.

An attempt killed without warning (SIGKILL, the OOM killer) records nothing at its end, and
events still buffered in its memory die with it. So the child tells its supervisor as it goes,
through a channel that costs the training loop nothing measurable and that survives the kill.

**What it is.** A small shared-memory *board*: a file of fixed slots, one per local rank, that
the supervisor creates for each attempt (`ProgressBoard`) and names in ``$SPOTSAFE_PROGRESS``
(`spotsafe.env.ChildEnv.progress`). Each Guard maps it (`ProgressWriter`) and stores plain
numbers in its own slot: when it entered, what it restored and how long that took, its first
and its latest step (with their wall times), its newest committed checkpoint, when the next
one is due, and when it left. The supervisor reads the board whenever it likes (`read`, a
copy of 8 KiB); a reader never waits on a writer and a writer never waits on anything.

**Why a board and not a pipe of messages.**

* *Nothing is lost at a kill.* A store into a shared mapping is in the page cache the moment
  it is made; SIGKILL cannot take it back. Every step is written, not one in every 0.2 s, so
  the record says the exact furthest step however fast the loop runs.
* *A step costs two stores* (a wall-clock read and two memoryview writes, a few hundred
  nanoseconds): no system call, no throttle, no full pipe to handle, no SIGPIPE.
* *It reaches torchrun's workers.* An inherited descriptor does not: torchrun starts its
  workers with ``close_fds`` (and in sessions of their own), so a pipe handed to the launcher
  never reaches a rank. A path in the environment does.
* *Every rank writes its own slot* (``$LOCAL_RANK``, else the rank the Guard passes, else 0),
  so there is no interleaving to untangle, and a hang report can say which rank stopped
  first. The supervisor aggregates (`Progress`): the furthest step over the ranks, the
  slowest restore.

**Failure model.** The writer never raises and never blocks: a missing, foreign or malformed
board (an old supervisor, a stale variable, a deleted temp dir) disables it with one log
line. Fields are 8-byte aligned words written in one store each; a reader may see a slot
mid-update (one field new, the next old), never a torn number. The board lives in the
temporary directory (``$TMPDIR``) of the machine, for one attempt, and is deleted after it.

Example:
    >>> board = ProgressBoard.create()
    >>> writer = ProgressWriter(board.path, rank=0, pid=42)
    >>> writer.entered()
    >>> writer.restored(step=100, seconds=1.5)
    >>> for step in range(101, 104):
    ...     writer.step(step)
    >>> progress = board.read()
    >>> progress.last_step, progress.restored_step, progress.restore_s
    (103, 100, 1.5)
    >>> sorted(progress.to_json())
    ['entered_s', 'first_step_s', 'last_step', 'last_step_s', 'restore_s', 'restored_step']
    >>> board.close()
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spotsafe.policy.pools import Pool

__all__ = [
    "BOARD_SLOTS",
    "ENV_LOCAL_RANK",
    "Progress",
    "ProgressBoard",
    "ProgressWriter",
    "RankProgress",
    "StallClock",
    "read_board",
]

log = logging.getLogger("spotsafe")

ENV_LOCAL_RANK = "LOCAL_RANK"  # torchrun's: the rank on this machine, 0..nproc-1
MAGIC = b"SPSFPRG1"  # the board's first word: "spotsafe progress board, layout 1"
HEADER_WORDS = 8  # magic, slot count, words per slot, the rest reserved
SLOT_WORDS = 16  # 128 bytes per slot: the fields below, and room to grow
BOARD_SLOTS = 64  # local ranks per machine: 8-16 GPUs, or many CPU ranks
WORD = 8
BOARD_BYTES = WORD * (HEADER_WORDS + BOARD_SLOTS * SLOT_WORDS)  # 8256

# Word offsets inside a slot. "q": a signed 64-bit integer, -1 when unknown (pid: 0 = unused);
# "d": a float64 wall time (seconds since the epoch) or duration, NaN when unknown.
PID, ENTERED_S, RESTORE_S, RESTORED_STEP = 0, 1, 2, 3
FIRST_STEP_S, LAST_STEP, LAST_STEP_S = 4, 5, 6
SAVED_STEP, SAVED_S, NEXT_SAVE_S, NEXT_SAVE_STEP, LEFT_S, SAVING_S = 7, 8, 9, 10, 11, 12
_INTS = frozenset({PID, RESTORED_STEP, LAST_STEP, SAVED_STEP, NEXT_SAVE_STEP})
_NAN = float("nan")
_SLOT = struct.Struct("=" + "".join("q" if i in _INTS else "d" for i in range(SLOT_WORDS)))


def _or_none_s(value: float) -> float | None:
    return None if math.isnan(value) else value


def _or_none_step(value: int) -> int | None:
    return None if value < 0 else value


@dataclass(frozen=True, slots=True, kw_only=True)
class RankProgress:
    """One rank's slot, as read.

    Times are wall-clock seconds since the epoch, except `restore_s` (a duration); None when
    the Guard has not told it.
    """

    slot: int
    """The slot: the local rank."""
    pid: int
    """The process that wrote it."""
    entered_s: float | None = None
    """When the process entered the Guard."""
    restore_s: float | None = None
    """Seconds its restore took; None when it restored nothing (a fresh start)."""
    restored_step: int | None = None
    """The step it restored; None for a fresh start."""
    first_step_s: float | None = None
    """When it finished its first step in this attempt."""
    last_step: int | None = None
    """Its furthest step."""
    last_step_s: float | None = None
    """When it reached it."""
    saved_step: int | None = None
    """The step of its newest committed checkpoint in this attempt."""
    saved_s: float | None = None
    """When that checkpoint committed."""
    next_save_s: float | None = None
    """When the next checkpoint is due, when the interval counts time."""
    next_save_step: int | None = None
    """The step at which the next checkpoint is due, when the interval counts steps."""
    left_s: float | None = None
    """When it left the Guard (its work done, or stopped)."""
    saving_s: float | None = None
    """When its latest save started (a long save is not a stall until it outlasts one)."""


def _min(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _max(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


@dataclass(frozen=True, slots=True)
class Progress:
    """What the board says about an attempt: every rank's slot, and the attempt as a whole.

    Example:
        >>> p = Progress((RankProgress(slot=0, pid=1, first_step_s=1.0, last_step=7,
        ...                            last_step_s=70.0),
        ...               RankProgress(slot=1, pid=2, first_step_s=1.0, last_step=6,
        ...                            last_step_s=69.0)))
        >>> p.last_step, p.last_step_s, p.started
        (7, 70.0, True)
        >>> Progress().to_json()["last_step"] is None
        True
    """

    ranks: tuple[RankProgress, ...] = ()
    """The slots a Guard wrote, in slot order."""

    @property
    def entered_s(self) -> float | None:
        """When the first rank entered the Guard."""
        return _min([r.entered_s for r in self.ranks])

    @property
    def restore_s(self) -> float | None:
        """The slowest rank's restore, in seconds: the one every rank waited for."""
        return _max([r.restore_s for r in self.ranks])

    @property
    def restored_step(self) -> int | None:
        """The step restored (every rank restores the same one); None: a fresh start."""
        return next((r.restored_step for r in self.ranks if r.restored_step is not None), None)

    @property
    def first_step_s(self) -> float | None:
        """When the attempt's first step ended (the first rank to end one)."""
        return _min([r.first_step_s for r in self.ranks])

    @property
    def last_step(self) -> int | None:
        """The furthest step any rank reached."""
        steps = [r.last_step for r in self.ranks if r.last_step is not None]
        return max(steps) if steps else None

    @property
    def last_step_s(self) -> float | None:
        """When the furthest step was first reached."""
        top = self.last_step
        return _min([r.last_step_s for r in self.ranks if r.last_step == top])

    @property
    def saved_step(self) -> int | None:
        """The newest checkpoint this attempt committed."""
        steps = [r.saved_step for r in self.ranks if r.saved_step is not None]
        return max(steps) if steps else None

    @property
    def saved_s(self) -> float | None:
        """When this attempt's newest checkpoint committed."""
        return _max([r.saved_s for r in self.ranks])

    @property
    def next_save_s(self) -> float | None:
        """When the next checkpoint is due (wall time), when the interval counts time."""
        return _min([r.next_save_s for r in self.ranks])

    @property
    def next_save_step(self) -> int | None:
        """The step at which the next checkpoint is due, when the interval counts steps."""
        steps = [r.next_save_step for r in self.ranks if r.next_save_step is not None]
        return min(steps) if steps else None

    @property
    def started(self) -> bool:
        """Whether start-up is over: a rank ended a step, or left the Guard."""
        return any(r.first_step_s is not None or r.left_s is not None for r in self.ranks)

    @property
    def sign_of_life(self) -> tuple[tuple[float | int | None, ...], ...]:
        """What changes whenever a rank does anything after start-up: a step, a save's
        start or commit, a plan for the next save, leaving the Guard. Compare two reads to
        see a stall."""
        return tuple(
            (r.slot, r.last_step, r.last_step_s, r.saving_s, r.saved_s, r.next_save_s, r.left_s)
            for r in self.ranks
        )

    def to_json(self) -> dict[str, float | int | None]:
        """The ``"progress"`` object of an attempt's end record (the report's schema)."""
        return {
            "entered_s": self.entered_s,
            "restore_s": self.restore_s,
            "restored_step": self.restored_step,
            "first_step_s": self.first_step_s,
            "last_step": self.last_step,
            "last_step_s": self.last_step_s,
        }


def _parse(data: bytes) -> Progress:
    """The board's bytes as `Progress`; an empty one when they are not a board."""
    if len(data) < BOARD_BYTES or data[:WORD] != MAGIC:
        return Progress()
    slots, words = struct.unpack_from("=qq", data, WORD)
    if slots != BOARD_SLOTS or words != SLOT_WORDS:
        return Progress()
    ranks = []
    for slot in range(slots):
        v = _SLOT.unpack_from(data, WORD * (HEADER_WORDS + slot * SLOT_WORDS))
        if v[PID] == 0:
            continue
        ranks.append(
            RankProgress(
                slot=slot,
                pid=int(v[PID]),
                entered_s=_or_none_s(v[ENTERED_S]),
                restore_s=_or_none_s(v[RESTORE_S]),
                restored_step=_or_none_step(v[RESTORED_STEP]),
                first_step_s=_or_none_s(v[FIRST_STEP_S]),
                last_step=_or_none_step(v[LAST_STEP]),
                last_step_s=_or_none_s(v[LAST_STEP_S]),
                saved_step=_or_none_step(v[SAVED_STEP]),
                saved_s=_or_none_s(v[SAVED_S]),
                next_save_s=_or_none_s(v[NEXT_SAVE_S]),
                next_save_step=_or_none_step(v[NEXT_SAVE_STEP]),
                left_s=_or_none_s(v[LEFT_S]),
                saving_s=_or_none_s(v[SAVING_S]),
            )
        )
    return Progress(tuple(ranks))


def _empty_board() -> bytes:
    empty = _SLOT.pack(*(0 if i == PID else -1 if i in _INTS else _NAN for i in range(SLOT_WORDS)))
    header = MAGIC + struct.pack("=qq", BOARD_SLOTS, SLOT_WORDS)
    return header.ljust(WORD * HEADER_WORDS, b"\0") + empty * BOARD_SLOTS


def read_board(path: str | os.PathLike[str]) -> Progress:
    """Parse a board file (the supervisor's, or a copy); an empty `Progress` when it is not
    one.

    Example:
        >>> read_board("/nonexistent/board").ranks
        ()
    """
    try:
        with open(path, "rb") as f:
            return _parse(f.read(BOARD_BYTES))
    except OSError:
        return Progress()


class ProgressBoard:
    """The supervisor's end: one attempt's board, created empty in a private temp directory.

    Example:
        >>> with ProgressBoard.create() as board:
        ...     board.read().ranks
        ()
    """

    def __init__(self, directory: str, path: str, mapping: mmap.mmap) -> None:
        self.directory = directory
        self.path = path
        self._map: mmap.mmap | None = mapping

    @classmethod
    def create(cls, parent: str | None = None) -> ProgressBoard:
        """A fresh, empty board under `parent` (default: the temporary directory).

        Raises:
            OSError: the temporary directory is not writable.
        """
        directory = tempfile.mkdtemp(prefix="spotsafe-progress-", dir=parent)  # mode 0700
        path = os.path.join(directory, "board")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, _empty_board())
                mapping = mmap.mmap(fd, BOARD_BYTES)
            finally:
                os.close(fd)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(directory, path, mapping)

    def read(self) -> Progress:
        """What the board says now (a copy of it, parsed); empty once closed."""
        if self._map is None:
            return Progress()
        return _parse(self._map[:BOARD_BYTES])

    def close(self) -> None:
        """Unmap and delete the board (a child still mapping it keeps writing into memory
        that nobody reads)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ProgressBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProgressWriter:
    """The child's end: one rank's slot on the board named by ``$SPOTSAFE_PROGRESS``.

    Every method is a few stores into shared memory; none blocks or raises. A writer that
    could not open its board is disabled (`enabled` is False) and its methods do nothing.

    Args:
        path: the board file.
        rank: the slot (the local rank), 0 to `BOARD_SLOTS` - 1.
        pid: written into the slot, so a reader knows who wrote it (default: this process).
        wall_clock: wall-clock seconds since the epoch, injectable for tests.

    Example:
        >>> ProgressWriter("/nonexistent/board").enabled
        False
    """

    __slots__ = ("_d", "_first", "_map", "_o", "_q", "_wall", "path", "rank")

    def __init__(
        self,
        path: str,
        *,
        rank: int = 0,
        pid: int | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.rank = rank
        self._wall = wall_clock
        self._first = True
        self._map: mmap.mmap | None = None
        self._q: memoryview | None = None
        # float64 words; typeshed lets a memoryview store only ints, hence Any.
        self._d: Any = None
        self._o = 0
        problem = self._open(path, rank)
        if problem is not None:
            log.warning("spotsafe: no progress reports to the supervisor: %s", problem)
            return
        assert self._q is not None
        self._q[self._o + PID] = os.getpid() if pid is None else pid

    def _open(self, path: str, rank: int) -> str | None:
        """Map the board; a reason when it cannot be used."""
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < BOARD_SLOTS:
            return f"rank {rank!r} has no slot on the board (0 to {BOARD_SLOTS - 1})"
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as e:
            return f"cannot open {path}: {e.strerror or e}"
        try:
            if os.fstat(fd).st_size != BOARD_BYTES:
                return f"{path} is not a progress board (size)"
            mapping = mmap.mmap(fd, BOARD_BYTES)
        except (OSError, ValueError) as e:
            return f"cannot map {path}: {e}"
        finally:
            os.close(fd)
        if mapping[:WORD] != MAGIC or struct.unpack_from("=qq", mapping, WORD) != (
            BOARD_SLOTS,
            SLOT_WORDS,
        ):
            mapping.close()
            return f"{path} is not a progress board of this spotsafe version"
        self._map = mapping
        view = memoryview(mapping)
        self._q = view.cast("q")
        self._d = view.cast("d")
        self._o = HEADER_WORDS + rank * SLOT_WORDS
        return None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, rank: int = 0
    ) -> ProgressWriter | None:
        """The writer the supervisor asked for in ``$SPOTSAFE_PROGRESS``; None outside one.

        The slot is ``$LOCAL_RANK`` when set (torchrun's rank on this machine), else `rank`.

        Example:
            >>> ProgressWriter.from_environ({}) is None
            True
        """
        from spotsafe.env import ChildEnv
        from spotsafe.errors import ConfigError

        env = os.environ if environ is None else environ
        try:
            path = ChildEnv.from_environ(env).progress
        except ConfigError as e:  # the Guard reports it; a report must not stop training
            log.warning("spotsafe: no progress reports to the supervisor: %s", e)
            return None
        if path is None:
            return None
        local = env.get(ENV_LOCAL_RANK, "").strip()
        slot = int(local) if local.isascii() and local.isdigit() and len(local) < 6 else rank
        return cls(path, rank=slot)

    @property
    def enabled(self) -> bool:
        """Whether reports reach a board."""
        return self._q is not None

    def entered(self) -> None:
        """The process entered the Guard."""
        if self._d is not None:
            self._d[self._o + ENTERED_S] = self._wall()

    def restored(self, *, step: int, seconds: float) -> None:
        """The process restored `step`, which took `seconds`."""
        if self._q is None or self._d is None:
            return
        try:
            self._d[self._o + RESTORE_S] = float(seconds)
            self._q[self._o + RESTORED_STEP] = step
        except (TypeError, ValueError, OverflowError):
            pass  # not a step number: nothing to report

    def step(self, step: int) -> None:
        """The process ended training step `step` (the hot path: two stores)."""
        q = self._q
        if q is None:
            return
        d = self._d
        assert d is not None
        now = self._wall()
        o = self._o
        try:
            q[o + LAST_STEP] = step
        except (TypeError, ValueError, OverflowError):
            return  # not a step number: nothing to report
        d[o + LAST_STEP_S] = now
        if self._first:
            self._first = False
            d[o + FIRST_STEP_S] = now

    def saving(self) -> None:
        """A save starts (it may hold the training thread for a while)."""
        if self._d is not None:
            self._d[self._o + SAVING_S] = self._wall()

    def saved(self, step: int) -> None:
        """A checkpoint of `step` committed."""
        if self._q is None or self._d is None:
            return
        try:
            self._q[self._o + SAVED_STEP] = step
        except (TypeError, ValueError, OverflowError):
            return
        self._d[self._o + SAVED_S] = self._wall()

    def next_save(self, *, in_s: float | None = None, at_step: int | None = None) -> None:
        """The next checkpoint is due in `in_s` seconds, or at step `at_step` (None: unknown)."""
        if self._q is None or self._d is None:
            return
        try:
            self._d[self._o + NEXT_SAVE_S] = _NAN if in_s is None else self._wall() + in_s
            self._q[self._o + NEXT_SAVE_STEP] = -1 if at_step is None else at_step
        except (TypeError, ValueError, OverflowError):
            pass

    def left(self) -> None:
        """The process left the Guard."""
        if self._d is not None:
            self._d[self._o + LEFT_S] = self._wall()


@dataclass(slots=True)
class StallClock:
    """Whether an attempt is hung: no sign of life on the board for `max_stall_s` seconds.

    Counting starts at the attempt's first step (or when a Guard is left without one), never
    during start-up (imports, restore, compilation, the first step). Any later step, save
    start or commit, plan for the next save or leaving the Guard restarts it: a save that
    takes longer than `max_stall_s` is a hang too. Time is the caller's monotonic
    clock, so the judge is tested without waiting.

    Example:
        >>> clock = StallClock(max_stall_s=60.0)
        >>> starting = Progress((RankProgress(slot=0, pid=1, entered_s=5.0),))
        >>> clock.stalled_s(starting, now_s=1000.0) is None  # start-up is never a stall
        True
        >>> stepped = Progress((RankProgress(slot=0, pid=1, first_step_s=9.0, last_step=1,
        ...                                  last_step_s=9.0),))
        >>> clock.stalled_s(stepped, now_s=1000.0), clock.hung(stepped, now_s=1059.0)
        (0.0, False)
        >>> clock.hung(stepped, now_s=1060.0)
        True
    """

    max_stall_s: float
    """Seconds without a sign of life after which the attempt is hung."""
    _seen: tuple[tuple[float | int | None, ...], ...] | None = field(default=None, repr=False)
    _since_s: float = field(default=0.0, repr=False)

    @classmethod
    def from_pool(cls, pool: Pool) -> StallClock:
        """The clock of a pool: its ``max_stall_s``."""
        return cls(max_stall_s=pool.max_stall_s)

    def stalled_s(self, progress: Progress, *, now_s: float) -> float | None:
        """Seconds since the last sign of life; None while the attempt starts up."""
        if not progress.started:
            return None
        sign = progress.sign_of_life
        if sign != self._seen:
            self._seen, self._since_s = sign, now_s
        return now_s - self._since_s

    def hung(self, progress: Progress, *, now_s: float) -> bool:
        """Whether the attempt has shown no sign of life for `max_stall_s` seconds."""
        stalled = self.stalled_s(progress, now_s=now_s)
        return stalled is not None and stalled >= self.max_stall_s
