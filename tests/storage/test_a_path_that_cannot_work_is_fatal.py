"""A local store whose path cannot work (a file where its directory should be) fails for
good: not retried by the supervisor's looks, and the CLI exits 2 (a user error), not 75."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotsafe.errors import ObjectMissing, StorageError
from spotsafe.storage import open_store


def test_a_file_in_the_way_is_a_fatal_storage_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    store = open_store(tmp_path / "a-file" / "run")
    for op in (lambda: store.list("checkpoints"), lambda: store.write_bytes("x", b"1"),
               lambda: store.read_bytes("x")):  # fmt: skip
        with pytest.raises(StorageError) as info:
            op()
        assert info.value.retryable is False, info.value
        assert not isinstance(info.value, ObjectMissing)
