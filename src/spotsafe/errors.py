"""The exceptions spotsafe raises: the whole tree lives here, and nowhere else.

Every error says what went wrong, where, and how to fix it, and is classified as retryable
(``retryable = True``: trying again later may succeed, e.g. a network error) or fatal. The
command line exits 75 (EX_TEMPFAIL, "try again") for a retryable error and 2 for any other::

    SpotsafeError
    ├── ConfigError                 bad argument, environment variable or config file
    ├── StorageError                the store could not be read or written (network, permission,
    │   │                           missing bucket); never mistaken for "no checkpoint"
    │   ├── ObjectMissing           one named object is not in the store
    │   ├── EphemeralStoreError     the store would vanish with the machine
    │   └── StaleAttempt            fence refusal: a newer attempt of the job has started, so
    │                               this (stale) process must not commit; fatal
    ├── CheckpointError
    │   ├── CheckpointNotFound      no checkpoint at the requested step
    │   ├── CheckpointCorrupt       a checkpoint failed verification (size, checksum, manifest)
    │   ├── CheckpointMismatch      a valid checkpoint of another job or another config
    │   │   └── CheckpointTooNew    written by a newer spotsafe: upgrade; never quarantined
    │   └── NoValidCheckpoint       checkpoints exist but none is valid
    ├── MetadataUnavailable         a cloud metadata service did not answer (or not in its
    │                               protocol); never a preemption; retryable
    ├── StopError                   a stop request could not be honoured as promised
    └── SupervisorError
        ├── BudgetExhausted         the retry budget of a class is spent
        ├── LeaseHeld               another live writer or supervisor holds the job; retryable
        └── LeaseLost               our lease was taken over or could not be renewed in a TTL

Example:
    >>> isinstance(StaleAttempt("attempt 3 is stale"), StorageError)
    True
    >>> [e.retryable for e in (LeaseHeld("x"), LeaseLost("x"), StaleAttempt("x"))]
    [True, False, False]
"""

from __future__ import annotations

__all__ = [
    "BudgetExhausted",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointMismatch",
    "CheckpointNotFound",
    "CheckpointTooNew",
    "ConfigError",
    "EphemeralStoreError",
    "LeaseHeld",
    "LeaseLost",
    "MetadataUnavailable",
    "NoValidCheckpoint",
    "ObjectMissing",
    "SpotsafeError",
    "StaleAttempt",
    "StopError",
    "StorageError",
    "SupervisorError",
]


class SpotsafeError(Exception):
    """Base class of every spotsafe error."""

    retryable: bool = False


class ConfigError(SpotsafeError):
    """A bad argument, environment variable or config file."""


class StorageError(SpotsafeError):
    """The store could not be read or written.

    Retryable by default: most storage failures are network hiccups. Permission and
    missing-bucket errors set ``retryable=False``.
    """

    retryable = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ObjectMissing(StorageError):
    """One named object is not in the store."""

    retryable = False


class EphemeralStoreError(StorageError):
    """The store lives on storage that disappears with the machine."""

    retryable = False


class StaleAttempt(StorageError):
    """A newer attempt of the job has started since this process's: it is stale (its
    supervisor lost the job) and must not commit a checkpoint over the newer generation's.

    A StorageError, so that a save loop that stops on a fatal storage error stops on it too.
    """

    retryable = False


class CheckpointError(SpotsafeError):
    """Base class of checkpoint problems."""


class CheckpointNotFound(CheckpointError):
    """No checkpoint at the requested step."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint failed verification."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint that is valid but belongs to another job or another config."""


class CheckpointTooNew(CheckpointMismatch):
    """A checkpoint written by a newer spotsafe (a schema, dtype or state node this version
    does not know). It is not corrupt: it is never quarantined, and restore does not fall
    back past it."""


class NoValidCheckpoint(CheckpointError):
    """The store holds checkpoints, but none of them is valid."""


class MetadataUnavailable(SpotsafeError):
    """A cloud metadata service could not be reached, or answered outside its protocol.

    Never a preemption: a watcher logs it once, backs off and keeps watching.
    """

    retryable = True


class StopError(SpotsafeError):
    """A stop request could not be honoured as promised."""


class SupervisorError(SpotsafeError):
    """Base class of supervisor failures."""


class BudgetExhausted(SupervisorError):
    """The retry budget of one exit class is spent."""


class LeaseHeld(SupervisorError):
    """Another live writer or supervisor holds the job's lease: try again once it is gone."""

    retryable = True


class LeaseLost(SupervisorError):
    """This holder's lease was taken over, or could not be renewed within its TTL."""
