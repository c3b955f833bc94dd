"""The Guard: a training loop that saves on schedule and stops cleanly when asked.

Invariant: every stop request ends in either exit 75 (configurable) with a checkpoint at the
stop step, or a ``stop`` event in the store that says why not. Nothing here does I/O inside a
signal handler: handlers only record the request; the loop acts on it at a step boundary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

from spotsafe.checkpoint import Checkpointer, PendingSave, SaveInfo, distributed
from spotsafe.data import release_workers, shield_workers
from spotsafe.env import ChildEnv
from spotsafe.errors import ConfigError, SpotsafeError, StopError, StorageError
from spotsafe.interrupt import (
    NoticeWatcher,
    SignalCatcher,
    StopFlag,
    StopKind,
    StopRequest,
    Watcher,
    watchers_from_env,
)
from spotsafe.interrupt.signals import DEFAULT_SIGNALS
from spotsafe.jobrecord import observed_interruptions, record_clean_stop
from spotsafe.policy import (
    Auto,
    EverySeconds,
    EverySteps,
    IntervalState,
    MaxLostWork,
    SaveNow,
    mtbi_estimate,
    pool_from_env,
)
from spotsafe.policy.interval import DEFAULT_PRIOR_WEIGHT
from spotsafe.policy.pools import DEFAULT_POOL, MAX_GRACE_S, MAX_LOST_WORK_S
from spotsafe.progress_channel import ProgressWriter
from spotsafe.state import TrainState
from spotsafe.storage import redact_url

log = logging.getLogger("spotsafe")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on request, newest state durable, retry me
HEARTBEAT_S = 60.0  # seconds between progress events: enough to tell progress from a hang
MAX_SAVE_FAILURES = 3  # consecutive failed saves before the Guard stops training

# Upper bounds of the Guard's settings: far above any real use, low enough that a typo (a few
# zeros too many) is an error rather than a run that never saves or never says it is alive.
# The times are a pool's own bounds (spotsafe.policy.pools): max_lost_work_s, grace_s.
MAX_EVERY_STEPS = 10_000_000  # steps between saves: more than whole runs take
MAX_EVERY_S = MAX_LOST_WORK_S  # a week between saves, the most lost work a pool allows
MAX_HEARTBEAT_S = 86400.0  # a day between progress events


class IntervalPolicy(Protocol):
    """Anything with ``decide(IntervalState) -> SaveNow | Wait`` (see spotsafe.policy)."""

    def decide(self, state: IntervalState) -> Any: ...


def _check(name: str, value: Any, bound: float, unit: str, *, integer: bool = False) -> None:
    """Refuse a Guard setting that is set and not in (0, bound]: not a number (bools and
    NaN included), infinite, too small or too large. The message names all three."""
    if value is None:
        return
    number = isinstance(value, int) if integer else isinstance(value, (int, float))
    # Comparisons refuse NaN and the infinities too, and compare huge integers exactly.
    if isinstance(value, bool) or not number or not 0 < value <= bound:
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(
            f"Guard: {name}={value!r} must be {kind} > 0 and at most {bound:,.0f} ({unit})"
        )


class Guard:
    """Wraps a training loop: checkpoints on a lost-work policy, stops cleanly on request.

    Args:
        checkpointer: where the state goes.
        state: what to save.
        interval: a policy from :mod:`spotsafe.policy`; default ``Auto`` (Young/Daly from the
            measured save cost, capped by the pool's ``max_lost_work_s``).
        every_steps: save every N steps, 1 to 10,000,000 (``MAX_EVERY_STEPS``).
        every_s: save every S seconds, > 0 and at most a week (``MAX_EVERY_S``).
        max_lost_work_s: save as rarely as losing at most this many seconds of work allows,
            > 0 and at most a week (a pool's bound). Give at most one of these three, or
            ``interval``.
        exit_code: the exit status after a clean stop, 1-255 (75, EX_TEMPFAIL, by default).
        signals: the signals that request a stop (SIGTERM, SIGINT, SIGUSR1).
        grace_s: seconds a signal leaves before the SIGKILL, > 0 and at most an hour (a
            pool's bound); default: the pool's ``grace_s`` (the supervisor SIGKILLs after
            it; keep it below Kubernetes' terminationGracePeriodSeconds).
        watchers: cloud notice watchers; None means from ``$SPOTSAFE_CLOUD``.
        async_saves: snapshot on the training thread, persist in the background.
        heartbeat_s: seconds between progress events in the store, > 0 and at most a day
            (``MAX_HEARTBEAT_S``).
        clock: monotonic seconds, injectable for tests.

    Raises:
        ConfigError: a setting out of its bounds (NaN and infinities included), named with
            its value and bound, before the Guard reads the store.

    Leaving the block normally waits for the save in flight and saves the final state.

    Example:
        >>> import tempfile, torch, spotsafe
        >>> model = torch.nn.Linear(2, 1)
        >>> state = spotsafe.TrainState(model=model)
        >>> ckpt = spotsafe.Checkpointer(tempfile.mkdtemp(), allow_ephemeral=True)
        >>> with spotsafe.Guard(ckpt, state, every_steps=2, watchers=[]) as guard:
        ...     for _ in range(4):
        ...         guard.step()
        >>> state.step
        4
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        state: TrainState,
        *,
        interval: IntervalPolicy | None = None,
        every_steps: int | None = None,
        every_s: float | None = None,
        max_lost_work_s: float | None = None,
        exit_code: int = EXIT_PREEMPTED,
        signals: Sequence[int] = DEFAULT_SIGNALS,
        grace_s: float | None = None,
        watchers: Sequence[Watcher] | None = None,
        async_saves: bool = True,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        chosen = [x is not None for x in (interval, every_steps, every_s, max_lost_work_s)]
        if sum(chosen) > 1:
            raise ConfigError(
                "Guard: give at most one of interval=, every_steps=, every_s=, max_lost_work_s="
            )
        if (
            isinstance(exit_code, bool)
            or not isinstance(exit_code, int)
            or not 1 <= exit_code <= 255
        ):
            raise ConfigError(
                f"Guard: exit_code={exit_code!r} must be an exit status from 1 to 255: a stopped"
                " run is not a finished one (0 would make a preemption read as success)"
            )
        _check("every_steps", every_steps, MAX_EVERY_STEPS, "steps", integer=True)
        _check("every_s", every_s, MAX_EVERY_S, "seconds: a week")
        _check("max_lost_work_s", max_lost_work_s, MAX_LOST_WORK_S, "seconds: a week")
        _check("grace_s", grace_s, MAX_GRACE_S, "seconds: an hour")
        _check("heartbeat_s", heartbeat_s, MAX_HEARTBEAT_S, "seconds: a day")
        self.pool = pool_from_env()
        if interval is None:
            if every_steps is not None:
                interval = EverySteps(n=every_steps)
            elif every_s is not None:
                interval = EverySeconds(interval_s=every_s)
            elif max_lost_work_s is not None:
                interval = MaxLostWork(max_lost_work_s=max_lost_work_s)
            else:
                interval = Auto.from_pool(self.pool)
        self.mtbi_s = self._observed_mtbi_s(checkpointer)
        self.checkpointer = checkpointer
        self.state = state
        self.interval = interval
        self.exit_code = exit_code
        self.async_saves = async_saves
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.flag = StopFlag()
        self.grace_s = self.pool.grace_s if grace_s is None else grace_s
        self._signals = SignalCatcher(
            self.flag, signals=tuple(signals), grace_s=self.grace_s, clock=clock
        )
        self._watchers = watchers
        self._notices: NoticeWatcher | None = None
        self.events = checkpointer.events
        self._pending: PendingSave | None = None
        self._last_saved: tuple[int, int] | None = None  # (step, epoch) of the newest commit
        self._last_saved_path: str | None = None  # where that commit is
        self._pending_at: tuple[int, int] | None = None
        self._last_save_s = 0.0
        self._last_step_s = 0.0
        self._mean_step_s: float | None = None
        self._blocking_s: float | None = None
        self._persist_s: float | None = None
        self._save_failures = 0
        self._last_heartbeat_s = 0.0
        self._steps_since_save = 0
        self._entered = False
        # The supervisor's progress board ($SPOTSAFE_PROGRESS): how far this rank got, for
        # the job record and the hang check. None outside a supervisor; never raises.
        self._progress = ProgressWriter.from_environ(rank=distributed.rank_and_world()[0])
        self._restore_told = False
        self._next_save_told = False

    def _observed_mtbi_s(self, checkpointer: Checkpointer) -> float | None:
        """The pool's MTBI prior updated by the interruptions this job has had so far (read
        from the supervisor's job record); None outside the supervisor: the prior applies."""
        if checkpointer.attempt is None:
            return None
        try:
            interruptions, runtime_s = observed_interruptions(checkpointer.store)
        except StorageError as e:
            log.warning("could not read the job record, using the MTBI prior: %s", e)
            return None
        return mtbi_estimate(self.pool.mtbi_prior_s, DEFAULT_PRIOR_WEIGHT, interruptions, runtime_s)

    # ----------------------------------------------------------------- context

    def __enter__(self) -> Guard:
        now = self.clock()
        self._last_save_s = self._last_step_s = self._last_heartbeat_s = now
        commit, at = self.checkpointer.last_commit, (self.state.step, self.state.epoch)
        if commit is not None and (commit.step, commit.epoch) == at:
            # Just restored (or saved) at this very state: a run with nothing left to train
            # must not write the same checkpoint again when it leaves the block.
            self._last_saved, self._last_saved_path = (commit.step, commit.epoch), commit.path
        for obj in self.state.objects.values():
            shield_workers(getattr(obj, "loader", obj))
        self._signals.__enter__()
        try:
            watchers = self._watchers
            if watchers is None:
                watchers = watchers_from_env(clock=self.clock)
            self._notices = NoticeWatcher(self.flag, watchers, clock=self.clock).start()
            self._record(
                "guard_start",
                step=self.state.step,
                pool=ChildEnv.from_environ().pool or DEFAULT_POOL,
            )
            if self._progress is not None:
                self._progress.entered()
                self._tell_restore()
        except BaseException:
            # No __exit__ follows a failed __enter__: left installed, the handlers would
            # swallow every later SIGTERM of a process that no longer polls the flag.
            self._leave()
            raise
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._collect(block=True)
            if exc_type is None and self._last_saved != (self.state.step, self.state.epoch):
                # The run finished: its final state is the job's result, so make it durable.
                if self._progress is not None:
                    self._progress.saving()
                self._saved(self.checkpointer.save(self.state))
                self._record("finished", step=self.state.step, epoch=self.state.epoch)
            if exc_type is None:
                self.checkpointer.flush()
        finally:
            self._leave()

    def _leave(self) -> None:
        """Undo what ``__enter__`` did: once the block is left, the process is the user's
        again, and a SIGTERM ends it."""
        self._entered = False
        if self._progress is not None:
            self._progress.left()
        try:
            self._signals.__exit__(None, None, None)
            if self._notices is not None:
                self._notices.stop()
        finally:
            # Whatever left the block (its end, an exception, a stop), the loop is over: its
            # loader workers go now, in order, rather than at interpreter exit.
            for obj in self.state.objects.values():
                release_workers(obj)
            self._flush_events()

    # ----------------------------------------------------------------- the loop

    def step(self) -> None:
        """Mark the end of one training step: count it, save if due, stop if asked.

        On a stop request this does not return: it flushes a checkpoint at this step and
        raises ``SystemExit(exit_code)``.
        """
        if not self._entered:
            raise ConfigError("Guard.step() outside `with Guard(...) as guard:`")
        self.state.step += 1
        self._steps_since_save += 1
        now = self.clock()
        progress = self._progress
        if progress is not None:
            progress.step(self.state.step)
            if not self._restore_told:
                self._tell_restore()  # a restore made inside the block
                self._restore_told = True
        took = now - self._last_step_s
        self._last_step_s = now
        self._mean_step_s = (
            took if self._mean_step_s is None else 0.9 * self._mean_step_s + 0.1 * took
        )
        self._collect(block=False)

        stop = self.flag.stop_requested
        early = self.flag.take_save_now()
        due = self.interval.decide(
            IntervalState(
                now_s=now,
                last_save_s=self._last_save_s,
                steps_since_save=self._steps_since_save,
                mean_step_s=self._mean_step_s,
                save_blocking_s=self._blocking_s,
                persist_s=self._persist_s,
                mtbi_s=self.mtbi_s,
            )
        )
        if distributed.active():
            # Every rank must stop and save at the same step: one tiny all-reduce per step.
            any_stop, any_early, any_due = distributed.any_flags(
                [stop is not None, early is not None, isinstance(due, SaveNow)]
            )
            if any_stop and stop is None:
                stop = StopRequest(
                    source="peer-rank", kind=StopKind.STOP, deadline_s=None, received_s=now
                )
            if any_early and early is None:
                early = StopRequest(
                    source="peer-rank", kind=StopKind.SAVE_NOW, deadline_s=None, received_s=now
                )
            if any_due and not isinstance(due, SaveNow):
                due = SaveNow(reason="another rank's interval")
        if stop is not None:
            self._stop(stop)
        if early is not None:
            self._record("notice", source=early.source, action="save_now", step=self.state.step)
            self._save(f"early warning from {early.source}")
        elif isinstance(due, SaveNow):
            self._save(due.reason)
        elif progress is not None and not self._next_save_told:
            # Once per interval: when the next checkpoint is due, for the status line.
            self._next_save_told = True
            steps = getattr(due, "remaining_steps", None)
            progress.next_save(
                in_s=getattr(due, "remaining_s", None),
                at_step=None if steps is None else self.state.step + steps,
            )
        if self.events is not None and now - self._last_heartbeat_s >= self.heartbeat_s:
            self._last_heartbeat_s = now
            self._record("heartbeat", step=self.state.step, epoch=self.state.epoch)

    def end_epoch(self) -> None:
        """Mark the end of an epoch."""
        self.state.epoch += 1

    @property
    def stop_requested(self) -> StopRequest | None:
        """The pending stop request, if any (for loops that want to look)."""
        return self.flag.stop_requested

    # ----------------------------------------------------------------- saving

    def _save(self, reason: str) -> None:
        t0 = self.clock()
        if self._progress is not None:
            self._progress.saving()
        self._collect(block=True)  # one save in flight at a time
        try:
            if self.async_saves:
                self._pending = self.checkpointer.save_async(self.state)
                self._pending_at = (self.state.step, self.state.epoch)
                self._blocking_s = self.clock() - t0
            else:
                info = self.checkpointer.save(self.state)
                self._blocking_s = self._persist_s = info.persist_s
                self._saved(info)
        except StorageError as e:
            self._save_failed(e)
            return
        self._last_save_s = t0
        self._steps_since_save = 0
        log.debug("save at step %d: %s", self.state.step, reason)

    def _collect(self, *, block: bool) -> None:
        """Account for the save in flight once it is done (or wait for it)."""
        pending = self._pending
        if pending is None or not (block or pending.done()):
            return
        self._pending = None
        try:
            # This save's own outcome: a distributed save committed before save_async
            # returned, and the Checkpointer holds no save in flight to wait for.
            info = pending.wait()
        except StorageError as e:
            self._save_failed(e)
            return
        self._persist_s = info.persist_s
        self._saved(info, self._pending_at)

    def _saved(self, info: SaveInfo, at: tuple[int, int] | None = None) -> None:
        """Note the commit ``info`` of the state at ``at`` (step, epoch); default: the
        current state."""
        self._last_saved = at or (self.state.step, self.state.epoch)
        self._last_saved_path = info.path
        self._save_failures = 0
        if self._progress is not None:
            self._progress.saved(self._last_saved[0])
            self._next_save_told = False

    def _tell_restore(self) -> None:
        """Tell the supervisor what the checkpointer restored, once it has."""
        restored = self.checkpointer.last_restore
        if self._progress is not None and restored is not None:
            self._progress.restored(step=restored.step, seconds=restored.load_s)
            self._restore_told = True

    def _save_failed(self, e: StorageError) -> None:
        self._save_failures += 1
        self._record("save_failed", step=self.state.step, error=str(e), retryable=e.retryable)
        if not e.retryable or self._save_failures >= MAX_SAVE_FAILURES:
            raise e
        log.warning(
            "checkpoint at step %d failed (%d in a row), training goes on: %s",
            self.state.step,
            self._save_failures,
            e,
        )

    # ----------------------------------------------------------------- stopping

    def _stop(self, request: StopRequest) -> None:
        t0 = self.clock()
        remaining = request.remaining_s(t0)
        expected = self._persist_s
        if remaining is not None and expected is not None and expected > remaining:
            log.warning(
                "stop requested by %s with %.1f s left; the last save took %.1f s: flushing anyway",
                request.source,
                remaining,
                expected,
            )
        log.info("stop requested by %s at step %d: flushing", request.source, self.state.step)
        self._record(
            "notice",
            source=request.source,
            action="stop",
            step=self.state.step,
            deadline_in_s=remaining,
            detail=dict(request.detail),
        )
        try:
            self._collect(block=True)
            if self._last_saved != (self.state.step, self.state.epoch):
                self._saved(self.checkpointer.save(self.state))
            self.checkpointer.flush()  # with a staging tier: until the uploads are done
        except SpotsafeError as e:
            self._record(
                "stop",
                clean=False,
                step=self.state.step,
                source=request.source,
                reason=f"flush failed: {e}",
            )
            self._flush_events()
            raise StopError(
                f"stop requested by {request.source} at step {self.state.step}, but the"
                f" checkpoint could not be flushed: {e}"
            ) from e
        done = self.clock()
        flush_s = done - t0
        fit = remaining is None or flush_s <= remaining
        if not fit:
            log.warning(
                "the flush took %.1f s, past the %.1f s the notice left", flush_s, remaining
            )
        self._record(
            "stop",
            clean=True,
            step=self.state.step,
            source=request.source,
            flush_s=flush_s,
            deadline_met=fit,
            notice_to_durable_s=done - request.received_s,
            exit_code=self.exit_code,
        )
        # The job record's create-once stop: how the supervisor tells a clean stop from a
        # crash whatever code reaches it (torchrun turns 75 into 1).
        record_clean_stop(
            self.checkpointer.store,
            self.checkpointer.attempt,
            step=self.state.step,
            reason=request.source,
            exit_code=self.exit_code,
            flush_s=flush_s,
            deadline_met=fit,
        )
        self._flush_events()
        if self._notices is not None and request.kind is StopKind.STOP:
            self._notices.acknowledge(request)
        log.info(
            "checkpoint at step %d is durable; exiting with %d", self.state.step, self.exit_code
        )
        if self.checkpointer.attempt is None and distributed.rank_and_world()[0] == 0:
            # No supervisor will retry: tell the person who started the run what to do next.
            log.warning(
                "spotsafe: stopped at step %d on %s; state saved to %s; run the same command"
                " to resume",
                self.state.step,
                request.detail.get("signal") or request.source,
                redact_url(self._last_saved_path or self.checkpointer.store.url),
            )
        raise SystemExit(self.exit_code)

    # ----------------------------------------------------------------- events

    def _record(self, kind: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.record(kind, **fields)

    def _flush_events(self) -> None:
        if self.events is None:
            return
        try:
            self.events.flush()
        except StorageError as e:
            log.warning("could not write events: %s", e)
