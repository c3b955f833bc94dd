"""The supervisor: runs a job's command until it succeeds, resuming instead of restarting.

``spotsafe run -- CMD`` is `Supervisor`; its durable state is the job record (`JobRecord`)
and the lease (`Lease`) in the job's store, so any machine can continue the job.
``spotsafe chaos`` is `run_chaos`. No torch is imported here.
"""

from spotsafe.lease import Lease, LeaseLost, judge
from spotsafe.supervisor.job import JobRecord, check_fence, current_generation, default_job_id
from spotsafe.supervisor.progress import newest_valid_step
from spotsafe.supervisor.runner import EXIT_GAVE_UP, EXIT_STOPPED, Outcome, Supervisor

__all__ = [
    "EXIT_GAVE_UP",
    "EXIT_STOPPED",
    "JobRecord",
    "Lease",
    "LeaseLost",
    "Outcome",
    "Supervisor",
    "check_fence",
    "current_generation",
    "default_job_id",
    "judge",
    "newest_valid_step",
]
