"""Prometheus metrics of a job, computed from its store: ``spotsafe run --metrics-port PORT``.

The numbers are the job report's (`spotsafe.report.accounting.account_job`, schema 1), so a
dashboard built on these metrics and ``spotsafe report`` never disagree::

    spotsafe_job_info{job_id,pool,state}               1
    spotsafe_attempts_total{exit_class,pool}           ended attempts, by exit class
    spotsafe_current_attempt                           the newest attempt's number
    spotsafe_interruptions_total{source,pool}          by the stop request's source, or unclean
    spotsafe_resumes_total{result}                     succeeded | fell_back | fresh
    spotsafe_resume_rate                               succeeded / attempts after an interruption
    spotsafe_replayed_steps_total                      work redone after interruptions
    spotsafe_replayed_seconds_total
    spotsafe_retry_seconds_total                       interruption -> next attempt's first step
    spotsafe_checkpoint_blocking_seconds               histogram: training paused per save
    spotsafe_checkpoint_persist_seconds                histogram: a save until durable
    spotsafe_restore_seconds                           histogram: restore per attempt
    spotsafe_goodput_ratio                             useful step time / wall time
    spotsafe_useful_seconds_total, spotsafe_wall_seconds_total
    spotsafe_badput_seconds_total{category}            startup, restore, checkpoint_blocking,
                                                       replayed, retry_wait, other
    spotsafe_cost_spot, spotsafe_cost_on_demand_equivalent, spotsafe_cost_saved,
    spotsafe_cost_saved_ratio                          in the pool's currency; absent without
                                                       prices, as every unknown value is
    spotsafe_report_up                                 1: the last read of the store succeeded
    spotsafe_report_errors_total                       reads of the store that failed

No label names an attempt: a job's series stay few whatever its length.

How it is computed, and why: `JobCollector` is a custom collector that computes the report
from the store when it is scraped, at most once per ``min_interval_s`` (concurrent scrapes
share one computation; the ones in between get the cached families). The report is the
single bookkeeping: counters are the job's totals read from its history, not increments a
second copy would have to keep in step (and lose when the supervisor restarts on another
machine, while the store carries on). Nobody scraping costs nothing; a scrape storm costs
one read per interval. A failed read serves the last good families with
``spotsafe_report_up 0``: an unreachable store must not turn into an empty scrape.

`Exporter` serves the collector over HTTP (bound to 127.0.0.1 unless told otherwise) and/or
writes the same text to a file for node_exporter's textfile collector, whole or not at all
(written beside it, then renamed), every ``file_interval_s`` and once more at exit.

Example:
    >>> report = {"job_id": "j", "pool": "fast", "state": "running", "attempts": [
    ...     {"attempt": 1, "exit_class": "preempted", "restore_s": None},
    ...     {"attempt": 2, "exit_class": None, "restore_s": 0.4}],
    ...     "saves": [{"blocking_s": 0.02, "persist_s": 0.5}],
    ...     "interruptions": {"total": 1, "by_source": {"sigterm": 1}},
    ...     "resume": {"attempts": 1, "succeeded": 1, "fell_back": 0, "fresh": 0, "rate": 1.0},
    ...     "replayed": {"steps_total": 3, "seconds_total": 1.5},
    ...     "retry": {"seconds_total": 2.0},
    ...     "goodput": {"ratio": 0.5, "useful_s": 5.0, "total_s": 10.0, "badput_s": {"other": 5.0}},
    ...     "cost": None}
    >>> text = render(report_families(report)).decode()
    >>> print([line for line in text.splitlines() if line.startswith("spotsafe_interr")][0])
    spotsafe_interruptions_total{pool="fast",source="sigterm"} 1.0
    >>> "spotsafe_cost_saved" in text  # no prices: absent, never guessed
    False
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from spotsafe.storage import Store

__all__ = [
    "BUCKETS_S",
    "DEFAULT_HOST",
    "Exporter",
    "JobCollector",
    "render",
    "report_families",
    "serve",
]

log = logging.getLogger("spotsafe")

DEFAULT_HOST = "127.0.0.1"  # loopback: a job's numbers are not for the whole network
MIN_INTERVAL_S = 10.0  # at most one read of the store per 10 s, however often it is scraped
FILE_INTERVAL_S = 15.0  # node_exporter reads the file at its own scrape (commonly 15-60 s)
#: Histogram buckets (seconds) for checkpoint and restore times: 1 ms to 10 min.
BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
             120.0, 300.0, 600.0)  # fmt: skip


def _histogram(name: str, doc: str, values: Sequence[float]) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    buckets: list[tuple[str, float]] = [
        (repr(le), float(sum(1 for v in values if v <= le))) for le in BUCKETS_S
    ]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sum(values)))


def report_families(report: Mapping[str, Any], *, pool: str | None = None) -> list[Metric]:
    """The metric families of one job report (``JobReport.to_json()``, schema 1).

    Args:
        report: the report's JSON.
        pool: the pool label when the report names none (the supervisor's ``--pool``).
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    pool_name = str(report.get("pool") or pool or "")
    out: list[Metric] = []
    info = InfoMetricFamily("spotsafe_job", "The job these metrics describe.")
    info.add_metric([], {"job_id": str(report["job_id"]), "pool": pool_name,
                         "state": str(report["state"])})  # fmt: skip
    out.append(info)

    attempts = report["attempts"]
    by_class: dict[str, int] = {}
    for a in attempts:
        if a.get("exit_class") is not None:  # a running attempt has no class yet
            by_class[a["exit_class"]] = by_class.get(a["exit_class"], 0) + 1
    fam = CounterMetricFamily(
        "spotsafe_attempts", "Ended attempts of the job, by exit class.",
        labels=["exit_class", "pool"],
    )  # fmt: skip
    for cls, n in sorted(by_class.items()):
        fam.add_metric([cls, pool_name], n)
    out.append(fam)
    if attempts:
        out.append(GaugeMetricFamily(
            "spotsafe_current_attempt", "The newest attempt's number.",
            value=max(a["attempt"] for a in attempts),
        ))  # fmt: skip

    fam = CounterMetricFamily(
        "spotsafe_interruptions",
        "Attempts that ended other than in success or crash, by the stop request's source "
        "(unclean: killed without a clean stop).",
        labels=["source", "pool"],
    )
    for source, n in sorted(report["interruptions"]["by_source"].items()):
        fam.add_metric([source, pool_name], n)
    out.append(fam)

    resume = report["resume"]
    fam = CounterMetricFamily(
        "spotsafe_resumes",
        "Attempts after an interruption: restored the newest durable checkpoint (succeeded), "
        "fell back past a corrupt one, or started fresh.",
        labels=["result"],
    )
    for result in ("succeeded", "fell_back", "fresh"):
        fam.add_metric([result], resume[result])
    out.append(fam)
    if resume.get("rate") is not None:
        out.append(GaugeMetricFamily(
            "spotsafe_resume_rate", "Resumes that restored the newest durable checkpoint, "
            "of the attempts after an interruption.", value=resume["rate"],
        ))  # fmt: skip

    replayed = report["replayed"]
    out.append(CounterMetricFamily(
        "spotsafe_replayed_steps", "Training steps redone after interruptions.",
        value=replayed["steps_total"],
    ))  # fmt: skip
    out.append(CounterMetricFamily(
        "spotsafe_replayed_seconds", "Seconds of training redone after interruptions.",
        value=replayed["seconds_total"],
    ))  # fmt: skip
    out.append(CounterMetricFamily(
        "spotsafe_retry_seconds",
        "Seconds from each interruption to the next attempt's first training step.",
        value=report["retry"]["seconds_total"],
    ))  # fmt: skip

    saves = report["saves"]
    out.append(_histogram(
        "spotsafe_checkpoint_blocking_seconds", "Seconds training was paused per checkpoint.",
        [s["blocking_s"] for s in saves if s.get("blocking_s") is not None],
    ))  # fmt: skip
    out.append(_histogram(
        "spotsafe_checkpoint_persist_seconds", "Seconds from a checkpoint's start to durable.",
        [s["persist_s"] for s in saves if s.get("persist_s") is not None],
    ))  # fmt: skip
    out.append(_histogram(
        "spotsafe_restore_seconds", "Seconds each attempt's restore took.",
        [a["restore_s"] for a in attempts if a.get("restore_s") is not None],
    ))  # fmt: skip

    goodput = report["goodput"]
    if goodput.get("ratio") is not None:
        out.append(GaugeMetricFamily(
            "spotsafe_goodput_ratio", "Useful training-step time over the wall time of all "
            "attempts.", value=goodput["ratio"],
        ))  # fmt: skip
    out.append(CounterMetricFamily(
        "spotsafe_useful_seconds", "Seconds of useful training-step time.",
        value=goodput["useful_s"],
    ))  # fmt: skip
    out.append(CounterMetricFamily(
        "spotsafe_wall_seconds", "Wall-clock seconds of all attempts.", value=goodput["total_s"]
    ))  # fmt: skip
    fam = CounterMetricFamily(
        "spotsafe_badput_seconds", "Wall-clock seconds that were not useful, by category.",
        labels=["category"],
    )  # fmt: skip
    for category, seconds in sorted(goodput["badput_s"].items()):
        fam.add_metric([category], seconds)
    out.append(fam)

    cost = report.get("cost")
    if cost:
        for key, doc in (
            ("spot", "Cost of all attempts' wall time at the capacity's price."),
            ("on_demand_equivalent", "Cost of the useful time at the on-demand price."),
            ("saved", "On-demand equivalent minus spot: saved net of replayed work."),
            ("saved_ratio", "Saved over the on-demand equivalent."),
        ):
            if cost.get(key) is not None:
                out.append(GaugeMetricFamily(f"spotsafe_cost_{key}", doc, value=cost[key]))
    return out


def render(families: Iterable[Metric]) -> bytes:
    """The text exposition format of `families` (what a scrape and the textfile contain)."""
    from prometheus_client import generate_latest

    class _Fixed:
        def collect(self) -> Iterable[Metric]:
            return families

    return generate_latest(_Fixed())


class JobCollector:
    """A Prometheus collector that computes a job's metrics from its report at scrape time,
    at most once per `min_interval_s`.

    Args:
        report: returns the job report's JSON (``account_job(store).to_json()``).
        pool: the pool label when the report names none.
        min_interval_s: the shortest time between two computations.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        report: Callable[[], Mapping[str, Any]],
        *,
        pool: str | None = None,
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report = report
        self.pool = pool
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._at: float | None = None
        self._up = False
        self._errors = 0
        self._last_error: type[BaseException] | None = None

    def refresh(self) -> None:
        """Compute the families now; on failure keep the last good ones and count it."""
        from spotsafe.errors import SpotsafeError

        with self._lock:
            self._refresh_locked(SpotsafeError)

    def _refresh_locked(self, expected: type[Exception]) -> None:
        try:
            families = report_families(self.report(), pool=self.pool)
        except (expected, OSError, KeyError, TypeError, ValueError) as e:
            # A scrape must not fail with the store: serve the last good numbers, say that
            # they are stale (spotsafe_report_up 0), and log each kind of failure once.
            self._errors += 1
            self._up = False
            if type(e) is not self._last_error:
                log.warning("metrics: could not compute the job report: %s", e)
            self._last_error = type(e)
        else:
            self._families, self._up, self._last_error = families, True, None
        self._at = self.clock()

    def collect(self) -> Iterable[Metric]:
        """The families, computed afresh when the cached ones are older than the interval."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from spotsafe.errors import SpotsafeError

        with self._lock:
            if self._at is None or self.clock() - self._at >= self.min_interval_s:
                self._refresh_locked(SpotsafeError)
            families = list(self._families)
            up, errors = self._up, self._errors
        families.append(GaugeMetricFamily(
            "spotsafe_report_up", "1 when the last computation from the store succeeded.",
            value=1 if up else 0,
        ))  # fmt: skip
        families.append(CounterMetricFamily(
            "spotsafe_report_errors", "Computations from the store that failed.", value=errors,
        ))  # fmt: skip
        return families


class Exporter:
    """Serves a collector over HTTP and/or writes it to a textfile; `close` stops both.

    Args:
        collector: what to expose.
        port: the HTTP port (0: any free one); None: no HTTP server.
        host: the address to bind (default loopback only).
        file: the textfile to write; None: none.
        file_interval_s: seconds between rewrites of the file.

    Raises:
        OSError: the port could not be bound.
    """

    def __init__(
        self,
        collector: JobCollector,
        *,
        port: int | None = None,
        host: str = DEFAULT_HOST,
        file: str | os.PathLike[str] | None = None,
        file_interval_s: float = FILE_INTERVAL_S,
    ) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.collector = collector
        # Our own registry: the job's numbers only, the same text on the port and in the file
        # (the default registry would add this process's own metrics to the textfile).
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.file = None if file is None else Path(file)
        self.address: tuple[str, int] | None = None
        self._server: Any = None
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        if port is not None:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
            self._server = server
            bound = server.server_address
            self.address = (str(bound[0]), int(bound[1]))
        if self.file is not None:
            # First written after one interval (the job record may not exist yet), then
            # every interval, and at close.
            self._writer = threading.Thread(
                target=self._write_every, args=(file_interval_s,), name="spotsafe-metrics-file",
                daemon=True,
            )  # fmt: skip
            self._writer.start()

    @property
    def url(self) -> str | None:
        """The scrape URL, or None without an HTTP server."""
        if self.address is None:
            return None
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def write_file(self) -> None:
        """Write the textfile now: a temporary file beside it, renamed over it."""
        from prometheus_client import write_to_textfile

        assert self.file is not None
        write_to_textfile(str(self.file), self.registry)

    def _write_every(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.write_file()
            except OSError as e:
                # The file is a view for node_exporter; a full disk must not stop the job.
                log.warning("metrics: could not write %s: %s", self.file, e)

    def close(self) -> None:
        """Stop serving; write the file one last time with the job's final numbers."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.file is not None:
            self.collector.refresh()  # the final numbers, not the cached ones
            try:
                self.write_file()
            except OSError as e:
                log.warning("metrics: could not write %s at exit: %s", self.file, e)


def serve(
    store: Store,
    *,
    pool: str | None = None,
    port: int | None = None,
    host: str = DEFAULT_HOST,
    file: str | os.PathLike[str] | None = None,
) -> Exporter:
    """Start exporting the metrics of the job in `store` (``spotsafe run --metrics-port``).

    Raises:
        ConfigError: the port could not be bound (in use, or the host is not an address of
            this machine), or the file's directory does not exist.
    """
    from spotsafe.errors import ConfigError
    from spotsafe.report.accounting import account_job

    if file is not None and not Path(file).absolute().parent.is_dir():
        raise ConfigError(f"--metrics-file {file}: its directory does not exist; create it")
    collector = JobCollector(lambda: account_job(store).to_json(), pool=pool)
    try:
        return Exporter(collector, port=port, host=host, file=file)
    except OSError as e:
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on {host}:{port} ({e.strerror or e}); "
            "pick another port or --metrics-host"
        ) from e
