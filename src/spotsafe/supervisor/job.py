"""The durable job record as the supervisor sees it: who the job is and every attempt it made.

The record's objects and their lifecycle are `spotsafe.jobrecord` (torch-free, below the
Checkpointer and the Guard, which write into it too); this module reads them back as the
retry policy's history (`RetryState`) and writes what the supervisor decides::

    job/job.json                     the job's id, written once by the first supervisor
    job/attempts/000003-*.json       attempt 3: start, child, stop, end (spotsafe.jobrecord)
    job/on-demand.json               the on-demand fallback hook ran (once per job)

Budgets are never stored: they follow from the attempts (`RetryState`), so a supervisor on a
new machine continues the numbering and the budgets of the one that died. An attempt with a
start but no end was cut off with its supervisor; the next supervisor closes it (`recover`).

The newest attempt number is also the *generation* that fences checkpoint commits: a save by
an older attempt (a child that outlived a partitioned supervisor) is refused
(`current_generation`, checked by the Checkpointer right before its manifest write).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from spotsafe.errors import ConfigError, ObjectMissing, StorageError
from spotsafe.jobrecord import (
    ATTEMPTS_DIR,
    JOB_DIR,
    attempt_files,
    attempt_path,
    check_fence,
    current_generation,
    parse_record,
)
from spotsafe.policy import AttemptRecord, ExitClass, RetryState
from spotsafe.storage import Store

__all__ = [
    "ATTEMPTS_DIR",
    "JOB_DIR",
    "AttemptStart",
    "JobRecord",
    "check_fence",
    "current_generation",
    "default_job_id",
]

T = TypeVar("T")

JOB_FILE = f"{JOB_DIR}/job.json"
ON_DEMAND_FILE = f"{JOB_DIR}/on-demand.json"
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def _step(value: object) -> int | None:
    if value is None or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"step {value!r} is not a step number")


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a time in seconds")
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite time")
    return float(value)


def _start_of(n: int, doc: Mapping[str, Any]) -> AttemptStart:
    info = doc.get("info") or {}
    if not isinstance(info, dict):
        raise TypeError(f"info {str(info)[:40]!r} is not an object")
    lease_epoch = doc.get("lease_epoch")
    if lease_epoch is not None and type(lease_epoch) is not int:
        raise TypeError(f"lease_epoch {lease_epoch!r} is not an integer")
    return AttemptStart(attempt=n, started_s=_seconds(doc["started_s"]),
                        start_step=_step(doc.get("start_step")), lease_epoch=lease_epoch,
                        info=dict(info))  # fmt: skip


def _end_of(n: int, doc: Mapping[str, Any]) -> AttemptRecord:
    returncode = doc.get("returncode")
    if returncode is not None and type(returncode) is not int:
        raise TypeError(f"returncode {returncode!r} is not an integer")
    return AttemptRecord(attempt=n, exit_class=ExitClass(doc["exit_class"]),
                         started_s=_seconds(doc["started_s"]), ended_s=_seconds(doc["ended_s"]),
                         start_step=_step(doc.get("start_step")),
                         end_step=_step(doc.get("end_step")), returncode=returncode)  # fmt: skip


def default_job_id(store_url: str) -> str:
    """A job id derived from the store URL: its last path part and a short hash.

    Example:
        >>> default_job_id("s3://bucket/runs/llama-ft")
        'llama-ft-dff5d8f0'
    """
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", store_url.rstrip("/").rsplit("/", 1)[-1]).strip("-.")
    digest = hashlib.sha256(store_url.encode()).hexdigest()[:8]
    return f"{tail[:48] or 'job'}-{digest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStart:
    """What the record knows of an attempt when it starts."""

    attempt: int
    started_s: float
    start_step: int | None
    lease_epoch: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Host, pids, command, pool: for people and the chaos harness, not for decisions."""


@dataclass(slots=True)
class JobRecord:
    """The job record of one store, as read at one moment (see the module docstring).

    Example:
        >>> from spotsafe.storage import open_store
        >>> record = JobRecord.open(open_store("memory://spotsafe-job-doc"), job_id="demo")
        >>> record.job_id, record.next_attempt
        ('demo', 1)
    """

    store: Store
    job_id: str
    starts: dict[int, AttemptStart]
    ends: dict[int, AttemptRecord]
    end_docs: dict[int, dict[str, Any]]

    # ------------------------------------------------------------------ reading

    @classmethod
    def open(cls, store: Store, *, job_id: str | None = None) -> JobRecord:
        """Read the record of `store`, creating ``job/job.json`` if this is a new job.

        Args:
            store: the job's store.
            job_id: the id asked for (``--job-id`` or ``$SPOTSAFE_JOB_ID``); None: the id in
                the record, or one derived from the store URL for a new job.

        Raises:
            ConfigError: the store already holds another job, or the id is malformed.
        """
        if job_id is not None and not _JOB_ID_RE.fullmatch(job_id):
            raise ConfigError(
                f"job id {job_id!r}: use letters, digits, '.', '-' and '_' (at most 128)"
            )
        existing = cls._read_job_id(store)
        if existing is None:
            wanted = job_id or default_job_id(store.url)
            doc = {"job_id": wanted, "store": store.url, "token": secrets.token_hex(4)}
            if not store.create_exclusive(JOB_FILE, _dumps(doc)):
                pass  # another supervisor created it first: read what it wrote
            existing = cls._read_job_id(store)
            if existing is None:
                raise StorageError(f"{store.url}/{JOB_FILE}: written but not readable")
        if job_id is not None and job_id != existing:
            raise ConfigError(
                f"store {store.url} holds job {existing!r}, not {job_id!r}: one store is one "
                "job; pass the matching --job-id or use another store"
            )
        record = cls(store=store, job_id=existing, starts={}, ends={}, end_docs={})
        record.reload()
        return record

    @staticmethod
    def _read_job_id(store: Store) -> str | None:
        try:
            doc = json.loads(store.read_bytes(JOB_FILE))
        except ObjectMissing:
            return None
        except ValueError as e:
            raise StorageError(
                f"{store.url}/{JOB_FILE} is not valid JSON: {e}", retryable=False
            ) from e
        return str(doc["job_id"])

    def reload(self) -> None:
        """Read every attempt object again (one listing, then the objects not yet read).

        Raises:
            StorageError: the store cannot be read, or a record is garbled (not retryable).
        """
        for n, kinds in sorted(attempt_files(self.store).items()):
            if "start" in kinds and n not in self.starts:
                path = attempt_path(n, "start")
                doc = self._read(path)
                self.starts[n] = self._parse(path, functools.partial(_start_of, n, doc))
            if "end" in kinds and n not in self.ends:
                path = attempt_path(n, "end")
                doc = self._read(path)
                self.ends[n] = self._parse(path, functools.partial(_end_of, n, doc))
                self.end_docs[n] = doc

    def _parse(self, path: str, parse: Callable[[], T]) -> T:
        """`parse()`, with a wrong or missing field reported as a garbled record."""
        try:
            return parse()
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise StorageError(
                f"{self.store.url}/{path}: the job record is garbled ({type(e).__name__}: {e});"
                " inspect it or start a new job in another store",
                retryable=False,
            ) from e

    def _read(self, path: str) -> dict[str, Any]:
        return parse_record(self.store, path, self.store.read_bytes(path))

    # ------------------------------------------------------------------ views

    @property
    def next_attempt(self) -> int:
        """The number the next attempt gets: one past every attempt ever started."""
        return max([0, *self.starts, *self.ends]) + 1

    @property
    def unfinished(self) -> list[AttemptStart]:
        """Attempts that started and never ended (their supervisor died), oldest first."""
        return [s for n, s in sorted(self.starts.items()) if n not in self.ends]

    def retry_state(self) -> RetryState:
        """The finished attempts as the retry policy sees them."""
        return RetryState(attempts=tuple(r for _, r in sorted(self.ends.items())))

    # ------------------------------------------------------------------ writing

    def start(self, start: AttemptStart) -> None:
        """Record that `start.attempt` began; refuses a number already taken."""
        doc = {
            "attempt": start.attempt,
            "job_id": self.job_id,
            "started_s": start.started_s,
            "start_step": start.start_step,
            "lease_epoch": start.lease_epoch,
            "info": start.info,
        }
        if not self.store.create_exclusive(attempt_path(start.attempt, "start"), _dumps(doc)):
            raise StorageError(
                f"{self.store.url}: attempt {start.attempt} was started by another "
                "supervisor; is a second supervisor running for this job?",
                retryable=False,
            )
        self.starts[start.attempt] = start

    def end(self, record: AttemptRecord, **extra: Any) -> bool:
        """Record how an attempt ended; False when its end was already recorded."""
        doc: dict[str, Any] = {
            "attempt": record.attempt,
            "job_id": self.job_id,
            "exit_class": record.exit_class.value,
            "started_s": record.started_s,
            "ended_s": record.ended_s,
            "duration_s": record.duration_s,
            "start_step": record.start_step,
            "end_step": record.end_step,
            "returncode": record.returncode,
            **extra,
        }
        created = self.store.create_exclusive(attempt_path(record.attempt, "end"), _dumps(doc))
        if created:
            self.ends[record.attempt] = record
            self.end_docs[record.attempt] = doc
        else:
            self.reload()
        return created

    def mark_on_demand(self, doc: Mapping[str, Any]) -> bool:
        """Record that the on-demand hook ran; False when it had run before."""
        return self.store.create_exclusive(ON_DEMAND_FILE, _dumps(doc))

    def summary(self) -> dict[str, int]:
        """Attempts per exit class, for the log line a give-up prints."""
        counts: dict[str, int] = {}
        for r in self.ends.values():
            counts[r.exit_class.value] = counts.get(r.exit_class.value, 0) + 1
        return counts
