"""What interruptions cost: per-job and per-fleet accounting read from the store alone.

`account_job` gives one job's `JobReport` (its ``to_json()`` is the documented schema 1);
`account_fleet` every job under a prefix, grouped by pool. Torch-free.

Example:
    >>> from spotsafe.report import account_fleet
    >>> account_fleet("memory://spotsafe-report-init-doc").to_json()["jobs"]
    []
"""

from spotsafe.report.accounting import JobReport, account_job, source_name
from spotsafe.report.fleet import FleetReport, account_fleet

__all__ = ["FleetReport", "JobReport", "account_fleet", "account_job", "source_name"]
