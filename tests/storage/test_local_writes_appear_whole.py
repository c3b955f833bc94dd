"""A process SIGKILLed in the middle of a local write leaves no object at all, as on an
object store: a truncated MANIFEST.json would otherwise look committed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import spotsafe
from spotsafe.checkpoint import Status

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys, time
from spotsafe.storage.local import LocalStore

def chunks():
    yield b'{"format": "spotsafe-checkpoint", '   # half a manifest ...
    print("half written", flush=True)
    time.sleep(60)                                  # ... and the process dies here
    yield b'"schema": 1}'

LocalStore(sys.argv[1]).write(sys.argv[2], chunks())
"""


def test_sigkill_mid_write_leaves_no_object(tmp_path: Path) -> None:
    path = "checkpoints/step-000000000005-0123abcd/MANIFEST.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), path],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "half written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / path).exists()
    leftovers = list((tmp_path / path).parent.iterdir())
    assert [p.name.startswith(".MANIFEST.json.") for p in leftovers] == [True]
    # Discovery calls it what it is: a write that never committed, not a corrupt checkpoint.
    listing = spotsafe.Checkpointer(str(tmp_path), read_only=True).checkpoints()
    assert [c.status for c in listing] == [Status.PARTIAL]
