"""The Guard's own interval policies, asked the way the Guard asks them.

The simulator does not re-implement `Auto`, `EverySeconds` or `MaxLostWork`: it walks the
step boundaries after a save and asks the policy object, with the state the Guard would pass
(the measured blocking time C, the persist time P, the step time and the mean time between
interruptions), until the policy says `SaveNow`. That elapsed time is the interval the
simulation then runs with. It is the steady state: the Guard's first save, before C is
measured, and its learning of M from observed interruptions are left out.

Example:
    >>> from spotsafe.policy.interval import Auto
    >>> from spotsafe.simulate.model import Job
    >>> job = Job(work_s=36000.0, step_s=1.0, checkpoint_s=2.0)
    >>> guard_interval_s(Auto(max_lost_work_s=1800, mtbi_prior_s=3600), job, mtbi_s=3600.0)
    121.0
"""

from __future__ import annotations

import math

from spotsafe.errors import ConfigError
from spotsafe.policy.interval import IntervalPolicy, IntervalState, SaveNow
from spotsafe.simulate.model import Job

__all__ = ["guard_interval_s"]

MAX_QUESTIONS = 100_000  # a policy that never says SaveNow within this many asks is a bug


def guard_interval_s(policy: IntervalPolicy, job: Job, *, mtbi_s: float) -> float:
    """Seconds from one save's start to the next that `policy` gives `job` in steady state.

    The Guard asks at each step boundary; the first boundary after a save comes C + one step
    after its start. With ``job.step_s == 0`` time is continuous and the policy's own
    ``Wait.remaining_s`` says when to ask again.

    Raises:
        ConfigError: a policy that counts steps, for a job without a step time; a policy
            that never decides to save.
    """
    c, step = job.checkpoint_s, job.step_s
    elapsed, steps = c + step, 1 if step > 0 else 0
    for _ in range(MAX_QUESTIONS):
        decision = policy.decide(
            IntervalState(
                now_s=elapsed,
                last_save_s=0.0,
                steps_since_save=steps,
                mean_step_s=step or None,
                save_blocking_s=c,
                persist_s=job.persist_s,
                mtbi_s=mtbi_s,
            )
        )
        if isinstance(decision, SaveNow):
            return elapsed
        if step > 0:
            ahead = decision.remaining_steps or 0
            if decision.remaining_s is not None:
                ahead = max(ahead, math.ceil(decision.remaining_s / step - 1e-9))
            ahead = max(ahead, 1)
            steps += ahead
            elapsed += ahead * step
        elif decision.remaining_s is not None:
            if decision.remaining_s <= 0:
                # In continuous time "the next step would pass the cap" is the next instant.
                return elapsed
            elapsed += decision.remaining_s
        else:
            raise ConfigError(
                f"{type(policy).__name__} counts steps: give the job a step time (--step-s)"
            )
    raise ConfigError(f"{policy!r} never decided to save in {MAX_QUESTIONS} step boundaries")
