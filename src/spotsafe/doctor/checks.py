"""The static checks: what a checkpoint, a store location or a store's history shows alone.

Each check looks at one value and returns a `Finding` or None; none of them runs the job.

Example:
    >>> from spotsafe.doctor.contents import Contents, Part
    >>> c = Contents(format="torch.save", path="ckpt.pt", parts={Part.STEP: "step"})
    >>> f = weights_only(c)
    >>> f.id, f.severity.value, f.evidence["missing"][:2]
    ('weights-only', 'error', ['optimizer', 'scheduler'])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from spotsafe.doctor.contents import Contents, Part
from spotsafe.doctor.findings import (
    EPHEMERAL_STORE,
    GRACE,
    INEXACT_LOADER,
    WEIGHTS_ONLY,
    Finding,
    Severity,
)

__all__ = ["ephemeral_store", "grace", "inexact_loader", "stop_flushes", "weights_only"]

# How much each missing part costs a resume.
_SEVERITY = {
    Part.OPTIMIZER: Severity.ERROR,  # Adam restarts with zero moments: a loss spike, drift
    Part.STEP: Severity.ERROR,  # the LR schedule and the epoch count start over
    Part.DATA: Severity.WARNING,  # batches are seen twice or skipped
    Part.RNG: Severity.WARNING,  # dropout, shuffling, augmentation diverge
    Part.SCHEDULER: Severity.INFO,  # only if the job uses one: doctor cannot tell
    Part.SCALER: Severity.INFO,  # only with fp16 AMP
}
_WHY = {
    Part.OPTIMIZER: "optimizer.state_dict()",
    Part.SCHEDULER: "scheduler.state_dict() (if you use an LR scheduler)",
    Part.SCALER: "scaler.state_dict() (if you train with fp16 AMP)",
    Part.STEP: "the step and epoch counters",
    Part.DATA: "the data loader's position (sampler state / batches consumed)",
    Part.RNG: "the RNG states (random, numpy, torch, cuda)",
}


def weights_only(contents: Contents) -> Finding | None:
    """Whether the checkpoint lacks part of the training state a resume needs.

    Severity: error without the optimizer or the step; warning without the data position
    or the RNGs. A missing scheduler or scaler is listed with those, but is no finding alone:
    doctor cannot tell whether the job has one.
    """
    missing = contents.missing
    severity = max((_SEVERITY[p] for p in missing), key=lambda s: s.rank, default=None)
    if severity is None or severity is Severity.INFO:
        return None  # nothing missing, or only parts the job may not have: not a finding
    names = [p.value for p in missing]
    if Part.OPTIMIZER in missing:
        what = f"the newest checkpoint holds no optimizer state (also missing: {_others(names)})"
    else:
        what = f"the newest checkpoint lacks {', '.join(names)}"
    fix = (
        "save " + "; ".join(_WHY[p] for p in missing) + " with the weights, or let "
        "spotsafe.TrainState(model=..., optimizer=..., scheduler=..., loader=...) save them all"
    )
    return Finding(
        id=WEIGHTS_ONLY,
        severity=severity,
        what=what,
        evidence={
            "checkpoint": contents.path,
            "format": contents.format,
            "step": contents.step,
            "missing": names,
            "found": {p.value: where for p, where in contents.parts.items()},
        },
        fix=fix,
    )


def _others(names: Sequence[str]) -> str:
    rest = [n for n in names if n != Part.OPTIMIZER.value]
    return ", ".join(rest) if rest else "nothing else"


def inexact_loader(contents: Contents) -> Finding | None:
    """Whether spotsafe recorded a data loader that cannot resume bitwise exactly."""
    if not contents.not_exact:
        return None
    names = sorted(contents.not_exact)
    return Finding(
        id=INEXACT_LOADER,
        severity=Severity.WARNING,
        what=f"data loader {', '.join(names)} cannot resume exactly: a resumed run sees "
        "other batches or random numbers than an uninterrupted one",
        evidence={
            "checkpoint": contents.path,
            "key": "extra.not_exact",
            "loaders": dict(contents.not_exact),
        },
        fix="drop persistent_workers=True (with num_workers > 0) and in_order=False from "
        "the DataLoader",
    )


def ephemeral_store(location: str | os.PathLike[str], *, source: str) -> Finding | None:
    """Whether checkpoints at ``location`` would vanish with the machine, by the
    Checkpointer's own rules (`spotsafe.storage.ephemeral`); ``source`` says where doctor
    learnt of the location (``--store``, ``written by the command``...).

    An unknown lifetime is a warning, an ephemeral one an error.
    """
    from spotsafe.storage.ephemeral import Durability, check_store_durable

    verdict = check_store_durable(location, allow_ephemeral=True)
    if verdict.kind is Durability.DURABLE:
        return None
    evidence: dict[str, Any] = {
        "location": verdict.location,
        "source": source,
        "reason": verdict.reason,
    }
    if verdict.fstype is not None:
        evidence.update(mount_point=verdict.mount_point, fstype=verdict.fstype)
    if verdict.cloud is not None:
        evidence["cloud"] = verdict.cloud.value
    if verdict.kind is Durability.EPHEMERAL:
        return Finding(
            id=EPHEMERAL_STORE,
            severity=Severity.ERROR,
            what=f"checkpoints go to {verdict.location}, which is lost with the machine",
            evidence=evidence,
            fix="write checkpoints to a persistent volume or an object store "
            "(s3://bucket/run, gs://..., a PersistentVolumeClaim)",
        )
    return Finding(
        id=EPHEMERAL_STORE,
        severity=Severity.WARNING,
        what=f"could not confirm that {verdict.location} outlives this machine",
        evidence=evidence,
        fix="prefer a persistent volume or an object store such as s3://bucket/run",
    )


def grace(flush_s: float, grace_s: float, *, source: str, margin: float = 0.8) -> Finding | None:
    """Whether a measured flush fits the grace the orchestrator gives before SIGKILL.

    An error past the grace; a warning past ``margin`` of it (a slower disk or a bigger
    model tips it over).

    Example:
        >>> grace(22.0, 25.0, source="measured").severity.value
        'warning'
        >>> grace(2.0, 25.0, source="measured") is None
        True
    """
    if flush_s <= grace_s * margin:
        return None
    severity = Severity.ERROR if flush_s > grace_s else Severity.WARNING
    return Finding(
        id=GRACE,
        severity=severity,
        what=f"the stop flush took {flush_s:.1f} s against a grace of {grace_s:g} s before "
        "SIGKILL" + ("" if severity is Severity.ERROR else f" (over {margin:.0%} of it)"),
        evidence={"flush_s": round(flush_s, 3), "grace_s": grace_s, "source": source},
        fix=f"raise the pool's grace_s and the orchestrator's grace (Kubernetes "
        f"terminationGracePeriodSeconds) above {flush_s * 1.5:.0f} s, or save less at a stop "
        "(async saves, a staging tier)",
    )


def stop_flushes(events: Sequence[Mapping[str, Any]]) -> list[float]:
    """The ``flush_s`` of every clean stop in an event log's fields.

    Example:
        >>> stop_flushes([{"kind": "stop", "clean": True, "flush_s": 1.5}, {"kind": "save"}])
        [1.5]
    """
    out = []
    for e in events:
        if e.get("kind") == "stop" and e.get("clean") and isinstance(e.get("flush_s"), float):
            out.append(float(e["flush_s"]))
    return out
