"""Every job under a prefix (a local directory or an object-store URL), grouped by pool.

A job is a store holding ``job/job.json``; the prefix is searched for them once (a directory
walk that does not descend into a job, or one listing of the bucket prefix), and each job is
accounted by `spotsafe.report.accounting.account_job`. This is where "one policy for every
workload" becomes visible: goodput, replayed hours and cost saved side by side per pool.

Example:
    >>> report = account_fleet("memory://spotsafe-fleet-doc")
    >>> report.to_json()
    {'schema': 1, 'prefix': 'memory://spotsafe-fleet-doc', 'jobs': [], 'pools': {}}
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotsafe.errors import StorageError
from spotsafe.redact import redact_url
from spotsafe.report.accounting import SCHEMA, JobReport, account_job
from spotsafe.storage import open_store

__all__ = ["FleetReport", "PoolSummary", "account_fleet", "find_jobs"]

log = logging.getLogger("spotsafe")

JOB_MARK = "job/job.json"
NO_POOL = "unknown"  # the pool of a job whose attempts did not record one
IO_THREADS = 8  # jobs read at once: object stores answer slowly, and each job is small


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSummary:
    """The jobs of one pool, added up."""

    jobs: int
    interruptions: int
    goodput: float | None
    """All the pool's useful time / all its total time; None without any time."""
    replayed_hours: float
    cost_saved: float | None
    """The sum over jobs with prices; None when none has them."""

    def to_json(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "interruptions": self.interruptions, "goodput": self.goodput,
                "replayed_hours": self.replayed_hours, "cost_saved": self.cost_saved}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetReport:
    """Every job under `prefix`, and a summary per pool."""

    prefix: str
    jobs: tuple[JobReport, ...]
    pools: dict[str, PoolSummary]
    errors: tuple[tuple[str, str], ...] = ()
    """(store, error) of jobs that could not be accounted (not in the JSON)."""

    def to_json(self) -> dict[str, Any]:
        """Schema 1: each job's report without its attempts and saves, and the pools."""
        return {
            "schema": SCHEMA,
            "prefix": self.prefix,
            "jobs": [j.summary_json() for j in self.jobs],
            "pools": {name: p.to_json() for name, p in sorted(self.pools.items())},
        }


def _join(prefix: str, rel: str) -> str:
    return prefix if not rel else f"{prefix.rstrip('/')}/{rel}"


def find_jobs(prefix: str) -> list[str]:
    """The store URLs (or paths) of every job under `prefix`, sorted.

    Raises:
        StorageError: the prefix cannot be read (a local path that is not a directory is
            not retryable).
    """
    text = os.fspath(prefix)
    local = "://" not in text or text.lower().startswith("file://")
    if local:
        root = Path(text.split("://", 1)[1] if "://" in text else text)
        if not root.is_dir():
            raise StorageError(f"{text}: no such directory; check the path", retryable=False)
        found: list[str] = []
        for dirpath, dirnames, _ in os.walk(root):
            if (Path(dirpath) / JOB_MARK).is_file():
                found.append(dirpath)
                dirnames[:] = []  # a job's own directories hold no other job
            else:
                dirnames.sort()
        return sorted(found)
    store = open_store(text)
    roots = set()
    for path in store.list(""):
        if path == JOB_MARK:
            roots.add("")
        elif path.endswith("/" + JOB_MARK):
            roots.add(path[: -len(JOB_MARK) - 1])
    return [_join(text, rel) for rel in sorted(roots)]


def account_fleet(prefix: str, *, now_s: float | None = None) -> FleetReport:
    """Account for every job under `prefix` and sum them up per pool.

    A job that cannot be accounted (garbled record, unreadable) is left out, logged and
    listed in `FleetReport.errors`; a prefix that cannot be read raises.

    Args:
        prefix: a local directory or an fsspec / ``s3://`` URL.
        now_s: wall time to account running jobs up to (default: now).
    """
    now = time.time() if now_s is None else now_s
    urls = find_jobs(prefix)
    jobs: list[JobReport] = []
    errors: list[tuple[str, str]] = []

    def one(url: str) -> JobReport:
        return account_job(open_store(url), now_s=now)

    with cf.ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        for url, fut in zip(urls, [pool.submit(one, u) for u in urls], strict=True):
            try:
                jobs.append(fut.result())
            except StorageError as e:
                # One unreadable job must not hide the others: say which, account the rest.
                log.warning("could not account the job in %s: %s", redact_url(url), e)
                errors.append((redact_url(url), str(e)))
    return FleetReport(prefix=redact_url(prefix), jobs=tuple(jobs), pools=summarize(jobs),
                       errors=tuple(errors))  # fmt: skip


def summarize(jobs: list[JobReport]) -> dict[str, PoolSummary]:
    """One `PoolSummary` per pool of `jobs`."""
    groups: dict[str, list[JobReport]] = {}
    for j in jobs:
        groups.setdefault(j.pool or NO_POOL, []).append(j)
    out = {}
    for name, group in groups.items():
        total = sum(j.total_s for j in group)
        saved = [j.cost["saved"] for j in group if j.cost is not None]
        out[name] = PoolSummary(
            jobs=len(group),
            interruptions=sum(j.interruptions for j in group),
            goodput=sum(j.useful_s for j in group) / total if total > 0 else None,
            replayed_hours=sum(j.replayed_s for j in group) / 3600.0,
            cost_saved=sum(s for s in saved if s is not None) if saved else None,
        )
    return out
