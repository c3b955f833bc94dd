"""Every numeric setting of the Checkpointer has bounds; a value outside them is a ConfigError
that names the setting, the value and the range."""

from __future__ import annotations

import pytest

import spotsafe
from spotsafe.errors import ConfigError


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("keep_last", 1),
        ("keep_last", 10**9),
        ("keep_last", 2.5),
        ("keep_last", True),
        ("shard_bytes", 1),
        ("shard_bytes", 1 << 60),
        ("io_threads", 0),
        ("io_threads", 10**6),
        ("host_buffer_bytes", -1),
        ("host_buffer_bytes", 1 << 60),
    ],
)
def test_out_of_range_settings_are_refused(tmp_path, setting: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{setting}={value!r}: must be an int from \d+ to \d+"):
        spotsafe.Checkpointer(str(tmp_path), **{setting: value})  # type: ignore[arg-type]


def test_the_bounds_admit_real_settings(tmp_path) -> None:
    ckpt = spotsafe.Checkpointer(
        str(tmp_path), keep_last=50, shard_bytes=4 << 30, io_threads=64, host_buffer_bytes=1 << 40
    )
    assert (ckpt.keep_last, ckpt.io_threads) == (50, 64)
