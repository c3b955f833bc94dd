"""What `spotsafe doctor` reports: findings with a stable id, a severity, evidence and a fix.

A finding is a value. The checks in this package return them; the CLI prints them as a table
or as JSON (``{"findings": [...]}``) and exits 1 when one is an error. Ids never change
meaning, so scripts can match on them.

Example:
    >>> f = Finding(id=WEIGHTS_ONLY, severity=Severity.ERROR, what="no optimizer state",
    ...             evidence={"file": "ckpt.pt"}, fix="save optimizer.state_dict() too")
    >>> f.to_json()["severity"], worst([f]) is Severity.ERROR
    ('error', True)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EPHEMERAL_STORE",
    "GRACE",
    "IDS",
    "INEXACT_LOADER",
    "INTERVAL",
    "NO_CHECKPOINT",
    "NO_SIGNAL_HANDLING",
    "ONE_POLICY",
    "RESTART_FROM_SCRATCH",
    "WEIGHTS_ONLY",
    "Finding",
    "Severity",
    "worst",
]

WEIGHTS_ONLY = "weights-only"
EPHEMERAL_STORE = "ephemeral-store"
RESTART_FROM_SCRATCH = "restart-from-scratch"
NO_SIGNAL_HANDLING = "no-signal-handling"
ONE_POLICY = "one-policy"
INEXACT_LOADER = "inexact-loader"
INTERVAL = "interval"
GRACE = "grace"
NO_CHECKPOINT = "no-checkpoint"

#: Every finding id, in the order the report lists them.
IDS = (
    NO_CHECKPOINT,
    WEIGHTS_ONLY,
    EPHEMERAL_STORE,
    RESTART_FROM_SCRATCH,
    NO_SIGNAL_HANDLING,
    GRACE,
    INEXACT_LOADER,
    INTERVAL,
    ONE_POLICY,
)


class Severity(enum.Enum):
    """How bad a finding is: an error loses work or the run; a warning costs time or
    exactness; info is worth knowing."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for error."""
        return ("info", "warning", "error").index(self.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One mistake found (or one fact worth knowing) in a job."""

    id: str
    """Stable id, one of `IDS`."""
    severity: Severity
    """How bad it is."""
    what: str
    """What is wrong, in one sentence."""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    """What shows it: file, key, exit code, seconds (JSON-able values)."""
    fix: str
    """How to fix it, in one or two lines."""

    def __post_init__(self) -> None:
        if self.id not in IDS:
            raise ValueError(f"unknown finding id {self.id!r}; known: {', '.join(IDS)}")

    def to_json(self) -> dict[str, Any]:
        """The finding as the ``--json`` output writes it."""
        return {
            "id": self.id,
            "severity": self.severity.value,
            "what": self.what,
            "evidence": dict(self.evidence),
            "fix": self.fix,
        }


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The highest severity among ``findings``; None when there are none.

    Example:
        >>> worst([]) is None
        True
    """
    ranked = [f.severity for f in findings]
    return max(ranked, key=lambda s: s.rank) if ranked else None
