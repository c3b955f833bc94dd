"""The supervisor loop: ask the retry policy, carry out its answer, record what happened.

    decision = policy.decide(record.retry_state(), rng=rng)
    Done    -> exit 0
    GiveUp  -> print the reason, exit 1
    Restart -> wait after_s, run the next attempt, classify its exit, record it, loop

Everything that decides is pure and lives elsewhere (`spotsafe.policy`: `classify_exit`,
`RetryPolicy`; `lease.judge`); this module spawns, waits, signals and writes. Time, sleep and
randomness are parameters.

Each attempt gets a progress board (`spotsafe.progress_channel`): its Guards note every step
there, so the end record says how far the attempt got (``"progress"``) even when the child was
SIGKILLed, and an attempt that shows no training step for the pool's ``max_stall_s`` (counted
from its first step, never during start-up) is stopped like a preempted one (SIGTERM, the
grace, SIGKILL of its whole process tree) and recorded as HUNG. The latest `RunStatus` is in
`Supervisor.status`, for ``spotsafe run``'s status line.

Exit codes: 0 the job succeeded; 1 the supervisor gave up (a budget is spent; the reason is
printed and recorded); 75 the supervisor itself was asked to stop (SIGTERM / SIGINT / a cloud
notice) and stopped its child: run it again, here or elsewhere, to continue the job.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from spotsafe.checkpoint.discovery import discover
from spotsafe.env import ChildEnv
from spotsafe.errors import StorageError, SupervisorError
from spotsafe.events import EventLog, read_events
from spotsafe.interrupt import NoticeWatcher, SignalCatcher, StopFlag, StopRequest, Watcher
from spotsafe.jobrecord import clean_stop_recorded, record_child
from spotsafe.lease import Lease, LeaseKeeper
from spotsafe.policy import (
    AttemptRecord,
    Done,
    ExitClass,
    GiveUp,
    Pool,
    Restart,
    RetryPolicy,
    classify_exit,
)
from spotsafe.policy.retry import PREEMPTED_EXIT_CODE, Rng
from spotsafe.progress_channel import Progress, ProgressBoard, StallClock
from spotsafe.redact import redact_command, redact_script, redact_text
from spotsafe.storage import Store
from spotsafe.supervisor.child import Child
from spotsafe.supervisor.job import AttemptStart, JobRecord
from spotsafe.supervisor.progress import look_again, newest_valid_step
from spotsafe.supervisor.status import Phase, RunStatus

__all__ = ["EXIT_GAVE_UP", "EXIT_STOPPED", "Outcome", "Supervisor", "sigkill_after_s"]

log = logging.getLogger("spotsafe")

EXIT_GAVE_UP = 1
EXIT_STOPPED = PREEMPTED_EXIT_CODE  # the supervisor was stopped: run it again to continue
LOGS_DIR = "logs"
POLL_S = 0.05  # how often the wait loop looks at the child, the stop flag and the lease


@dataclass(frozen=True, slots=True, kw_only=True)
class _Waited:
    """How the wait for one attempt's child ended."""

    code: int
    stopped_by: str | None  # the supervisor was asked to stop (signal, notice, lost lease)
    lease_lost: bool
    hung_s: float | None  # seconds without a step when the attempt was declared hung
    progress: Progress  # the board's last word


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How `Supervisor.run` ended."""

    exit_code: int
    reason: str
    attempts: tuple[AttemptRecord, ...] = field(default=())


class Supervisor:
    """Runs one job's command until it succeeds, a budget is spent, or it is told to stop.

    Args:
        store: the job's store.
        store_url: the URL the child opens (default ``store.url``).
        command: the command line to run.
        pool: the pool's settings (budgets, backoff, grace, lease TTL, on-demand hook, prices).
        pool_name: its name.
        job_id: ``--job-id``; None: the record's, or one derived from the store URL.
        config: the config file the pool came from.
        watchers: cloud notice watchers; a STOP notice stops the child and the supervisor.
        extra_env: more environment variables for the child.
        clock / wall_clock / sleep / rng: injected time and randomness.

    The child's environment is the supervisor's, with the contract of `spotsafe.env`
    (`ChildEnv`: store URL, job id, attempt, pool name, config file, on-demand flag) set for
    this attempt and any stale value of it removed.
        echo: pass the child's output through to ours.

    Example:
        >>> import sys
        >>> from spotsafe.storage import open_store
        >>> from spotsafe.policy import Pool
        >>> sup = Supervisor(store=open_store("memory://spotsafe-sup-doc"), watchers=[],
        ...                  command=[sys.executable, "-c", "pass"], pool=Pool(), echo=False)
        >>> sup.run().exit_code
        0
    """

    def __init__(
        self,
        *,
        store: Store,
        command: Sequence[str],
        pool: Pool,
        pool_name: str = "standard",
        store_url: str | None = None,
        job_id: str | None = None,
        config: Path | None = None,
        watchers: Sequence[Watcher] = (),
        extra_env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
        rng: Rng | None = None,
        echo: bool = True,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> None:
        if not command:
            raise SupervisorError("no command to run: spotsafe run [OPTIONS] -- CMD ...")
        self.store = store
        self.store_url = store_url or store.url
        self.command = list(command)
        self.pool = pool
        self.pool_name = pool_name
        self.job_id = job_id
        self.config = config
        self.watchers = list(watchers)
        self.extra_env = dict(extra_env or {})
        self.clock = clock
        self.wall_clock = wall_clock
        self.flag = StopFlag()
        self.sleep = sleep if sleep is not None else self._interruptible_sleep
        self.rng: Rng = rng if rng is not None else random.Random()
        self.policy = RetryPolicy.from_pool(pool)
        self.echo = echo
        self.stdout, self.stderr = stdout, stderr
        self.record: JobRecord | None = None
        self.lease = Lease(store, ttl_s=pool.lease_ttl_s, clock=clock, wall_clock=wall_clock)
        self.status: RunStatus | None = None
        """The latest look at the job, replaced whole as it changes (for a status line)."""

    # ------------------------------------------------------------------ the loop

    def run(self) -> Outcome:
        """Acquire the lease, recover cut-off attempts, then loop until done.

        Raises:
            LeaseHeld: another live supervisor runs this job.
        """
        record = JobRecord.open(self.store, job_id=self.job_id)
        self.record = record
        epoch = self.lease.acquire()
        keeper = LeaseKeeper(self.lease, clock=self.clock).start()
        in_main = _is_main_thread()
        signals = SignalCatcher(self.flag, grace_s=self.pool.grace_s, clock=self.clock)
        notices = NoticeWatcher(self.flag, self.watchers, clock=self.clock)
        finished = False
        try:
            if in_main:
                signals.__enter__()
            notices.start()
            log.info("job %s in %s: lease epoch %d", record.job_id, self.store.url, epoch)
            self._recover(record)
            outcome = self._loop(record, keeper)
            finished = True
            return outcome
        finally:
            notices.stop()
            if in_main:
                signals.__exit__(None, None, None)
            keeper.stop()
            if finished and not keeper.lost.is_set():
                # A clean end (done, gave up, stopped on request): the next supervisor need
                # not wait out the TTL. After a crash of ours, it waits: we may still be alive.
                self.lease.release()

    def _loop(self, record: JobRecord, keeper: LeaseKeeper) -> Outcome:
        on_demand_done = False
        while True:
            decision = self.policy.decide(record.retry_state(), rng=self.rng)
            if isinstance(decision, Done):
                return Outcome(exit_code=0, reason="the job succeeded", attempts=self._attempts())
            if isinstance(decision, GiveUp):
                log.error("giving up on job %s: %s", record.job_id, decision.reason)
                return Outcome(
                    exit_code=EXIT_GAVE_UP, reason=decision.reason, attempts=self._attempts()
                )
            assert isinstance(decision, Restart)
            if decision.after_s > 0:
                log.warning("%s; next attempt in %.1f s", decision.reason, decision.after_s)
                self.status = RunStatus(
                    job_id=record.job_id,
                    phase=Phase.WAITING,
                    attempt=record.next_attempt,
                    retry_at_s=self.wall_clock() + decision.after_s,
                    interruptions=record.retry_state().interruptions,
                )
                self.sleep(decision.after_s)
            stop = self.flag.stop_requested
            if stop is not None:
                return Outcome(
                    exit_code=EXIT_STOPPED,
                    reason=f"stopped by {stop.source} before the next attempt",
                    attempts=self._attempts(),
                )
            if keeper.lost.is_set():
                raise SupervisorError(f"lost the job's lease: {keeper.reason}")
            if decision.on_demand and not on_demand_done:
                self._on_demand(record)
                on_demand_done = True
            result = self._attempt(record, keeper, on_demand=decision.on_demand)
            if result is not None:
                return result

    def _attempts(self) -> tuple[AttemptRecord, ...]:
        assert self.record is not None
        return self.record.retry_state().attempts

    # ------------------------------------------------------------------ one attempt

    def _attempt(
        self, record: JobRecord, keeper: LeaseKeeper, *, on_demand: bool
    ) -> Outcome | None:
        """Run one attempt to its end and record it; an Outcome when the supervisor must stop."""
        n = record.next_attempt
        start_step, start_step_s = self._newest_valid(record, f"find attempt {n}'s start step")
        started_s = self.wall_clock()
        board = _progress_board()
        try:
            return self._run_attempt(
                record, keeper, n, start_step, start_step_s, started_s, board, on_demand=on_demand
            )
        finally:
            if board is not None:
                board.close()

    def _run_attempt(
        self,
        record: JobRecord,
        keeper: LeaseKeeper,
        n: int,
        start_step: int | None,
        start_step_s: float | None,
        started_s: float,
        board: ProgressBoard | None,
        *,
        on_demand: bool,
    ) -> Outcome | None:
        contract = ChildEnv(
            store=self.store_url,
            job_id=record.job_id,
            attempt=n,
            pool=self.pool_name,
            config=None if self.config is None else str(self.config.absolute()),
            on_demand=on_demand,
            progress=None if board is None else board.path,
        )
        env = {**contract.apply(os.environ), **self.extra_env}
        events = EventLog(self.store, job_id=record.job_id, attempt=n, flush_interval_s=0)
        info = {
            "host": socket.gethostname(),
            "supervisor_pid": os.getpid(),
            # Kept in the store, which more people read than the machine: no secrets.
            "command": redact_command(self.command),
            "pool": self.pool_name,
            # What this attempt's capacity costs (the pool's prices), for the cost report.
            "capacity": "on_demand" if on_demand else "spot",
            "price_per_hour": self.pool.prices.per_hour(on_demand=on_demand),
            # Both prices and the instance count: the report's on-demand equivalent.
            "spot_price_per_hour": self.pool.spot_price_per_hour,
            "on_demand_price_per_hour": self.pool.on_demand_price_per_hour,
            "instances": self.pool.instances,
        }
        record.start(
            AttemptStart(
                attempt=n,
                started_s=started_s,
                start_step=start_step,
                lease_epoch=self.lease.epoch,
                info=info,
            )
        )
        child = Child(self.command, env=env, echo=self.echo, stdout=self.stdout, stderr=self.stderr)
        record_child(self.store, n, pid=child.pid, pgid=child.pgid)
        events.record("attempt_start", start_step=start_step, pid=child.pid, on_demand=on_demand)
        _flush(events)
        log.info("attempt %d started (pid %d) from step %s", n, child.pid, start_step)

        shown = RunStatus(
            job_id=record.job_id,
            phase=Phase.STARTING,
            attempt=n,
            checkpoint_step=start_step,
            checkpoint_s=start_step_s,
            interruptions=record.retry_state().interruptions,
        )
        self.status = shown
        waited = self._wait(child, keeper, events, board, shown)
        code, stopped_by, lease_lost = waited.code, waited.stopped_by, waited.lease_lost
        ended_s = max(self.wall_clock(), started_s)
        _write_log(self.store, n, child.output.getvalue())
        # The child may have pruned while it ended: judge on a settled look, or raise (the
        # attempt stays open, and the next supervisor closes it as cut off).
        end_step = self._newest_valid_step(record, f"judge attempt {n}'s progress")
        clean = look_again(
            lambda: clean_stop_recorded(self.store, n),
            sleep=self.sleep,
            what=f"read attempt {n}'s stop record",
        )
        progressed = AttemptRecord(
            attempt=n,
            exit_class=ExitClass.CRASH,
            started_s=started_s,
            ended_s=ended_s,
            start_step=start_step,
            end_step=end_step,
        ).progressed
        hung = waited.hung_s is not None
        exit_class = classify_exit(
            code, clean_stop_recorded=clean, progressed=progressed, hung=hung
        )
        attempt = AttemptRecord(
            attempt=n,
            exit_class=exit_class,
            started_s=started_s,
            ended_s=ended_s,
            start_step=start_step,
            end_step=end_step,
            returncode=code,
        )
        progress = waited.progress.to_json()
        extra: dict[str, Any] = {"hung_after_s": waited.hung_s} if hung else {}
        record.end(attempt, clean_stop=clean, stopped_by=stopped_by, progress=progress, **extra)
        final = _status(shown, waited.progress, None, stopping=False, hung=None)
        self.status = dataclasses.replace(
            final,
            phase=Phase.ENDED,
            ended=exit_class.value,
            interruptions=record.retry_state().interruptions,
        )
        events.record(
            "attempt_end",
            exit_class=exit_class.value,
            returncode=code,
            duration_s=attempt.duration_s,
            start_step=start_step,
            end_step=end_step,
            clean_stop=clean,
            stopped_by=stopped_by,
            last_step=progress["last_step"],
            **extra,
        )
        _flush(events)
        events.close()
        log.log(
            logging.INFO if exit_class is ExitClass.SUCCESS else logging.WARNING,
            "attempt %d ended: %s (exit %s), steps %s -> %s",
            n,
            exit_class.value,
            code,
            start_step,
            end_step,
        )
        if lease_lost:
            raise SupervisorError(f"lost the job's lease, stopped attempt {n}: {keeper.reason}")
        if stopped_by is not None:
            return Outcome(
                exit_code=EXIT_STOPPED,
                reason=f"stopped by {stopped_by}; attempt {n} ended {exit_class.value}",
                attempts=self._attempts(),
            )
        return None

    def _wait(
        self,
        child: Child,
        keeper: LeaseKeeper,
        events: EventLog,
        board: ProgressBoard | None,
        shown: RunStatus,
    ) -> _Waited:
        """Wait for the child; forward a stop (signal, notice, lost lease) with the grace, and
        stop it the same way when it shows no training step for the pool's max_stall_s."""
        stopped_by: str | None = None
        lease_lost = False
        hung_s: float | None = None
        kill_at: float | None = None
        stopping = False
        stall = StallClock.from_pool(self.pool)
        progress = Progress()
        while True:
            code = child.wait(POLL_S)
            if board is not None:
                progress = board.read()  # after the exit too: a killed child's last word
            if code is not None:
                return _Waited(code=code, stopped_by=stopped_by, lease_lost=lease_lost,
                               hung_s=hung_s, progress=progress)  # fmt: skip
            now = self.clock()
            stalled = stall.stalled_s(progress, now_s=now)
            if stopped_by is None:
                stop = self.flag.stop_requested
                grace = self.pool.grace_s
                if stop is None and keeper.lost.is_set():
                    lease_lost = True
                    stopped_by = "lease lost"
                elif stop is not None:
                    stopped_by = stop.source
                    grace = self._grace(stop, now)
                    events.record(
                        "notice",
                        source=stop.source,
                        action="forward_sigterm",
                        deadline_in_s=stop.remaining_s(now),
                    )
                    _flush(events)
                if stopped_by is not None:
                    if not stopping:
                        log.warning("%s: SIGTERM to attempt's process group", stopped_by)
                        child.signal_group(signal.SIGTERM)
                        stopping = True
                    # A notice that comes while a hung attempt is stopped may shorten its grace.
                    kill_at = now + grace if kill_at is None else min(kill_at, now + grace)
            if not stopping and stalled is not None and stalled >= self.pool.max_stall_s:
                hung_s = stalled
                self._declare_hung(child, events, progress, stalled)
                stopping = True
                kill_at = now + self.pool.grace_s
            if kill_at is not None and now >= kill_at:
                log.warning("the child did not exit within the grace: SIGKILL to its process tree")
                child.kill_tree()
                kill_at = None
            self.status = _status(shown, progress, stalled, stopping=stopping, hung=hung_s)

    def _declare_hung(
        self, child: Child, events: EventLog, progress: Progress, stalled_s: float
    ) -> None:
        """Record that the attempt is hung (with each rank's furthest step), then SIGTERM it."""
        log.warning(
            "no training step for %.0f s (max_stall_s %g s), furthest step %s: stopping the"
            " attempt as hung",
            stalled_s,
            self.pool.max_stall_s,
            progress.last_step,
        )
        events.record(
            "hang",
            stalled_s=stalled_s,
            max_stall_s=self.pool.max_stall_s,
            last_step=progress.last_step,
            ranks=[
                {"slot": r.slot, "pid": r.pid, "last_step": r.last_step,
                 "last_step_s": r.last_step_s, "left_s": r.left_s}
                for r in progress.ranks
            ],
        )  # fmt: skip
        _flush(events)
        child.signal_group(signal.SIGTERM)

    def _grace(self, stop: StopRequest, now: float) -> float:
        return sigkill_after_s(stop, now_s=now, grace_s=self.pool.grace_s)

    # ------------------------------------------------------------------ recovery

    def _recover(self, record: JobRecord) -> None:
        """Close the attempts a dead supervisor left open: no exit recorded, so UNCLEAN (or
        PREEMPTED when the child recorded a clean stop), ending at its last sign of life.

        The class comes from the job record; the events only date the last sign of life."""
        for start in record.unfinished:
            n = start.attempt
            events = look_again(
                functools.partial(read_events, self.store, attempt=n),
                sleep=self.sleep,
                what=f"read attempt {n}'s events",
            )
            seen = [start.started_s, *(e.t for e in events)]
            old = self.lease.taken_over
            if old is not None and old.epoch == start.lease_epoch and old.beat_wall_s:
                seen.append(old.beat_wall_s)  # its supervisor was alive until then
            last_seen = max(seen)
            clean = look_again(
                functools.partial(clean_stop_recorded, self.store, n),
                sleep=self.sleep,
                what=f"read attempt {n}'s stop record",
            )
            end_step = self._newest_valid_step(record, f"judge cut-off attempt {n}'s progress")
            partial = AttemptRecord(
                attempt=n,
                exit_class=ExitClass.UNCLEAN,
                started_s=start.started_s,
                ended_s=last_seen,
                start_step=start.start_step,
                end_step=end_step,
            )
            exit_class = classify_exit(
                None, clean_stop_recorded=clean, progressed=partial.progressed
            )
            attempt = AttemptRecord(
                attempt=n,
                exit_class=exit_class,
                started_s=start.started_s,
                ended_s=last_seen,
                start_step=start.start_step,
                end_step=end_step,
                returncode=None,
            )
            if record.end(attempt, clean_stop=clean, recovered=True):
                log.warning(
                    "attempt %d was cut off with its supervisor: recorded as %s",
                    n,
                    exit_class.value,
                )
                log_ = EventLog(self.store, job_id=record.job_id, attempt=n, flush_interval_s=0)
                log_.record(
                    "attempt_end",
                    exit_class=exit_class.value,
                    returncode=None,
                    duration_s=attempt.duration_s,
                    recovered=True,
                    start_step=start.start_step,
                    end_step=end_step,
                )
                _flush(log_)
                log_.close()

    # ------------------------------------------------------------------ on-demand

    def _on_demand(self, record: JobRecord) -> None:
        """Run the pool's on-demand hook once per job; the env flag goes to every attempt."""
        command = self.pool.on_demand_command
        if command is None:
            return
        shown = redact_script(command)
        if not record.mark_on_demand({"wall_s": self.wall_clock(), "command": shown}):
            return
        log.warning("falling back to on-demand capacity: %s", shown)
        result = subprocess.run(command, shell=True, check=False)
        if result.returncode != 0:
            log.error("the on-demand hook exited %d", result.returncode)

    def _newest_valid(self, record: JobRecord, what: str) -> tuple[int | None, float | None]:
        """The newest valid step and when it was committed, looked at again after a
        transient failure."""

        def read() -> tuple[int | None, float | None]:
            newest = discover(self.store, job_id=record.job_id).newest_valid()
            if newest is None:
                return None, None
            created = None if newest.manifest is None else newest.manifest.created_at
            return newest.step, created

        return look_again(read, sleep=self.sleep, what=what)

    def _newest_valid_step(self, record: JobRecord, what: str) -> int | None:
        """The newest valid step, looked at again after a transient failure."""
        return look_again(
            lambda: newest_valid_step(self.store, job_id=record.job_id),
            sleep=self.sleep,
            what=what,
        )

    def _interruptible_sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a stop is requested."""
        self.flag.wait(seconds)


def sigkill_after_s(stop: StopRequest, *, now_s: float, grace_s: float) -> float:
    """Seconds a stopped child gets between the forwarded SIGTERM and SIGKILL: the pool's
    `grace_s`, or less if a notice's deadline comes sooner (a spot VM vanishes at its
    deadline anyway). A signal's own deadline is ours, so it never shortens the grace.

    Example:
        >>> from spotsafe.interrupt import StopKind
        >>> notice = StopRequest(source="aws", kind=StopKind.STOP, deadline_s=110.0,
        ...                      received_s=100.0)
        >>> sigkill_after_s(notice, now_s=100.0, grace_s=25.0)
        10.0
    """
    left = stop.remaining_s(now_s)
    if left is None or stop.source.startswith("signal:"):
        return grace_s
    return max(0.0, min(grace_s, left))


def _status(
    shown: RunStatus,
    progress: Progress,
    stalled_s: float | None,
    *,
    stopping: bool,
    hung: float | None,
) -> RunStatus:
    """The attempt's status with the board's latest word."""
    phase = Phase.HUNG if hung is not None else Phase.STOPPING if stopping else Phase.RUNNING
    if phase is Phase.RUNNING and progress.last_step is None:
        phase = Phase.STARTING
    saved = progress.saved_step
    return RunStatus(
        job_id=shown.job_id,
        phase=phase,
        attempt=shown.attempt,
        step=progress.last_step,
        checkpoint_step=shown.checkpoint_step if saved is None else saved,
        checkpoint_s=shown.checkpoint_s if saved is None else progress.saved_s,
        next_save_s=progress.next_save_s,
        next_save_step=progress.next_save_step,
        interruptions=shown.interruptions,
        stalled_s=stalled_s,
    )


def _progress_board() -> ProgressBoard | None:
    """A board for the next attempt; None (the attempt runs without) if none can be made."""
    try:
        return ProgressBoard.create()
    except OSError as e:
        log.warning(
            "no progress board (%s): the attempt's furthest step will not be recorded and"
            " hangs not detected; check the temporary directory ($TMPDIR)",
            e,
        )
        return None


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _flush(events: EventLog) -> None:
    try:
        events.flush()
    except StorageError as e:
        # The event log is for reports; the job record (written above) is what decides.
        log.warning("could not write supervisor events: %s", e)


def _write_log(store: Store, attempt: int, data: bytes) -> None:
    # The store outlives the machine and has more readers: keep no credentials in it.
    text = data.decode("utf-8", errors="surrogateescape")
    data = redact_text(text).encode("utf-8", errors="surrogateescape")
    try:
        store.create_exclusive(f"{LOGS_DIR}/attempt-{attempt:06d}.log", data)
    except StorageError as e:
        log.warning("could not keep attempt %d's log in the store: %s", attempt, e)
