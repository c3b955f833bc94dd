"""The supervisor → child environment: one frozen type, and the only place that spells it.

``spotsafe run`` tells each attempt's child who it is through environment variables; the
child's Checkpointer, TrainState and Guard read them as defaults, so ``train.py`` needs no
flags::

    SPOTSAFE_STORE      the job's store (a path or URL)
    SPOTSAFE_JOB_ID     the job's id, from the job record
    SPOTSAFE_ATTEMPT    the attempt's number, 1, 2, ... across the whole job: the generation
                        that fences a stale attempt's commits
    SPOTSAFE_POOL       the pool whose settings apply (default ``standard``)
    SPOTSAFE_CONFIG     the config file the pool came from (absolute)
    SPOTSAFE_ON_DEMAND  ``1`` once the job fell back to on-demand capacity
    SPOTSAFE_PROGRESS   the attempt's progress board, where each rank's Guard notes its
                        steps for the supervisor (`spotsafe.progress_channel`)

The supervisor writes them with `ChildEnv.apply` (which also removes any of them that the
supervisor's own environment held but this attempt does not set: a child never inherits a
stale attempt number or a pool the supervisor did not use); the child reads them with
`ChildEnv.from_environ`, once. Torch-free, standard library only, below every layer.

Example:
    >>> env = ChildEnv(store="s3://bucket/run", job_id="run-1", attempt=3, pool="critical")
    >>> env.to_environ()["SPOTSAFE_ATTEMPT"]
    '3'
    >>> ChildEnv.from_environ(env.to_environ()) == env
    True
    >>> ChildEnv.from_environ({}).supervised
    False
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from spotsafe.errors import ConfigError

__all__ = [
    "ENV_ATTEMPT",
    "ENV_CONFIG",
    "ENV_JOB_ID",
    "ENV_NAMES",
    "ENV_ON_DEMAND",
    "ENV_POOL",
    "ENV_PROGRESS",
    "ENV_STORE",
    "ChildEnv",
]

ENV_STORE = "SPOTSAFE_STORE"
ENV_JOB_ID = "SPOTSAFE_JOB_ID"
ENV_ATTEMPT = "SPOTSAFE_ATTEMPT"
ENV_POOL = "SPOTSAFE_POOL"
ENV_CONFIG = "SPOTSAFE_CONFIG"
ENV_ON_DEMAND = "SPOTSAFE_ON_DEMAND"
ENV_PROGRESS = "SPOTSAFE_PROGRESS"
ENV_NAMES = (
    ENV_STORE,
    ENV_JOB_ID,
    ENV_ATTEMPT,
    ENV_POOL,
    ENV_CONFIG,
    ENV_ON_DEMAND,
    ENV_PROGRESS,
)

MAX_ATTEMPT = 10**9  # attempt numbers are written with six digits or more; a billion is a bug
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildEnv:
    """What the supervisor tells an attempt's child; every field None (or False) outside it.

    Raises:
        ConfigError: a field that no supervisor writes (an attempt below 1, an empty name),
            naming the variable, the value and why.
    """

    store: str | None = None
    """The job's store, a local path or URL (``$SPOTSAFE_STORE``)."""
    job_id: str | None = None
    """The job's id (``$SPOTSAFE_JOB_ID``); a checkpoint of another job is never loaded."""
    attempt: int | None = None
    """The attempt's number, 1 to 10^9 (``$SPOTSAFE_ATTEMPT``); None outside the supervisor."""
    pool: str | None = None
    """The pool's name (``$SPOTSAFE_POOL``); None: the default pool."""
    config: str | None = None
    """The config file the pool came from (``$SPOTSAFE_CONFIG``); None: the usual search."""
    on_demand: bool = False
    """Whether the job runs on on-demand capacity now (``$SPOTSAFE_ON_DEMAND=1``)."""
    progress: str | None = None
    """The attempt's progress board, a file path (``$SPOTSAFE_PROGRESS``); None: report
    nothing (`spotsafe.progress_channel`)."""

    def __post_init__(self) -> None:
        names = {"store": ENV_STORE, "job_id": ENV_JOB_ID, "pool": ENV_POOL, "config": ENV_CONFIG,
                 "progress": ENV_PROGRESS}  # fmt: skip
        for field, name in names.items():
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} = {value!r}: must be a non-empty string or unset")
        a = self.attempt
        if a is not None and (
            isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= MAX_ATTEMPT
        ):
            raise ConfigError(
                f"{ENV_ATTEMPT} = {a!r}: must be an attempt number from 1 to {MAX_ATTEMPT:g}"
                " (the supervisor numbers attempts from 1) or unset"
            )

    @property
    def supervised(self) -> bool:
        """Whether a supervisor started this process (it always sets the attempt)."""
        return self.attempt is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ChildEnv:
        """Read the contract from `environ` (default ``os.environ``); empty means unset.

        Raises:
            ConfigError: ``SPOTSAFE_ATTEMPT`` is not a number from 1 to 10^9, or
                ``SPOTSAFE_ON_DEMAND`` is not a yes/no value.

        Example:
            >>> ChildEnv.from_environ({"SPOTSAFE_ATTEMPT": "two"})
            Traceback (most recent call last):
            ...
            spotsafe.errors.ConfigError: SPOTSAFE_ATTEMPT = 'two': must be an attempt number ...
        """
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        attempt_text = text(ENV_ATTEMPT)
        attempt: int | None = None
        if attempt_text is not None:
            if not (attempt_text.isascii() and attempt_text.isdigit()):
                raise ConfigError(
                    f"{ENV_ATTEMPT} = {attempt_text!r}: must be an attempt number from 1 to"
                    f" {MAX_ATTEMPT:g} (the supervisor numbers attempts from 1) or unset"
                )
            attempt = int(attempt_text) if len(attempt_text) <= 12 else MAX_ATTEMPT + 1
        flag = env.get(ENV_ON_DEMAND, "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigError(f"{ENV_ON_DEMAND} = {flag!r}: must be 1 (on-demand) or 0 / unset")
        return cls(
            store=text(ENV_STORE),
            job_id=text(ENV_JOB_ID),
            attempt=attempt,
            pool=text(ENV_POOL),
            config=text(ENV_CONFIG),
            on_demand=flag in _TRUE,
            progress=text(ENV_PROGRESS),
        )

    def to_environ(self) -> dict[str, str]:
        """The variables this contract sets: only the fields that are set."""
        out: dict[str, str] = {}
        for name, value in (
            (ENV_STORE, self.store),
            (ENV_JOB_ID, self.job_id),
            (ENV_ATTEMPT, None if self.attempt is None else str(self.attempt)),
            (ENV_POOL, self.pool),
            (ENV_CONFIG, self.config),
            (ENV_ON_DEMAND, "1" if self.on_demand else None),
            (ENV_PROGRESS, self.progress),
        ):
            if value is not None:
                out[name] = value
        return out

    def apply(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` with every contract variable replaced by this one's: those it does not
        set are removed, so a child never inherits a stale value from its supervisor's
        environment.

        Example:
            >>> ChildEnv(attempt=2).apply({"SPOTSAFE_ON_DEMAND": "1", "HOME": "/root"})
            {'HOME': '/root', 'SPOTSAFE_ATTEMPT': '2'}
        """
        kept = {k: v for k, v in environ.items() if k not in ENV_NAMES}
        return {**kept, **self.to_environ()}
