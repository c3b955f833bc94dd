"""Asynchronous saves (block C, persist P in the background, one save in flight): the optimum
interval between save starts is ≈ max(C + P, √(2CM)), and the Guard's own Auto policy, asked
as the Guard asks it, picks an interval within 5 % of the simulated optimum."""

from __future__ import annotations

import numpy as np
import pytest

from spotsafe.policy.interval import Auto
from spotsafe.simulate import Job, Poisson, async_interval_s, guard_interval_s, optimum, sweep

H = 3600.0


@pytest.mark.parametrize(
    ("checkpoint_s", "persist_s", "mtbi_h"),
    [
        (10.0, 600.0, 2.0),  # P bounds it: √(2CM) = 379 s < C + P = 610 s
        (10.0, 120.0, 24.0),  # Young's term rules: √(2CM) = 1315 s > C + P
    ],
)
def test_the_optimum_and_autos_choice(checkpoint_s: float, persist_s: float, mtbi_h: float) -> None:
    m = mtbi_h * H
    job = Job(work_s=50 * m, checkpoint_s=checkpoint_s, persist_s=persist_s, restart_s=120.0)
    theory = async_interval_s(checkpoint_s=checkpoint_s, persist_s=persist_s, mtbi_s=m)
    grid = [float(x) for x in np.geomspace(max(persist_s, theory / 2), theory * 2, 13)]
    found = optimum(job, sweep(job, Poisson(m), grid, trials=300, seed=3))
    assert abs(found.interval_s / theory - 1) < 0.05, (found, theory)

    auto = guard_interval_s(Auto(max_lost_work_s=7 * 86400.0), job, mtbi_s=m)
    assert abs(auto / found.interval_s - 1) < 0.05, (auto, found)
