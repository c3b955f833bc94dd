"""`spotsafe doctor`: find the common mistakes of training on spot capacity in a real job.

Weights-only checkpoints, ephemeral storage, restarting from scratch, ignoring the
termination signal, one policy for every workload; also a loader that cannot resume
exactly, an interval far from the optimum and a grace shorter than the flush. Each finding
(`Finding`) has a stable id, a severity, evidence and a fix.

Example:
    >>> import tempfile
    >>> diagnose(Request(checkpoint=tempfile.mkdtemp()))
    Traceback (most recent call last):
    ...
    spotsafe.errors.ConfigError: /...: no checkpoint there ...
"""

from spotsafe.doctor.contents import Contents, Part, inspect_checkpoint
from spotsafe.doctor.diagnose import Diagnosis, Request, diagnose
from spotsafe.doctor.findings import IDS, Finding, Severity

__all__ = [
    "IDS",
    "Contents",
    "Diagnosis",
    "Finding",
    "Part",
    "Request",
    "Severity",
    "diagnose",
    "inspect_checkpoint",
]
