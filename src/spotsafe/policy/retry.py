"""What to do after an attempt ends: classify the exit, spend a budget, restart or give up.

The supervisor records each attempt (`AttemptRecord`) in the job's history (`RetryState`),
asks ``policy.decide(state, rng=rng)`` and carries out the answer: `Restart` after a delay,
`GiveUp` with a reason, or `Done`. Nothing here sleeps, reads a clock or draws from the global
`random` module.

Rules, each chosen so that one kind of trouble cannot spend another's budget:

* **Classes.** 0 is SUCCESS. Exit 75, or a clean stop the attempt recorded in the store, is
  PREEMPTED (``torchrun`` exits 1 when its workers exited 75). Death by an *external* signal
  (SIGKILL, SIGTERM, SIGINT, SIGHUP, as a negative return code or the shell's 128 + n), or no
  recorded exit at all (the node or its supervisor vanished), is UNCLEAN. Any other code,
  including death by SIGSEGV / SIGABRT / SIGBUS (the program's own fault), is CRASH.
  An attempt the supervisor stopped because it showed no training step for the pool's
  ``max_stall_s`` (a collective waiting for a rank that stopped calling it, a process stuck
  at exit) is HUNG, whatever code its stop produced; only a 0 (it finished after all) wins.
* **No progress.** A PREEMPTED or UNCLEAN attempt that did not advance the newest valid step is
  NO_PROGRESS: an interruption loop (OOM-killed at the same step, a save slower than the
  grace, capacity reclaimed before the first save) that the large preemption budget would
  otherwise let run for hundreds of attempts. "No checkpoint before, none after" is no
  progress too: the count starts at the job's first attempt, so a job OOM-killed before its
  first save stops after ``max_no_progress`` restarts, not after ``max_preemptions``. A crash
  stays CRASH with or without progress, so a command that keeps crashing runs at most
  ``max_failures + 1`` times.
* **Budgets.** PREEMPTED and UNCLEAN spend the preemption budget (an unclean kill is what a
  spot VM's reclaim looks like without a notice); CRASH spends the failure budget; both count
  over the whole job. NO_PROGRESS spends the no-progress budget, which counts attempts *in a
  row*: it measures being stuck, so any attempt that advances the step refills it.
  HUNG spends a budget of its own, HANGS, counted over the whole job and as large as the
  failure budget (``max_hangs``, from the pool's ``max_failures``): a hang is a fault of the
  program or its environment, like a crash, not a reclaim of capacity, so a job that keeps
  hanging stops after ``max_hangs + 1`` attempts instead of idling ``max_stall_s`` a hundred
  times on the preemption budget; counted apart from crashes, so that two crashes and two
  hangs do not end a job that tolerates three of each. A hang stays HUNG with or without
  progress (the class is what the report and the operator need to see), and with the
  failure backoff.
* **Backoff.** Exponential with jitter, per budget. The exponent is the streak: the attempts of
  that budget since the last attempt that advanced the step, counting the latest. A crash
  after real progress therefore waits the initial delay again: it is not a crash loop.
* **On-demand fallback.** Once the job has seen `on_demand_after` interruptions (PREEMPTED,
  UNCLEAN or NO_PROGRESS), every Restart carries ``on_demand=True``. Hangs do not count:
  on-demand capacity does not cure a deadlock.

Example:
    >>> import random
    >>> from spotsafe.policy.pools import PRESETS
    >>> policy = RetryPolicy.from_pool(PRESETS["standard"])
    >>> crash = AttemptRecord(attempt=1, exit_class=ExitClass.CRASH, started_s=0.0,
    ...                       ended_s=60.0, start_step=None, end_step=None, returncode=1)
    >>> policy.decide(RetryState(attempts=(crash,)), rng=random.Random(0)).reason
    'crash (exit 1): restart 1 of 3 allowed after crashes'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

# The backoff is shared with every other part that retries (the S3 store, the uploader, the
# watchers): it lives below them all, in spotsafe.backoff, and is re-exported here.
from spotsafe.backoff import MAX_DELAY_S, MAX_MULTIPLIER, Backoff, Rng
from spotsafe.errors import ConfigError

if TYPE_CHECKING:
    from spotsafe.policy.pools import Pool

__all__ = [
    "MAX_BUDGET",
    "MAX_DELAY_S",
    "MAX_MULTIPLIER",
    "PREEMPTED_EXIT_CODE",
    "AttemptRecord",
    "Backoff",
    "Budget",
    "Done",
    "ExitClass",
    "GiveUp",
    "Restart",
    "RetryDecision",
    "RetryPolicy",
    "RetryState",
    "Rng",
    "classify_exit",
]

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): "stopped on request, state flushed, retry"

# Signals that come from outside the program: the OOM killer, a node shutdown, an orchestrator,
# a user. POSIX numbers, spelled out so this module imports on any platform.
_SIGHUP, _SIGINT, _SIGKILL, _SIGTERM = 1, 2, 9, 15
_EXTERNAL_SIGNALS = frozenset({_SIGHUP, _SIGINT, _SIGKILL, _SIGTERM})
_SHELL_SIGNAL_BASE = 128  # a shell (and a container runtime) reports death by signal n as 128+n

# Upper bounds of the knobs (the pools use the same): past them a value is a mistake, and a
# huge finite one is not harmless (a 1e300 s backoff waits for ever).
MAX_BUDGET = 10**6  # restarts
DEFAULT_BACKOFF = Backoff()  # 10 s doubling to 10 min, half jitter: the standard pool's


class ExitClass(enum.Enum):
    """How an attempt ended. Exactly one per attempt; see the module docstring for the rules."""

    SUCCESS = "success"
    PREEMPTED = "preempted"
    UNCLEAN = "unclean"
    CRASH = "crash"
    NO_PROGRESS = "no_progress"
    HUNG = "hung"


class Budget(enum.Enum):
    """The restart budgets; each exit class but SUCCESS spends exactly one."""

    PREEMPTIONS = "preemptions"
    FAILURES = "failures"
    NO_PROGRESS = "no_progress"
    HANGS = "hangs"


_BUDGET_OF: dict[ExitClass, Budget] = {
    ExitClass.PREEMPTED: Budget.PREEMPTIONS,
    ExitClass.UNCLEAN: Budget.PREEMPTIONS,
    ExitClass.CRASH: Budget.FAILURES,
    ExitClass.NO_PROGRESS: Budget.NO_PROGRESS,
    ExitClass.HUNG: Budget.HANGS,
}
_INTERRUPTIONS = frozenset({ExitClass.PREEMPTED, ExitClass.UNCLEAN, ExitClass.NO_PROGRESS})


def _external_signal(returncode: int) -> bool:
    if returncode < 0:
        return -returncode in _EXTERNAL_SIGNALS
    return returncode - _SHELL_SIGNAL_BASE in _EXTERNAL_SIGNALS


def classify_exit(
    returncode: int | None,
    *,
    clean_stop_recorded: bool = False,
    progressed: bool | None = None,
    preempted_exit_code: int = PREEMPTED_EXIT_CODE,
    hung: bool = False,
) -> ExitClass:
    """Classify how an attempt ended, from its exit code and what it recorded in the store.

    Args:
        returncode: the child's return code as `subprocess` reports it (negative: killed by
            that signal), or None when no exit was recorded (the node or supervisor was lost).
        clean_stop_recorded: whether the attempt recorded a clean stop (state flushed on a
            stop request) in the store; wins over the code, since launchers such as torchrun
            turn their workers' 75 into 1.
        progressed: whether the newest valid step advanced during the attempt; None when
            unknown (never classified as no progress).
        preempted_exit_code: the code that means "stopped on request, state flushed".
        hung: whether the supervisor stopped the attempt for showing no training step for
            the pool's ``max_stall_s``; HUNG unless it exited 0 all the same.

    Example:
        >>> classify_exit(1, clean_stop_recorded=True, progressed=True)
        <ExitClass.PREEMPTED: 'preempted'>
        >>> classify_exit(-9, progressed=False)
        <ExitClass.NO_PROGRESS: 'no_progress'>
        >>> classify_exit(-11, progressed=True)  # SIGSEGV: the program's own fault
        <ExitClass.CRASH: 'crash'>
        >>> classify_exit(-9, hung=True, progressed=False)
        <ExitClass.HUNG: 'hung'>
    """
    if returncode == 0:
        return ExitClass.SUCCESS
    if hung:
        return ExitClass.HUNG
    if clean_stop_recorded or returncode == preempted_exit_code:
        interrupted = ExitClass.PREEMPTED
    elif returncode is None or _external_signal(returncode):
        interrupted = ExitClass.UNCLEAN
    else:
        return ExitClass.CRASH
    return ExitClass.NO_PROGRESS if progressed is False else interrupted


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One finished attempt, as the job record keeps it.

    Example:
        >>> AttemptRecord(attempt=2, exit_class=ExitClass.PREEMPTED, started_s=0.0,
        ...               ended_s=3600.0, start_step=100, end_step=900).progressed
        True
    """

    attempt: int
    """The attempt's number, 1, 2, ... across the whole job (``SPOTSAFE_ATTEMPT``)."""
    exit_class: ExitClass
    """How it ended (`classify_exit`)."""
    started_s: float
    """When it started, in seconds since the epoch (wall clock: the record spans machines)."""
    ended_s: float
    """When it ended (or was found dead), in seconds since the epoch."""
    start_step: int | None
    """The newest valid checkpoint's step when it started; None when there was none."""
    end_step: int | None
    """The newest valid checkpoint's step when it ended; None when there was none."""
    returncode: int | None = None
    """The child's return code; None when no exit was recorded."""

    def __post_init__(self) -> None:
        if self.attempt < 1:
            raise ConfigError(f"attempt = {self.attempt!r}: attempts are numbered from 1")
        if self.ended_s < self.started_s:
            raise ConfigError(f"ended_s = {self.ended_s!r}: before started_s = {self.started_s!r}")

    @property
    def progressed(self) -> bool:
        """Whether the newest valid step advanced: a first checkpoint counts, ending with
        none (whether or not one existed before) does not.

        Example:
            >>> AttemptRecord(attempt=1, exit_class=ExitClass.UNCLEAN, started_s=0.0,
            ...               ended_s=5.0, start_step=None, end_step=None).progressed
            False
        """
        if self.end_step is None:
            return False
        return self.start_step is None or self.end_step > self.start_step

    @property
    def duration_s(self) -> float:
        """Seconds the attempt ran."""
        return self.ended_s - self.started_s


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryState:
    """The job's attempt history, oldest first; what budgets are spent follows from it.

    Example:
        >>> RetryState().spent(Budget.FAILURES)
        0
    """

    attempts: tuple[AttemptRecord, ...] = ()
    """Every finished attempt, oldest first."""

    def with_attempt(self, record: AttemptRecord) -> RetryState:
        """A new state with `record` appended."""
        return RetryState(attempts=(*self.attempts, record))

    def streak(self, budget: Budget) -> int:
        """Attempts of `budget` since the last attempt that advanced the step, inclusive.

        Walks back from the newest attempt, counting those that spend `budget`, and stops
        after the first one (of any class) that advanced the newest valid step.
        """
        count = 0
        for record in reversed(self.attempts):
            if _BUDGET_OF.get(record.exit_class) is budget:
                count += 1
            if record.progressed:
                break
        return count

    def spent(self, budget: Budget) -> int:
        """How much of `budget` the job has spent: a total, or for NO_PROGRESS a streak."""
        if budget is Budget.NO_PROGRESS:
            return self.streak(budget)
        return sum(1 for r in self.attempts if _BUDGET_OF.get(r.exit_class) is budget)

    @property
    def interruptions(self) -> int:
        """Attempts that ended in an interruption (preempted, unclean or without progress)."""
        return sum(1 for r in self.attempts if r.exit_class in _INTERRUPTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart:
    """Start the next attempt after `after_s` seconds.

    Example:
        >>> Restart(after_s=12.0, reason="preempted").on_demand
        False
    """

    after_s: float
    """Seconds to wait before starting it."""
    reason: str
    """Why, in words, for the log and the event log."""
    on_demand: bool = False
    """Whether to fall back to on-demand capacity (run the hook, set the env flag)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GiveUp:
    """Stop retrying: a budget is spent. The supervisor prints `reason` and exits non-zero.

    Example:
        >>> GiveUp(reason="crashed 4 times", exit_class=ExitClass.CRASH).exit_class.value
        'crash'
    """

    reason: str
    """Why, in words: the class, how often, and the budget."""
    exit_class: ExitClass
    """The class of the attempt that spent the last of its budget."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """The job succeeded; nothing more to run.

    Example:
        >>> Done()
        Done()
    """


RetryDecision = Restart | GiveUp | Done

_BUDGET_NOUNS = {
    Budget.PREEMPTIONS: ("interruption", "interruptions"),
    Budget.FAILURES: ("crash", "crashes"),
    Budget.NO_PROGRESS: ("attempt without progress", "attempts without progress"),
    Budget.HANGS: ("hang", "hangs"),
}
_BUDGET_WORDS = {
    Budget.PREEMPTIONS: "restarts after preemptions",
    Budget.FAILURES: "restarts after crashes",
    Budget.NO_PROGRESS: "restarts in a row without progress",
    Budget.HANGS: "restarts after hangs",
}


def _describe(record: AttemptRecord) -> str:
    code = "no exit recorded" if record.returncode is None else f"exit {record.returncode}"
    return f"{record.exit_class.value.replace('_', ' ')} ({code})"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Budgets and backoff per budget; `decide` maps a job history to the next step.

    Example:
        >>> import random
        >>> policy = RetryPolicy(max_failures=0)
        >>> crash = AttemptRecord(attempt=1, exit_class=ExitClass.CRASH, started_s=0.0,
        ...                       ended_s=1.0, start_step=None, end_step=None, returncode=2)
        >>> policy.decide(RetryState(attempts=(crash,)), rng=random.Random(0)).reason
        'crash (exit 2): 1 crash, budget of 0 restarts after crashes spent'
    """

    max_preemptions: int = 100
    """Restarts allowed after PREEMPTED and UNCLEAN attempts, over the whole job (<= 10^6)."""
    max_failures: int = 3
    """Restarts allowed after CRASH attempts, over the whole job (<= 10^6)."""
    max_no_progress: int = 3
    """Restarts allowed after NO_PROGRESS attempts in a row (<= 10^6)."""
    preemption_backoff: Backoff = DEFAULT_BACKOFF
    """Delays after preemptions and unclean kills."""
    failure_backoff: Backoff = DEFAULT_BACKOFF
    """Delays after crashes and hangs."""
    no_progress_backoff: Backoff = DEFAULT_BACKOFF
    """Delays after attempts without progress."""
    on_demand_after: int | None = None
    """Interruptions after which restarts carry ``on_demand=True`` (<= 10^6); None: never."""
    max_hangs: int = 3
    """Restarts allowed after HUNG attempts, over the whole job (<= 10^6); a pool sets it to
    its ``max_failures``."""

    def __post_init__(self) -> None:
        for name in (
            "max_preemptions",
            "max_failures",
            "max_no_progress",
            "on_demand_after",
            "max_hangs",
        ):
            value = getattr(self, name)
            if value is None and name == "on_demand_after":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= MAX_BUDGET
            ):
                raise ConfigError(
                    f"{name} = {value!r}: must be an integer >= 0 and <= {MAX_BUDGET:g}"
                )

    @classmethod
    def from_pool(cls, pool: Pool) -> RetryPolicy:
        """The retry policy of a pool: its budgets, its backoff for every budget.

        Example:
            >>> from spotsafe.policy.pools import PRESETS
            >>> RetryPolicy.from_pool(PRESETS["critical"]).on_demand_after
            2
        """
        backoff = Backoff(
            initial_s=pool.backoff_initial_s,
            max_s=pool.backoff_max_s,
            multiplier=pool.backoff_multiplier,
            jitter=pool.jitter,
        )
        return cls(
            max_preemptions=pool.max_preemptions,
            max_failures=pool.max_failures,
            max_no_progress=pool.max_no_progress,
            preemption_backoff=backoff,
            failure_backoff=backoff,
            no_progress_backoff=backoff,
            on_demand_after=pool.on_demand_after,
            max_hangs=pool.max_failures,  # a hang is a fault, like a crash: the same tolerance
        )

    def limit(self, budget: Budget) -> int:
        """The number of restarts `budget` allows."""
        return {
            Budget.PREEMPTIONS: self.max_preemptions,
            Budget.FAILURES: self.max_failures,
            Budget.NO_PROGRESS: self.max_no_progress,
            Budget.HANGS: self.max_hangs,
        }[budget]

    def backoff(self, budget: Budget) -> Backoff:
        """The backoff used after attempts that spend `budget`."""
        return {
            Budget.PREEMPTIONS: self.preemption_backoff,
            Budget.FAILURES: self.failure_backoff,
            Budget.NO_PROGRESS: self.no_progress_backoff,
            Budget.HANGS: self.failure_backoff,
        }[budget]

    def on_demand(self, state: RetryState) -> bool:
        """Whether the next attempt should run on on-demand capacity."""
        return self.on_demand_after is not None and state.interruptions >= self.on_demand_after

    def decide(self, state: RetryState, *, rng: Rng) -> RetryDecision:
        """The next step after the newest attempt in `state`.

        Args:
            state: the job's history; empty before the first attempt.
            rng: the source of jitter, e.g. ``random.Random(seed)``.

        Returns:
            `Done` after a success, `GiveUp` when the newest attempt's budget is spent,
            else `Restart` with a jittered delay (0 before the first attempt).
        """
        on_demand = self.on_demand(state)
        if not state.attempts:
            return Restart(after_s=0.0, reason="first attempt", on_demand=on_demand)
        last = state.attempts[-1]
        if last.exit_class is ExitClass.SUCCESS:
            return Done()
        budget = _BUDGET_OF[last.exit_class]
        spent, limit = state.spent(budget), self.limit(budget)
        if spent > limit:
            singular, plural = _BUDGET_NOUNS[budget]
            count = f"{spent} {singular if spent == 1 else plural}"
            if budget is Budget.NO_PROGRESS:
                stuck = (
                    "before the first checkpoint"
                    if last.end_step is None
                    else (f"at step {last.end_step}")
                )
                count += f" in a row, stuck {stuck}"
            return GiveUp(
                reason=f"{_describe(last)}: {count}, budget of {limit} "
                f"{_BUDGET_WORDS[budget]} spent",
                exit_class=last.exit_class,
            )
        delay = self.backoff(budget).delay_s(state.streak(budget), rng=rng)
        return Restart(
            after_s=delay,
            reason=f"{_describe(last)}: restart {spent} of {limit} allowed after "
            f"{_BUDGET_NOUNS[budget][1]}",
            on_demand=on_demand,
        )
