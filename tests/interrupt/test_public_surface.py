"""The public surface of spotsafe.interrupt is pinned, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import spotsafe.interrupt

EXPECTED = [
    "AwsWatcher",
    "AzureWatcher",
    "GcpWatcher",
    "NoticeWatcher",
    "Poll",
    "PollingWatcher",
    "SignalCatcher",
    "StopFileWatcher",
    "StopFlag",
    "StopKind",
    "StopRequest",
    "Watcher",
    "detect_cloud",
    "watchers_from_env",
]


def test_all_is_sorted_and_pinned() -> None:
    assert spotsafe.interrupt.__all__ == EXPECTED
    assert sorted(spotsafe.interrupt.__all__) == spotsafe.interrupt.__all__
    for name in EXPECTED:
        assert getattr(spotsafe.interrupt, name) is not None


def test_interrupt_modules_do_not_import_torch() -> None:
    # Loads spotsafe.interrupt on its own (the parent package stubbed), so this pins what
    # *these* modules import; `spotsafe report` and `simulate` must not pay for torch.
    src = Path(spotsafe.interrupt.__file__).parents[1]
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('spotsafe'); pkg.__path__ = [{str(src)!r}]\n"
        "sys.modules['spotsafe'] = pkg\n"
        "import spotsafe.interrupt\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'fsspec') if m in sys.modules)\n"
        "print(','.join(heavy) or 'light')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "light"
