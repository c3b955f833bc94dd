"""The chaos harness: interrupt a job at random, then check it ended bit for bit the same.

``spotsafe chaos --kills N -- CMD`` runs CMD under the supervisor in a scratch store and
interrupts it N times, each time in one of these ways (drawn from a seeded rng):

* ``term-child``       SIGTERM to the training process group: a preemption with a grace
* ``kill-child``       SIGKILL to the group at a random moment: a node lost without notice
* ``kill-mid-save``    SIGKILL as soon as a checkpoint is half written (data, no manifest)
* ``term-supervisor``  SIGTERM to the supervisor: it forwards, waits, exits 75; restarted
* ``kill-supervisor``  SIGKILL to the supervisor: its child dies with it; a new supervisor
  takes the lease over and continues the job record

Then it runs CMD once more, uninterrupted, in another store, and compares the newest valid
checkpoints of both (every tensor's dtype, shape and xxh3, plus the non-tensor state). The
Guard saves the final state at a normal exit, so "newest" is "final".

Which interruption comes when is a pure plan (`plan`); the loop in `run_chaos` carries it out.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spotsafe.backoff import Backoff
from spotsafe.checkpoint.discovery import Status, discover
from spotsafe.errors import ConfigError, SupervisorError
from spotsafe.jobrecord import attempt_files, read_attempt, read_child
from spotsafe.policy.pools import MAX_GRACE_S
from spotsafe.storage import Store, open_store
from spotsafe.supervisor.job import JobRecord
from spotsafe.supervisor.progress import FinalState, final_state, look_again, newest_valid_step

__all__ = ["KINDS", "ChaosReport", "Interruption", "plan", "run_chaos"]

KINDS = ("term-child", "kill-child", "kill-mid-save", "term-supervisor", "kill-supervisor")
POLL_S = 0.02  # how often the harness looks at the store and the processes
POOL = "chaos"
MAX_KILLS = 10_000  # its pool allows 2 * kills + 10 restarts: within the 10^6 budget bound
MAX_DELAY_S = 3600.0  # an hour between an attempt's start and its interruption
# The harness looks at a store its job writes: after a failed look, again at once (a prune
# races the listing), then 0.5 s and 2 s later.
LOOK_AGAIN = Backoff(initial_s=POLL_S, max_s=2.0, multiplier=25.0, jitter=0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Interruption:
    """One planned interruption: what, and how long after its attempt started."""

    kind: str
    delay_s: float
    after_save: bool = True
    """Count the delay from the attempt's first checkpoint (training is underway), not from
    its start: otherwise a slow start (torch's import) would swallow most interruptions."""


def plan(
    kills: int, *, rng: random.Random, min_delay_s: float, max_delay_s: float
) -> list[Interruption]:
    """The interruptions of a chaos run, in order; the same seed gives the same plan.

    Example:
        >>> [i.kind for i in plan(3, rng=random.Random(1), min_delay_s=0, max_delay_s=1)]
        ['kill-child', 'term-child', 'term-supervisor']
    """
    out = []
    for _ in range(kills):
        kind = rng.choice(KINDS)
        delay_s = rng.uniform(min_delay_s, max_delay_s)
        # One in four lands anywhere from the start, start-up included.
        out.append(Interruption(kind=kind, delay_s=delay_s, after_save=rng.random() >= 0.25))
    return out


@dataclass(slots=True, kw_only=True)
class ChaosReport:
    """What a chaos run did and whether the final states matched."""

    planned: int
    landed: Counter[str] = field(default_factory=Counter)
    mid_save_hits: int = 0
    supervisor_starts: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    chaos_final: FinalState | None = None
    reference_final: FinalState | None = None
    chaos_seconds: float = 0.0
    reference_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def interruptions(self) -> int:
        return sum(self.landed.values())

    @property
    def identical(self) -> bool:
        """Whether both runs ended in the same state, bit for bit: every tensor, the step and
        epoch, the loader position and every RNG."""
        c, r = self.chaos_final, self.reference_final
        return c is not None and r is not None and c == r

    @property
    def ok(self) -> bool:
        return self.identical and self.interruptions == self.planned and not self.problems

    def format(self) -> str:
        kinds = ", ".join(f"{k} {self.landed[k]}" for k in KINDS if self.landed[k])
        classes = ", ".join(f"{k} {v}" for k, v in sorted(self.classes.items()))
        c, r = self.chaos_final, self.reference_final
        lines = [
            f"interruptions: {self.interruptions} of {self.planned} ({kinds or 'none'})",
            f"  SIGKILLs that landed mid-save: {self.mid_save_hits}",
            f"attempts: {self.attempts} ({classes}); supervisors started: {self.supervisor_starts}",
            f"interrupted run: {self.chaos_seconds:.1f} s, final step "
            f"{c.step if c else '-'}; uninterrupted run: {self.reference_seconds:.1f} s, "
            f"final step {r.step if r else '-'}",
            f"final state: {'IDENTICAL' if self.identical else 'DIFFERENT'}"
            + (
                f" ({len(c.tensors)} tensors, RNGs and counters compared)"
                if c and self.identical
                else ""
            ),
        ]
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


def write_config(path: Path, *, kills: int, grace_s: float) -> None:
    """A pool that survives the planned interruptions and restarts at once."""
    path.write_text(
        f"""# written by spotsafe chaos
[pools.{POOL}]
max_preemptions = {kills * 2 + 10}
max_failures = 0          # a crash is a bug, not chaos: stop and report it
max_no_progress = {kills + 10}
backoff_initial_s = 0.05
backoff_max_s = 0.05
jitter = 0
grace_s = {grace_s}
lease_ttl_s = 5
"""
    )


class _Job:
    """The store and the supervisor process of one run."""

    def __init__(self, command: Sequence[str], store: Path, config: Path, log: Path) -> None:
        self.command = list(command)
        self.store_path = store
        self.store: Store = open_store(str(store))
        self.config = config
        self.log = log.open("ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "spotsafe.cli",
            "run",
            "--store",
            str(self.store_path),
            "--config",
            str(self.config),
            "--pool",
            POOL,
            "--",
            *self.command,
        ]
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL
        )
        self.starts += 1

    def stop(self, grace_s: float) -> None:
        """Stop the supervisor if it still runs: SIGTERM (it stops its child), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=grace_s + 5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its watchdog takes the child's process group down with it
            self.proc.wait()

    def running_attempt(self, after: int) -> tuple[int, int] | None:
        """(attempt, child pgid) of a running attempt numbered above `after`, if any."""
        files = attempt_files(self.store)
        for n in sorted((n for n, kinds in files.items() if "child" in kinds), reverse=True):
            if n <= after or "end" in files[n]:
                return None
            child = read_child(self.store, n)
            return None if child is None else (n, child.pgid)
        return None

    def start_step(self, attempt: int) -> int | None:
        start = read_attempt(self.store, attempt, "start")
        step = None if start is None else start.get("start_step")
        return None if step is None else int(step)

    def ended(self, attempt: int) -> bool:
        return "end" in attempt_files(self.store).get(attempt, set())

    def half_written_save(self) -> bool:
        """Whether a checkpoint directory holds data files but no manifest yet."""
        found = look_again(
            lambda: discover(self.store, verify_sizes=False),
            sleep=time.sleep,
            what="list the chaos store",
            backoff=LOOK_AGAIN,
        )
        return any(c.status is Status.PARTIAL for c in found.checkpoints)

    def newest_valid_step(self) -> int | None:
        """The newest valid step, looked at again if the listing raced the child's prune."""
        return look_again(
            lambda: newest_valid_step(self.store),
            sleep=time.sleep,
            what="list the chaos store",
            backoff=LOOK_AGAIN,
        )


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def run_chaos(
    command: Sequence[str],
    *,
    kills: int,
    seed: int,
    workdir: Path,
    min_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
    grace_s: float = 10.0,
    timeout_s: float = 3600.0,
    progress: Callable[[str], object] = lambda _: None,
) -> ChaosReport:
    """Run `command` under the supervisor with `kills` interruptions, then uninterrupted,
    and compare the final states. See the module docstring.

    Args:
        command: the training command; it finds its store in ``$SPOTSAFE_STORE``.
        kills: interruptions to land.
        seed: seeds the plan (kinds and delays).
        workdir: scratch directory for both stores, the config and the supervisor logs.
        min_delay_s / max_delay_s: range of the delay after an attempt starts.
        grace_s: the pool's grace between SIGTERM and SIGKILL.
        timeout_s: give up on the whole run after this long.
        progress: called with one line per interruption.

    Raises:
        ConfigError: a number out of its bounds (kills 1 to 10,000; delays 0 to 3600 s;
            grace_s > 0 and <= 3600 s), or a scratch directory that is not empty.
    """
    _check_numbers(kills=kills, min_delay_s=min_delay_s, max_delay_s=max_delay_s,
                   grace_s=grace_s, timeout_s=timeout_s)  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise ConfigError(f"{workdir}: the chaos scratch directory must be empty")
    config = workdir / "spotsafe.toml"
    write_config(config, kills=kills, grace_s=grace_s)
    rng = random.Random(seed)
    interruptions = plan(kills, rng=rng, min_delay_s=min_delay_s, max_delay_s=max_delay_s)
    report = ChaosReport(planned=kills)
    deadline = time.monotonic() + timeout_s

    def check_time() -> None:
        if time.monotonic() > deadline:
            raise SupervisorError(f"chaos run took longer than {timeout_s:g} s")

    job = _Job(command, workdir / "chaos-store", config, workdir / "chaos-supervisor.log")
    reference = _Job(
        command, workdir / "reference-store", config, workdir / "reference-supervisor.log"
    )
    # Stopping the harness (Ctrl-C, SIGTERM) must not leave a supervisor and its job behind.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        _run_both(job, reference, interruptions, report, check_time, progress, deadline)
    finally:
        for j in (job, reference):
            j.stop(grace_s)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return report


def _check_numbers(
    *, kills: int, min_delay_s: float, max_delay_s: float, grace_s: float, timeout_s: float
) -> None:
    """Refuse what would fail later: nan written into the pool, a plan that never ends."""
    if isinstance(kills, bool) or not isinstance(kills, int) or not 1 <= kills <= MAX_KILLS:
        raise ConfigError(f"kills = {kills!r}: must be an integer >= 1 and <= {MAX_KILLS}")
    rules = (
        ("min_delay_s", min_delay_s, False, MAX_DELAY_S),
        ("max_delay_s", max_delay_s, False, MAX_DELAY_S),
        ("grace_s", grace_s, True, MAX_GRACE_S),
        ("timeout_s", timeout_s, True, 7 * 86400.0),
    )
    for name, value, positive, high in rules:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (
            not ok
            or not math.isfinite(value)
            or value < 0
            or value > high
            or (positive and value == 0)
        ):
            low = "> 0" if positive else ">= 0"
            raise ConfigError(f"{name} = {value!r}: must be a finite number {low} and <= {high:g}")


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run_both(
    job: _Job,
    reference: _Job,
    interruptions: list[Interruption],
    report: ChaosReport,
    check_time: Callable[[], None],
    progress: Callable[[str], object],
    deadline: float,
) -> None:
    """The interrupted run, then the uninterrupted one; results go into ``report``."""
    kills = report.planned
    t0 = time.monotonic()
    job.start()
    last = 0
    for i, planned in enumerate(interruptions, 1):
        landed = False
        while not landed:
            check_time()
            assert job.proc is not None
            code = job.proc.poll()
            if code is not None:
                if code == 0:
                    break  # the job finished before the plan did
                if code != 75:
                    report.problems.append(f"the supervisor exited {code} (see {job.log.name})")
                    break
                job.start()
                continue
            running = job.running_attempt(last)
            if running is None:
                time.sleep(POLL_S)
                continue
            attempt, pgid = running
            landed = _interrupt(job, attempt, pgid, planned, report, check_time)
            if landed:
                last = attempt
                report.landed[planned.kind] += 1
                progress(
                    f"[{i}/{kills}] attempt {attempt}: {planned.kind} after {planned.delay_s:.2f} s"
                )
            else:
                last = attempt  # it ended by itself first: interrupt the next one
        else:
            continue
        break
    while True:
        check_time()
        assert job.proc is not None
        try:
            code = job.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            continue
        if code == 75:
            job.start()
            continue
        if code != 0:
            report.problems.append(f"the interrupted job ended with exit {code}")
        break
    report.chaos_seconds = time.monotonic() - t0
    report.supervisor_starts = job.starts
    record = JobRecord.open(job.store)
    report.attempts = len(record.ends)
    report.classes = record.summary()
    report.chaos_final = final_state(job.store)

    t1 = time.monotonic()
    reference.start()
    assert reference.proc is not None
    code = reference.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    report.reference_seconds = time.monotonic() - t1
    if code != 0:
        report.problems.append(f"the uninterrupted run exited {code}")
    report.reference_final = final_state(reference.store)
    if report.chaos_final is None:
        report.problems.append("the interrupted run left no valid checkpoint")


def _interrupt(
    job: _Job,
    attempt: int,
    pgid: int,
    planned: Interruption,
    report: ChaosReport,
    check_time: Callable[[], None],
) -> bool:
    """Wait the planned delay, then interrupt `attempt`; whether it was still running."""
    assert job.proc is not None
    if planned.after_save:
        start_step = job.start_step(attempt)
        while job.newest_valid_step() == start_step:
            check_time()
            if job.ended(attempt) or job.proc.poll() is not None:
                return False
            time.sleep(POLL_S)
    end = time.monotonic() + planned.delay_s
    if planned.kind == "kill-mid-save":
        while time.monotonic() < end:
            if job.ended(attempt) or job.proc.poll() is not None:
                return False
            if job.half_written_save():
                _signal_group(pgid, signal.SIGKILL)
                report.mid_save_hits += 1
                return True
            time.sleep(POLL_S / 4)
    else:
        while time.monotonic() < end:
            check_time()
            time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))
    if job.ended(attempt) or job.proc.poll() is not None:
        return False
    if planned.kind == "term-child":
        _signal_group(pgid, signal.SIGTERM)
    elif planned.kind in ("kill-child", "kill-mid-save"):
        _signal_group(pgid, signal.SIGKILL)
    elif planned.kind == "term-supervisor":
        job.proc.send_signal(signal.SIGTERM)
        job.proc.wait()
        job.start()
    elif planned.kind == "kill-supervisor":
        job.proc.kill()
        job.proc.wait()
        job.start()
    return True
