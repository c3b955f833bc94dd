"""The public surface is short and explicit; this pins it (as httpx does)."""

from __future__ import annotations

import subprocess
import sys

import spotsafe


def test_all_is_sorted_and_pinned() -> None:
    assert spotsafe.__all__ == [
        "Checkpointer",
        "Guard",
        "PendingSave",
        "RestoreInfo",
        "ResumableLoader",
        "SaveInfo",
        "TrainState",
        "__version__",
    ]
    assert sorted(spotsafe.__all__) == spotsafe.__all__
    for name in spotsafe.__all__:
        assert getattr(spotsafe, name) is not None


def test_importing_spotsafe_does_not_import_torch() -> None:
    """The CLI's report and simulate start fast: torch loads only when training code asks."""
    code = "import sys, spotsafe, spotsafe.errors; sys.exit(1 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
