"""Pure policies: when to checkpoint, what to do after an exit, and the named pools.

Nothing here imports torch, reads a clock, sleeps or draws from global randomness: the Guard,
the supervisor and the simulator pass time and an rng in and carry the decisions out.
"""

from spotsafe.policy.interval import (
    Auto,
    EverySeconds,
    EverySteps,
    IntervalState,
    MaxLostWork,
    SaveNow,
    Wait,
    daly_interval_s,
    mtbi_estimate,
    young_interval_s,
)
from spotsafe.policy.pools import (
    PRESETS,
    Pool,
    Prices,
    format_pools,
    get_pool,
    load_pools,
    pool_from_env,
)
from spotsafe.policy.retry import (
    AttemptRecord,
    Backoff,
    Budget,
    Done,
    ExitClass,
    GiveUp,
    Restart,
    RetryPolicy,
    RetryState,
    classify_exit,
)

__all__ = [
    "PRESETS",
    "AttemptRecord",
    "Auto",
    "Backoff",
    "Budget",
    "Done",
    "EverySeconds",
    "EverySteps",
    "ExitClass",
    "GiveUp",
    "IntervalState",
    "MaxLostWork",
    "Pool",
    "Prices",
    "Restart",
    "RetryPolicy",
    "RetryState",
    "SaveNow",
    "Wait",
    "classify_exit",
    "daly_interval_s",
    "format_pools",
    "get_pool",
    "load_pools",
    "mtbi_estimate",
    "pool_from_env",
    "young_interval_s",
]
