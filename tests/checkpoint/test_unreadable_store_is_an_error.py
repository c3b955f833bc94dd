"""Discovery tells "no checkpoint" apart from "could not read the store"."""

from __future__ import annotations

import pytest

import spotsafe
from spotsafe.errors import ConfigError, StorageError
from spotsafe.storage.local import LocalStore
from tests.support.tiny import tiny_state


def test_empty_or_absent_store_means_fresh_start(tmp_path) -> None:
    assert spotsafe.Checkpointer(str(tmp_path / "not-yet")).restore(tiny_state()) is None


class BrokenStore(LocalStore):
    """Listing fails as a network or permission error would."""

    def __init__(self, root, error: StorageError) -> None:  # type: ignore[no-untyped-def]
        super().__init__(root)
        self.error = error

    def list(self, prefix: str = "") -> dict[str, int]:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [StorageError("connection reset"), StorageError("access denied", retryable=False)],
    ids=["network", "permission"],
)
def test_listing_errors_propagate_from_restore(tmp_path, error) -> None:
    ckpt = spotsafe.Checkpointer(BrokenStore(tmp_path, error))
    with pytest.raises(StorageError) as info:
        ckpt.restore(tiny_state())
    assert info.value is error


def test_a_file_where_the_store_should_be_raises(tmp_path) -> None:
    target = tmp_path / "store"
    target.write_text("not a directory")
    with pytest.raises(StorageError):
        spotsafe.Checkpointer(str(target)).restore(tiny_state())


def test_no_store_anywhere_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("SPOTSAFE_STORE", raising=False)
    with pytest.raises(ConfigError, match="SPOTSAFE_STORE"):
        spotsafe.Checkpointer()


def test_store_from_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPOTSAFE_STORE", str(tmp_path))
    state = tiny_state()
    state.step = 3
    spotsafe.Checkpointer().save(state)
    assert spotsafe.Checkpointer(str(tmp_path)).restore(tiny_state()).step == 3  # type: ignore[union-attr]


def test_memory_store_round_trip(memory_url) -> None:
    state = tiny_state()
    state.step = 4
    spotsafe.Checkpointer(memory_url).save(state)
    assert spotsafe.Checkpointer(memory_url).restore(tiny_state()).step == 4  # type: ignore[union-attr]
