"""After `on_demand_after` interruptions the pool's hook runs once and later attempts are
told (SPOTSAFE_ON_DEMAND=1) to run on on-demand capacity."""

from __future__ import annotations

from pathlib import Path

from tests.supervisor.conftest import CHILD, write_pool


def test_hook_runs_once_and_the_flag_reaches_the_next_attempts(
    tmp_path: Path, spawn_supervisor
) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "hook-ran"
    config = write_pool(
        tmp_path / "spotsafe.toml",
        on_demand_after=1,
        on_demand_command=f"echo ran >> {marker}",
    )
    plans = [
        "printenv:SPOTSAFE_ON_DEMAND,ckpt:5,cleanstop,exit:75",  # a preemption
        "printenv:SPOTSAFE_ON_DEMAND,ckpt:10,cleanstop,exit:75",  # another one
        "printenv:SPOTSAFE_ON_DEMAND,ckpt:15,exit:0",
    ]
    proc = spawn_supervisor(tmp_path / "store", config, *CHILD, *plans)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    flags = [line for line in out.splitlines() if line.startswith("SPOTSAFE_ON_DEMAND=")]
    assert flags == ["SPOTSAFE_ON_DEMAND=", "SPOTSAFE_ON_DEMAND=1", "SPOTSAFE_ON_DEMAND=1"]
    assert marker.read_text() == "ran\n"  # once per job, not once per attempt
