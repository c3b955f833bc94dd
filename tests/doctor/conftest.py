"""The doctor tests run on a machine that is no cloud VM: say so, rather than let the
ephemeral-store check probe the metadata services (seconds of timeouts off the cloud)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTSAFE_CLOUD", "none")
