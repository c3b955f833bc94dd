"""Under exponential interruptions and synchronous saves the simulator agrees with Daly (2006):
the optimum interval within 5 %, the mean makespan within 2 %, on the paper's three cases
(Ts = 500 h, δ = 5 min, R = 10 min; M = 24 h, 6 h, 15 min); with Young in his regime; and
the optimum moves the right way with δ and M."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spotsafe.policy.interval import daly_interval_s, young_interval_s
from spotsafe.simulate import Job, Poisson, daly_makespan_s, optimum, run_trials, sweep

H = 3600.0
DELTA_S, RESTART_S, WORK_S = 300.0, 600.0, 500 * H


def best_tau(job: Job, mtbi_s: float, theory_s: float, *, trials: int, points: int) -> float:
    grid = [t + job.checkpoint_s for t in theory_s * np.geomspace(0.6, 1.6, points)]
    return optimum(job, sweep(job, Poisson(mtbi_s), grid, trials=trials, seed=11)).work_s


# Fewer trials where a trial holds thousands of interruptions: its mean is already tight.
@pytest.mark.parametrize(("mtbi_h", "trials"), [(24.0, 600), (6.0, 400), (0.25, 60)])
def test_the_papers_three_cases(mtbi_h: float, trials: int) -> None:
    job = Job(work_s=WORK_S, checkpoint_s=DELTA_S, restart_s=RESTART_S)
    m = mtbi_h * H
    tau_opt = daly_interval_s(DELTA_S, m)

    tau = best_tau(job, m, tau_opt, trials=trials, points=9)
    assert abs(tau / tau_opt - 1) < 0.05, (tau, tau_opt)

    # The mean makespan at Daly's interval against Daly's E[T].
    outcome = run_trials(job, Poisson(m), tau_opt + DELTA_S, trials=trials, seed=5)
    expected = daly_makespan_s(
        work_s=WORK_S, tau_s=tau_opt, delta_s=DELTA_S, restart_s=RESTART_S, mtbi_s=m
    )
    assert outcome.unfinished == 0
    assert abs(outcome.makespan_s.mean() / expected - 1) < 0.02


def test_young_in_his_regime() -> None:
    """δ ≪ M: the optimum is √(2δM) to first order."""
    c, m = 20.0, 48 * H
    job = Job(work_s=400 * H, checkpoint_s=c, restart_s=0.0)
    young = young_interval_s(c, m)
    assert abs(best_tau(job, m, young, trials=800, points=9) / young - 1) < 0.05


@settings(
    max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    delta=st.floats(min_value=20.0, max_value=200.0),
    mtbi_h=st.floats(min_value=2.0, max_value=12.0),
    factor=st.floats(min_value=3.0, max_value=5.0),
)
def test_the_optimum_grows_with_delta_and_with_m(
    delta: float, mtbi_h: float, factor: float
) -> None:
    m = mtbi_h * H
    work = 40 * m

    def tau(d: float, mm: float) -> float:
        job = Job(work_s=work, checkpoint_s=d, restart_s=120.0)
        return best_tau(job, mm, daly_interval_s(d, mm), trials=150, points=9)

    base = tau(delta, m)
    assert tau(delta * factor, m) > base
    assert tau(delta, m * factor) > base
