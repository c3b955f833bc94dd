"""Interruption processes: when a job's machine is taken away, and when capacity returns.

A process hands the simulator, per trial, a row of attempts: how long capacity is held
(the window from an attempt's start to its interruption) and how long the job waits for
capacity before it (0 unless a trace says spot was unavailable). Three kinds:

* `Poisson`: interruptions at a constant rate, 1 / `mtbi_s` (exponential gaps), as in
  Young's and Daly's models; capacity comes back at once (the restart time covers the new VM).
* `band_process`: a Poisson process whose rate comes from an AWS Spot Instance Advisor band.
* `Trace`: a recorded trace, replayed from a random offset per trial (cyclically, when the
  job outlives the trace): a CSV of interruption times, or the spot-traces JSON format of
  availability slots.

Spot Instance Advisor bands. AWS publishes, per instance type and region, the "frequency of
interruption": the rate at which Spot reclaimed capacity over the trailing month, in bands
<5 %, 5-10 %, 10-15 %, 15-20 % and >20 %. We read a band as the share f of instances that are
interrupted within a month (720 h) of running, and interruptions as Poisson, so
f = 1 − exp(−720 h / M) and M = −720 h / ln(1 − f). Each band takes its upper edge for f (the
pessimistic end: saving a little too often costs little, see `DEFAULT_MTBI_PRIOR_S`); >20 %
has no upper edge, and takes 40 % (twice its lower edge), a guess to override with
``--mtbi-h`` once a job has observed its own rate (``spotsafe advise`` does). The advisor
averages over a whole instance type: busy GPU types in a busy zone see far more.

Example:
    >>> {name: round(m / 3600) for name, m in BANDS.items()}
    {'<5%': 14037, '5-10%': 6834, '10-15%': 4430, '15-20%': 3227, '>20%': 1409}
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spotsafe.errors import ConfigError

__all__ = [
    "BANDS",
    "BAND_SHARES",
    "Poisson",
    "Process",
    "Trace",
    "band_process",
    "read_trace",
]

Array = npt.NDArray[np.float64]

MONTH_S = 720 * 3600.0  # the advisor's "trailing month", taken as 30 days

# Share of instances interrupted within a month that each band stands for (see above).
BAND_SHARES: dict[str, float] = {
    "<5%": 0.05,
    "5-10%": 0.10,
    "10-15%": 0.15,
    "15-20%": 0.20,
    ">20%": 0.40,
}

BANDS: dict[str, float] = {
    name: -MONTH_S / math.log1p(-share) for name, share in BAND_SHARES.items()
}
"""Mean time between interruptions in seconds that each advisor band stands for."""

# A window this long is "never interrupted": finite, so that the arithmetic stays clean.
NEVER_S = 1e15


@dataclass(frozen=True, slots=True)
class Poisson:
    """Interruptions at a constant rate: exponential gaps with mean `mtbi_s`.

    Example:
        >>> wait, window, _ = Poisson(3600.0).draw(np.random.default_rng(0), 2, 3, None)
        >>> window.shape, float(wait.sum())
        ((2, 3), 0.0)
    """

    mtbi_s: float
    """Mean time between interruptions, in seconds (> 0)."""
    name: str = "poisson"
    """What the process is called in reports."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mtbi_s) and self.mtbi_s > 0):
            raise ConfigError(f"mtbi_s = {self.mtbi_s!r}: must be a finite number > 0")

    @property
    def mean_window_s(self) -> float:
        """Mean seconds of capacity between interruptions."""
        return self.mtbi_s

    def draw(
        self, rng: np.random.Generator, n: int, k: int, state: object
    ) -> tuple[Array, Array, object]:
        """`k` more attempts for each of `n` trials: (waits, windows, state to pass back)."""
        return np.zeros((n, k)), rng.exponential(self.mtbi_s, size=(n, k)), state


def band_process(band: str) -> Poisson:
    """The Poisson process of a Spot Instance Advisor band (see the module docstring).

    Example:
        >>> round(band_process("5-10").mtbi_s / 3600)
        6834
    """
    key = band.strip().replace(" ", "")
    key = key if key.endswith("%") else key + "%"
    if key not in BANDS:
        raise ConfigError(
            f"--band {band!r}: not a Spot Instance Advisor band; use one of " + ", ".join(BANDS)
        )
    return Poisson(BANDS[key], name=f"band {key}")


@dataclass(frozen=True, slots=True)
class Trace:
    """A recorded trace of capacity: windows when it is held, in one period, replayed
    cyclically from a uniformly random offset per trial.

    Window j runs from ``starts[j]`` to its interruption at ``ends[j]``; capacity is back at
    ``starts[j + 1]`` (the next period's first start after the last).

    Example:
        >>> t = Trace.from_interruptions([1.0, 3.0, 6.0])  # hours
        >>> t.period_s / 3600, t.interruptions
        (6.0, 3)
    """

    starts: Array
    """Seconds into the period at which each window of capacity begins."""
    ends: Array
    """Seconds into the period at which each window is interrupted (>= its start)."""
    period_s: float
    """Length of the trace in seconds."""
    name: str = "trace"
    """What the trace is called in reports (its file)."""
    _waits: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        starts, ends = self.starts, self.ends
        waits = np.empty_like(starts)
        if len(starts):
            waits[1:] = starts[1:] - ends[:-1]
            waits[0] = starts[0] + self.period_s - ends[-1]
        object.__setattr__(self, "_waits", waits)

    @classmethod
    def from_interruptions(cls, hours: list[float], *, name: str = "trace") -> Trace:
        """A trace of interruption times (hours from its start); capacity returns at once.
        The period ends at the last interruption."""
        times = np.asarray(hours, dtype=np.float64) * 3600.0
        starts = np.concatenate(([0.0], times[:-1]))
        return cls(starts=starts, ends=times, period_s=float(times[-1]), name=name)

    @classmethod
    def from_slots(cls, unavailable: list[int], gap_s: float, *, name: str = "trace") -> Trace:
        """A trace of equal slots of `gap_s` seconds, each 1 where spot is unavailable.

        A run of available slots is a window; it ends in an interruption where a run of
        unavailable slots begins, and the job waits for capacity until the run ends.
        """
        slots = np.asarray(unavailable, dtype=np.int8)
        period = float(len(slots) * gap_s)
        if not slots.any():
            return cls(starts=np.zeros(0), ends=np.zeros(0), period_s=period, name=name)
        # Rotate so that the period starts where capacity returns after an unavailable slot:
        # then every window is whole, including one that wraps around the end of the trace.
        last_busy = len(slots) - 1 - int(np.argmax(slots[::-1]))
        shift = (last_busy + 1) % len(slots)
        rolled = np.roll(slots, -shift)
        edges = np.diff(np.concatenate(([1], rolled, [1])))
        run_starts = np.flatnonzero(edges == -1)  # 1 -> 0: capacity back
        run_ends = np.flatnonzero(edges == 1)  # 0 -> 1: interrupted
        starts = ((run_starts + shift) * gap_s % period).astype(np.float64)
        ends = starts + (run_ends - run_starts) * gap_s
        order = np.argsort(starts, kind="stable")
        return cls(starts=starts[order], ends=ends[order], period_s=period, name=name)

    @property
    def interruptions(self) -> int:
        """Interruptions in one period."""
        return len(self.starts)

    @property
    def mean_window_s(self) -> float:
        """Mean seconds of capacity between interruptions (the trace's observed MTBI)."""
        if not len(self.starts):
            return NEVER_S
        return float(np.sum(self.ends - self.starts)) / len(self.starts)

    def draw(
        self, rng: np.random.Generator, n: int, k: int, state: object
    ) -> tuple[Array, Array, object]:
        """`k` more attempts for each of `n` trials: (waits, windows, state to pass back).

        The first call places each trial at a random offset; `state` is each trial's next
        window, for the calls that follow.
        """
        m = len(self.starts)
        if m == 0:
            return np.zeros((n, k)), np.full((n, k), NEVER_S), state
        first = state is None
        durations = self.ends - self.starts
        if first:
            offset = rng.uniform(0.0, self.period_s, size=n)
            # The window that began last at or before the offset (cyclically: the period's
            # last window, a period earlier, when the offset lies before the first start).
            j = (np.searchsorted(self.starts, offset, side="right") - 1) % m
            start = self.starts[j] - np.where(self.starts[j] > offset, self.period_s, 0.0)
            inside = offset < start + durations[j]
            # Inside a window, the first attempt holds the rest of it; in a gap, the job waits
            # for the next window and starts there.
            after = (j + 1) % m
            next_start = start + (self.starts[after] - self.starts[j])
            next_start = next_start + np.where(after == 0, self.period_s, 0.0)
            index = np.where(inside, j, after)
        else:
            index = np.asarray(state)
        cols = (index[:, None] + np.arange(k)[None, :]) % m
        windows = durations[cols]
        waits = self._waits[cols]
        if first:
            windows[:, 0] = np.where(inside, start + durations[j] - offset, windows[:, 0])
            waits[:, 0] = np.where(inside, 0.0, next_start - offset)
        return waits, windows, (index + k) % m


def read_trace(path: str | Path) -> Trace:
    """Read a trace file: the spot-traces JSON format, or a CSV of interruption times.

    JSON: ``{"metadata": {"gap_seconds": N}, "data": [0, 1, ...]}``, one slot of N seconds
    per value, 1 where spot is unavailable. CSV: one interruption time per row, in hours from
    the start of the trace, increasing (the first column; a header row and ``#`` comments are
    skipped).

    Raises:
        ConfigError: a missing or unreadable file, or a malformed one, naming the file and
            the field or line.

    Example:
        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        ...     _ = f.write("hours\\n2\\n5.5\\n")
        >>> read_trace(f.name).interruptions
        2
        >>> os.unlink(f.name)
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: trace file not found (given with --trace)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the trace file: {e}") from e
    if text.lstrip().startswith("{"):
        return _read_json(p, text)
    return _read_csv(p, text)


def _read_json(p: Path, text: str) -> Trace:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: invalid JSON ({e}): expected the spot-traces format") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected an object with `metadata` and `data`")
    meta = doc.get("metadata")
    gap = meta.get("gap_seconds") if isinstance(meta, dict) else None
    if (
        isinstance(gap, bool)
        or not isinstance(gap, (int, float))
        or not (math.isfinite(gap) and gap > 0)
    ):
        raise ConfigError(f"{p}: metadata.gap_seconds = {gap!r}: must be a number of seconds > 0")
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{p}: data must be a non-empty list of 0 (available) and 1 (not)")
    for i, value in enumerate(data):
        if isinstance(value, bool) or value not in (0, 1):
            raise ConfigError(f"{p}: data[{i}] = {value!r}: must be 0 (available) or 1 (not)")
    if all(v == 1 for v in data):
        raise ConfigError(f"{p}: data: spot is never available in this trace")
    return Trace.from_slots(data, float(gap), name=p.name)


def _read_csv(p: Path, text: str) -> Trace:
    hours: list[float] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        cell = row[0].strip()
        try:
            value = float(cell)
        except ValueError:
            if not hours and line_no == _first_content_line(text):
                continue  # a header row
            raise ConfigError(
                f"{p}: line {line_no}: {cell!r} is not a number (interruption time in hours)"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(
                f"{p}: line {line_no}: {cell}: an interruption time must be a finite number "
                f"of hours > 0"
            )
        if hours and value <= hours[-1]:
            raise ConfigError(
                f"{p}: line {line_no}: {cell} h is not after the time before it "
                f"({hours[-1]:g} h): interruption times must increase"
            )
        hours.append(value)
    if not hours:
        raise ConfigError(f"{p}: no interruption times (one per line, in hours)")
    return Trace.from_interruptions(hours, name=p.name)


def _first_content_line(text: str) -> int:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            return line_no
    return 0


Process = Poisson | Trace
