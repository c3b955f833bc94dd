"""The dynamic checks: run the command, stop it as an orchestrator would, run it again.

1. Run the command in a scratch store (``$SPOTSAFE_STORE``, and ``{store}`` in its arguments)
   until its first checkpoint appears; send SIGTERM to its process group; wait at most the
   grace; measure the flush (SIGTERM to exit). Does it exit 75 with its state saved? That
   answers *no signal handling* and *grace*.
2. Run it again against the same store: does it resume at the saved step (spotsafe's
   ``restore`` event, else the step of the first checkpoint the second run writes)? That
   answers *restart from scratch*. Doctor polls at most every 0.5 s, so a fast job may have
   passed the saved step by the time doctor sees its checkpoint: for Python commands the
   audit hook also tells whether the second run opened any checkpoint at all.

Where a command writes checkpoints outside the scratch store (a hard-coded directory), doctor
learns it from a Python audit hook (``open`` for writing, ``mkdir``, ``rename``) installed
through a ``sitecustomize`` on ``PYTHONPATH`` and from the files that changed in the working
directory; those directories are inspected and checked for ephemeral storage too. Every run
is bounded by ``timeout_s``; the scratch directory is removed afterwards.

Example:
    >>> classify_stop(rc=-15, stop_code=75, saved=False, flush_s=0.01, grace_s=25.0)[0].id
    'no-signal-handling'
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotsafe.doctor import checks
from spotsafe.doctor.contents import Contents, inspect_checkpoint
from spotsafe.doctor.findings import (
    GRACE,
    NO_CHECKPOINT,
    NO_SIGNAL_HANDLING,
    RESTART_FROM_SCRATCH,
    Finding,
    Severity,
)
from spotsafe.errors import CheckpointError, StorageError

__all__ = ["ProbeResult", "ProbeSettings", "classify_stop", "probe"]

ENV_WRITES = "SPOTSAFE_DOCTOR_WRITES"
STORE_PLACEHOLDER = "{store}"
POLL_MIN_S = 0.05  # look for the first checkpoint this often at first...
POLL_MAX_S = 0.5  # ...and back off to this: a big checkpoint's listing is not free
OUTPUT_TAIL = 2000  # characters of the command's output kept as evidence

# Installed in the child through PYTHONPATH: records where it writes, then hands over to any
# sitecustomize the environment had. Standard library only; os.write raises no audit event.
_SITECUSTOMIZE = r"""
import os, sys

def _spotsafe_doctor_hook():
    out = os.environ.get("SPOTSAFE_DOCTOR_WRITES")
    if not out:
        return
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    seen = set()
    writing = os.O_WRONLY | os.O_RDWR

    def note(kind, path):
        try:
            text = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if "\n" in text or (kind, text) in seen or len(seen) > 20000:
            return
        seen.add((kind, text))
        os.write(fd, f"{kind}\t{text}\n".encode("utf-8", "surrogateescape"))

    import re
    checkpointish = re.compile(
        r"ckpt|checkpoint|\.pth?$|\.safetensors$|\.distcp$|/\.metadata$|MANIFEST\.json$", re.I
    )

    def hook(event, args):
        if event == "open":
            path, _mode, flags = args
            if isinstance(path, (str, bytes, os.PathLike)) and isinstance(flags, int):
                if flags & writing:
                    note("write", path)
                elif checkpointish.search(os.fsdecode(path)):
                    note("read", path)
        elif event == "os.mkdir":
            note("mkdir", args[0])
        elif event == "os.rename":
            note("write", args[1])

    sys.addaudithook(hook)

_spotsafe_doctor_hook()
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.modules.pop("sitecustomize", None)
try:
    import sitecustomize  # noqa: F401  (the environment's own, if any)
except ImportError:
    pass
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSettings:
    """How doctor runs the command."""

    grace_s: float = 25.0
    """Seconds between SIGTERM and SIGKILL: the grace the orchestrator gives (the pool's)."""
    timeout_s: float = 600.0
    """Most seconds a run may take to write its first checkpoint before doctor gives up."""
    stop_code: int = 75
    """The exit code that means "stopped on request, state saved"."""
    pool: str | None = None
    """``$SPOTSAFE_POOL`` for the command."""
    config: str | None = None
    """``$SPOTSAFE_CONFIG`` for the command."""
    cwd: str | None = None
    """The working directory of the command (default: doctor's)."""
    keep_scratch: bool = False
    """Leave the scratch directory in place (its path is in the result)."""


@dataclass(slots=True, kw_only=True)
class ProbeResult:
    """What running the command showed."""

    findings: list[Finding] = field(default_factory=list)
    checkpoint: Contents | None = None
    """The newest checkpoint the first run left, for the static checks."""
    locations: list[str] = field(default_factory=list)
    """Directories outside the scratch store where the command wrote checkpoints."""
    flush_s: float | None = None
    """SIGTERM to exit of the first run, when it exited by itself."""
    scratch: str | None = None


def classify_stop(
    *,
    rc: int | None,
    stop_code: int,
    saved: bool,
    flush_s: float,
    grace_s: float,
    kept_training: bool = False,
) -> list[Finding]:
    """What a run's end after SIGTERM says about its signal handling.

    Args:
        rc: its exit code (negative: killed by that signal); None: still running at the end
            of the grace, so it was killed.
        stop_code: the code that means "stopped, state saved" (75).
        saved: whether a checkpoint newer than the one before SIGTERM appeared.
        flush_s: SIGTERM to exit (or to the kill), in seconds.
        grace_s: the grace the orchestrator gives before SIGKILL.
        kept_training: whether it went on writing checkpoints after SIGTERM (more than the
            one a stop writes): it did not stop.
    """
    evidence: dict[str, Any] = {
        "signal": "SIGTERM",
        "exit_code": rc,
        "seconds_to_exit": round(flush_s, 3),
        "grace_s": grace_s,
        "checkpoint_at_stop": saved,
    }
    handle = (
        f"on SIGTERM, stop at the next step, save, and exit {stop_code}: "
        "spotsafe.Guard does this (or set a flag in a signal handler and check it per step)"
    )
    if rc == stop_code:
        timing = checks.grace(flush_s, grace_s, source="measured: SIGTERM to exit")
        return [timing] if timing else []
    if kept_training:
        return [
            Finding(
                id=NO_SIGNAL_HANDLING,
                severity=Severity.ERROR,
                what="the job went on training after SIGTERM (it wrote more checkpoints) "
                + ("until it was killed" if rc is None else f"and exited {rc}"),
                evidence={**evidence, "checkpoints_after_sigterm": "more than one"},
                fix=handle,
            )
        ]
    if rc is None:
        if saved:
            return [
                Finding(
                    id=GRACE,
                    severity=Severity.ERROR,
                    what=f"the job wrote its stop checkpoint but was still flushing when the "
                    f"grace of {grace_s:g} s ended: it was killed mid-flush",
                    evidence=evidence,
                    fix="raise the grace (the pool's grace_s, the orchestrator's) above the "
                    "flush time, or flush less at a stop (async saves, a staging tier)",
                )
            ]
        return [
            Finding(
                id=NO_SIGNAL_HANDLING,
                severity=Severity.ERROR,
                what=f"the job was still running {grace_s:g} s after SIGTERM, with no new "
                "checkpoint: it was killed and the work since its last save is lost",
                evidence=evidence,
                fix=handle,
            )
        ]
    if rc < 0:
        name = _signal_name(-rc)
        return [
            Finding(
                id=NO_SIGNAL_HANDLING,
                severity=Severity.ERROR,
                what=f"the job died of {name} {flush_s:.2f} s after SIGTERM without saving: "
                "the work since its last checkpoint is lost",
                evidence=evidence,
                fix=handle,
            )
        ]
    if not saved:
        return [
            Finding(
                id=NO_SIGNAL_HANDLING,
                severity=Severity.ERROR,
                what=f"the job exited {rc} after SIGTERM without saving its state",
                evidence=evidence,
                fix=handle,
            )
        ]
    meaning = (
        "reads as success: the orchestrator will not run it again"
        if rc == 0
        else "reads as a crash: it counts against the failure budget"
    )
    return [
        Finding(
            id=NO_SIGNAL_HANDLING,
            severity=Severity.WARNING,
            what=f"the job saved on SIGTERM but exited {rc}, which {meaning}",
            evidence=evidence,
            fix=f"exit {stop_code} after a stop-on-request save (spotsafe.Guard does)",
        )
    ]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Watch:
    """Where the command's checkpoints are: the scratch store, the directories the audit
    hook saw it write, and what changed in its working directory."""

    def __init__(self, scratch: Path, store: Path, cwd: Path) -> None:
        self.scratch = scratch
        self.store = store
        self.cwd = cwd
        self.writes = scratch / "writes.log"
        self.started = time.time()

    def locations(self) -> list[str]:
        """Checkpoint directories outside the scratch, in the order first seen."""
        out: list[str] = []
        paths = [Path(path) for kind, path in self.log() if kind != "read"]
        paths += self._changed_in_cwd()
        for p in paths:
            root = _checkpoint_root(p)
            if root is None or _within(root, self.scratch) or _within(root, Path(sys.prefix)):
                continue
            if str(root) not in out:
                out.append(str(root))
        return out

    def log(self, since: int = 0) -> list[tuple[str, str]]:
        """The audit hook's (kind, path) records from byte ``since`` of its log: kind is
        ``write``, ``mkdir`` or ``read`` (a checkpoint-like file opened for reading)."""
        try:
            with self.writes.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        records = (line.split("\t", 1) for line in text.splitlines() if "\t" in line)
        return [(kind, path) for kind, path in records]

    def log_size(self) -> int:
        try:
            return self.writes.stat().st_size
        except FileNotFoundError:
            return 0

    def _changed_in_cwd(self) -> list[Path]:
        changed = []
        try:
            entries = list(self.cwd.iterdir())
        except OSError:
            return []
        for e in entries:
            try:
                if e.stat().st_mtime >= self.started and _CHECKPOINTISH.search(e.name):
                    changed.append(e / "x" if e.is_dir() else e)
            except OSError:
                continue
        return changed

    def newest(self) -> _Sighting | None:
        """The newest checkpoint in any place the command writes to (None: none yet)."""
        found = [s for place in [str(self.store), *self.locations()] if (s := _look(place))]
        if not found:
            return None
        return max(found, key=lambda s: s.contents.step if s.contents.step is not None else -1)


@dataclass(frozen=True, slots=True)
class _Sighting:
    """A checkpoint as doctor saw it, and its file's modification time (ns) when it read it:
    None for a store URL, whose checkpoint paths are unique anyway."""

    contents: Contents
    mtime_ns: int | None

    @property
    def identity(self) -> tuple[str, int | None, int | None]:
        """What tells this checkpoint from a later one at the same path."""
        return (self.contents.path, self.contents.step, self.mtime_ns)


def _look(place: str) -> _Sighting | None:
    """The newest checkpoint at ``place`` (None: none, or mid-write: look again later).

    A job rewrites ``last.pt`` while doctor polls: contents read from the old file and a
    time taken from the new one would make one checkpoint look like two. A file's time is
    taken from the open file that was read; a folder's, after reading it.
    """
    try:
        found = inspect_checkpoint(place)
    except (CheckpointError, StorageError, OSError):
        return None  # mid-write, or not a checkpoint after all
    if found is None:
        return None
    if found.mtime_ns is not None:
        return _Sighting(found, found.mtime_ns)
    stamp = _stamp(found.path)
    return _Sighting(found, stamp)


def _stamp(path: str) -> int | None:
    """The modification time (ns) of a local checkpoint folder; None for a URL."""
    try:
        return Path(path).stat().st_mtime_ns
    except (OSError, ValueError):
        return None


_CHECKPOINTISH = re.compile(
    r"ckpt|checkpoint|\.pt$|\.pth$|\.safetensors$|\.distcp$|^\.metadata$|^MANIFEST\.json$",
    re.I,
)


def _within(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def _checkpoint_root(path: Path) -> Path | None:
    """The directory to inspect for a written path, or None if it is no checkpoint."""
    parts = path.parts
    if any(p in ("__pycache__", "site-packages", "dist-packages") for p in parts):
        return None
    if parts[:2] in (("/", "proc"), ("/", "sys")) or str(path).startswith("/dev/pts"):
        return None
    if not any(_CHECKPOINTISH.search(p) for p in parts[-3:]) and path.suffix not in (
        ".bin",
        ".json",
    ):
        return None
    # spotsafe: STORE/checkpoints/step-*/file -> STORE; HF: OUT/checkpoint-N/file -> OUT
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "checkpoints" and i + 1 < len(parts) and parts[i + 1].startswith("step-"):
            return Path(*parts[:i])
        if re.fullmatch(r"checkpoint-\d+", parts[i]):
            return Path(*parts[:i])
    if path.name == ".metadata" or path.suffix == ".distcp":
        return path.parent
    if _CHECKPOINTISH.search(path.name) or path.suffix == ".bin":
        return path.parent
    return None


def _restores(store: Path, since: float) -> list[Any]:
    """spotsafe ``restore`` events recorded in ``store`` after ``since``."""
    from spotsafe.events import read_events
    from spotsafe.storage import open_store

    if not (store / "events").is_dir():
        return []
    try:
        events = read_events(open_store(str(store)))
    except (StorageError, OSError, ValueError):
        return []
    return [e for e in events if e.kind == "restore" and e.t >= since]


def _tail(output: bytes) -> str:
    return output.decode(errors="replace")[-OUTPUT_TAIL:]


def probe(
    command: Sequence[str],
    settings: ProbeSettings = ProbeSettings(),
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProbeResult:
    """Run ``command`` twice in a scratch store, as described in the module docstring.

    Raises:
        ConfigError: the command cannot be started.
    """
    from spotsafe.env import ChildEnv
    from spotsafe.supervisor.child import Child

    scratch = Path(tempfile.mkdtemp(prefix="spotsafe-doctor-"))
    store = scratch / "store"
    store.mkdir()
    hook = scratch / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    cwd = Path(settings.cwd or os.getcwd())
    watch = _Watch(scratch, store, cwd)
    env = ChildEnv(store=str(store), pool=settings.pool, config=settings.config).apply(os.environ)
    env["SPOTSAFE_ALLOW_EPHEMERAL"] = "1"  # the scratch store is disposable by design
    env[ENV_WRITES] = str(watch.writes)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    argv = [a.replace(STORE_PLACEHOLDER, str(store)) for a in command]
    result = ProbeResult(scratch=str(scratch))

    def start() -> Child:
        if settings.cwd is None:
            return Child(argv, env=env, echo=False)
        old = os.getcwd()
        os.chdir(cwd)  # Child takes no cwd=: the command runs where the caller asked
        try:
            return Child(argv, env=env, echo=False)
        finally:
            os.chdir(old)

    def stop(child: Child, written: set[Any] | None = None) -> tuple[int | None, float]:
        """SIGTERM, then SIGKILL at the end of the grace: (exit code or None, seconds).
        ``written`` collects the checkpoints written after the signal: those newer than the
        one seen just before it (and, for a file, modified after it)."""
        last = watch.newest()
        t_signal_ns = time.time_ns()
        t0 = clock()
        child.signal_group(signal.SIGTERM)

        def look() -> None:
            found = watch.newest()
            if written is None or found is None:
                return
            if last is not None and found.identity == last.identity:
                return
            if found.mtime_ns is None or found.mtime_ns > t_signal_ns:
                written.add(found.identity)

        rc = None
        pause = POLL_MIN_S
        while rc is None and clock() - t0 < settings.grace_s:
            rc = child.wait(min(pause, max(settings.grace_s - (clock() - t0), 0.0)))
            pause = min(pause * 1.5, POLL_MAX_S)
            look()
        took = clock() - t0
        if rc is None:
            child.signal_group(signal.SIGKILL)
            child.wait()
        look()  # what the end of the run left
        return rc, took

    def wait_for(child: Child, seen: Callable[[_Sighting], bool]) -> _Sighting | None:
        deadline = clock() + settings.timeout_s
        pause = POLL_MIN_S
        while clock() < deadline:
            found = watch.newest()
            if found is not None and seen(found):
                return found
            if child.poll() is not None:
                child.wait()
                found = watch.newest()
                return found if found is not None and seen(found) else None
            sleep(pause)
            pause = min(pause * 1.5, POLL_MAX_S)
        return None

    try:
        first = start()
        before = wait_for(first, lambda c: True)
        if before is None:
            _no_checkpoint(result, first, settings)
            return result
        written: set[Any] = set()
        rc, took = stop(first, written)
        after = watch.newest() or before
        result.flush_s = took if rc is not None else None
        result.findings += classify_stop(
            rc=rc, stop_code=settings.stop_code, saved=bool(written), flush_s=took,
            grace_s=settings.grace_s, kept_training=len(written) > 1,
        )  # fmt: skip
        result.checkpoint = after.contents
        _restart(result, start, stop, wait_for, watch, after)
        result.locations = watch.locations()
        return result
    finally:
        if not settings.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _no_checkpoint(result: ProbeResult, child: Any, settings: ProbeSettings) -> None:
    rc = child.poll()
    if rc is None:
        child.signal_group(signal.SIGKILL)
        child.wait()
        result.findings.append(
            Finding(
                id=NO_CHECKPOINT,
                severity=Severity.WARNING,
                what=f"no checkpoint appeared within {settings.timeout_s:g} s, so doctor "
                "could not test stopping and resuming",
                evidence={
                    "timeout_s": settings.timeout_s,
                    "output": _tail(child.output.getvalue()),
                },
                fix="raise --timeout-s, save earlier, or pass the checkpoint directory as "
                "{store} in the command (spotsafe jobs use $SPOTSAFE_STORE)",
            )
        )
        return
    what = (
        "the job finished without writing a checkpoint doctor could find: an interruption "
        "would restart it from scratch"
        if rc == 0
        else f"the job failed (exit {rc}) before writing its first checkpoint"
    )
    result.findings.append(
        Finding(
            id=NO_CHECKPOINT,
            severity=Severity.ERROR,
            what=what,
            evidence={"exit_code": rc, "output": _tail(child.output.getvalue())},
            fix="save checkpoints to $SPOTSAFE_STORE (or to {store} given in the command); "
            "spotsafe.Checkpointer + spotsafe.Guard do it",
        )
    )


def _restart(
    result: ProbeResult,
    start: Callable[[], Any],
    stop: Callable[..., tuple[int | None, float]],
    wait_for: Callable[[Any, Callable[[_Sighting], bool]], _Sighting | None],
    watch: _Watch,
    stopped: _Sighting,
) -> None:
    since = time.time()
    saved = stopped.contents
    mark = watch.log_size()
    second = start()
    sighting = wait_for(second, lambda s: s.identity != stopped.identity)
    found = sighting.contents if sighting else None
    rc = second.poll()
    if rc is None:
        stop(second)
    restores = _restores(watch.store, since)
    evidence: dict[str, Any] = {"saved_step": saved.step, "checkpoint": saved.path}
    if restores:
        step = restores[0].get("step")
        evidence["restore_event_step"] = step
        if step is None:
            result.findings.append(_from_scratch(evidence, "spotsafe's restore found nothing"))
        return
    if found is not None and found.step is not None and saved.step is not None:
        evidence["next_checkpoint_step"] = found.step
        log = watch.log(mark)
        if found.step <= saved.step:
            how = f"the second run wrote step {found.step}, not past the saved step {saved.step}"
        elif log and not any(kind == "read" for kind, _ in log):
            # Doctor may see a run from scratch only after it passed the saved step (it polls
            # every 0.5 s at most); the audit hook, which saw the run write, saw no read.
            evidence["checkpoint_files_read"] = 0
            how = f"the second run never opened a checkpoint before it wrote step {found.step}"
        else:
            return
        result.findings.append(_from_scratch(evidence, how))
        return
    if found is None and rc == 0:
        return  # it had nothing left to do: it found the saved state (or the job is tiny)
    evidence["output"] = _tail(second.output.getvalue())
    result.findings.append(
        Finding(
            id=RESTART_FROM_SCRATCH,
            severity=Severity.INFO,
            what="doctor could not tell whether a second run resumes: its checkpoints "
            "carry no step it can read",
            evidence=evidence,
            fix="save the step (or global_step) in the checkpoint",
        )
    )


def _from_scratch(evidence: dict[str, Any], how: str) -> Finding:
    return Finding(
        id=RESTART_FROM_SCRATCH,
        severity=Severity.ERROR,
        what=f"run again after a stop, the job starts from scratch: {how}",
        evidence=evidence,
        fix="load the newest checkpoint at start-up (spotsafe.Checkpointer.restore(state)) "
        "and continue from its step",
    )
