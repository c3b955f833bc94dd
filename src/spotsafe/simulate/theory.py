"""What theory says the simulator must find: Young's and Daly's optimum and Daly's makespan.

The optimum intervals themselves live in `spotsafe.policy.interval` (`young_interval_s`,
`daly_interval_s`, `async_interval_s`), the one module the Guard's `Auto` policy uses too:
the simulator checks those formulas, it does not keep copies of them.

Daly's model (J. T. Daly, "A higher order estimate of the optimum checkpoint interval for
restart dumps", FGCS 22(3), 2006): a job of Ts seconds of work saves after every τ seconds of
work, a save takes δ and blocks, interruptions are exponential with mean M and can strike
during work, saves and the restart R too. Each segment of τ + δ then takes on average
M·e^{R/M}·(e^{(τ+δ)/M} − 1), so E[T] = M·e^{R/M}·(e^{(τ+δ)/M} − 1)·Ts/τ.

Asynchronous saves (block C, then persist P in the background, the next save waiting for the
previous one): the optimum interval between save starts is ≈ max(C + P, √(2CM)). That formula
lives in `spotsafe.policy.interval.async_interval_s` with its derivation, next to the Daly
interval, because the Guard's `Auto` policy aims for it; it is re-exported here, and the
simulator's tests check it (tests/simulate/test_async_optimum.py).

Example:
    >>> round(daly_makespan_s(work_s=500 * 3600, tau_s=7004, delta_s=300, restart_s=600,
    ...                       mtbi_s=24 * 3600) / 3600, 1)
    547.9
    >>> async_interval_s(checkpoint_s=10.0, persist_s=600.0, mtbi_s=7200.0)
    610.0
"""

from __future__ import annotations

import math

from spotsafe.policy.interval import async_interval_s

__all__ = ["async_interval_s", "daly_makespan_s"]


def daly_makespan_s(
    *, work_s: float, tau_s: float, delta_s: float, restart_s: float, mtbi_s: float
) -> float:
    """Daly's expected wall time of a job: M·e^{R/M}·(e^{(τ+δ)/M} − 1)·Ts/τ.

    Example:
        >>> round(daly_makespan_s(work_s=100.0, tau_s=10.0, delta_s=0.0, restart_s=0.0,
        ...                       mtbi_s=1e12), 6)  # interruptions never come: Ts
        100.0
    """
    m = mtbi_s
    return m * math.exp(restart_s / m) * math.expm1((tau_s + delta_s) / m) * work_s / tau_s
