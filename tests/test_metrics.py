"""``spotsafe run --metrics-port``: the job's Prometheus metrics, scraped during a real run.

One real supervised job for the module (and for the dashboard's test): a tiny torch model
under a Guard, SIGKILLed after step 5 (checkpoint at 4) in attempt 1; attempt 2 resumes and
trains on until the test has scraped it, then the supervisor is stopped with SIGTERM
(attempt 2 stops cleanly, exit 75).
The script implies: interruptions unclean 1 (live) and then sigterm 1, attempts unclean 1
and preempted 1, one resume from the newest checkpoint. The endpoint is scraped over HTTP
while attempt 2 trains; the textfile written at exit is parsed with prometheus_client's own
parser and compared, figure by figure, with ``account_job`` of the finished store.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spotsafe.errors import StorageError
from spotsafe.jobrecord import attempt_files
from spotsafe.metrics import BUCKETS_S, Exporter, JobCollector
from spotsafe.report import account_job
from spotsafe.storage import open_store
from spotsafe.supervisor import newest_valid_step
from tests.supervisor.conftest import REPO, child_env, write_pool

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DEADLINE_S = 240.0  # generous: a loaded 2-core CI machine starts torch slowly


def parse(text: str) -> Samples:
    """Every sample of an exposition text, by (name, labels), through the official parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k)[label]: v for (n, k), v in samples.items() if n == name}


def listening(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} has them) listening on `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                out.append(address)
    return out


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert proc.poll() is None, f"spotsafe run exited {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Run:
    proc: subprocess.Popen[str]
    store: Path
    textfile: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)

    def url(self) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith("spotsafe run: metrics at "):
                return line.split(" at ", 1)[1].strip()


def start(argv: list[str], store: Path, textfile: Path) -> Run:
    proc = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    run = Run(proc=proc, store=store, textfile=textfile)

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            run.stderr.append(line)
            run.lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return run


@dataclass
class Live:
    """What was seen while attempt 2 trained: reports before and after one scrape."""

    url: str
    scraped: Samples
    before: dict[str, Any]
    after: dict[str, Any]
    listening: list[str]
    refused_elsewhere: bool


_RUNS: dict[Path, tuple[Run, Live]] = {}


def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Live]:
    """The real job of this module, run once per session: tests/report/test_dashboard.py
    draws the same finished job rather than paying for another supervised run."""
    base = tmp_path_factory.getbasetemp()
    if base not in _RUNS:
        _RUNS[base] = _run(tmp_path_factory.mktemp("metrics"))
    return _RUNS[base]


def _run(root: Path) -> tuple[Run, Live]:
    config = write_pool(root / "spotsafe.toml", spot_price_per_hour=1.0,
                        on_demand_price_per_hour=3.0)  # fmt: skip
    store, textfile = root / "jobs" / "live", root / "spotsafe.prom"
    argv = [sys.executable, "-m", "spotsafe.cli", "run", "--store", str(store),
            "--config", str(config), "--pool", "fast",
            "--metrics-port", "0", "--metrics-file", str(textfile), "--",
            sys.executable, "-m", "tests.report.interrupted_child",
            "--steps", "100000", "--every", "4", "--step-s", "0.02", "1=kill@5"]  # fmt: skip
    run = start(argv, store, textfile)
    try:
        url = run.url()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        opened = open_store(str(store))
        # Attempt 2 is in its training loop once it commits a checkpoint past the restored 4.
        wait_for("attempt 2's first checkpoint",
                 lambda: "start" in attempt_files(opened).get(2, set())
                 and (newest_valid_step(opened) or 0) >= 8, run.proc)  # fmt: skip
        before = account_job(str(store)).to_json()
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            scraped = parse(response.read().decode())
        after = account_job(str(store)).to_json()
        try:
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
            refused = False
        except ConnectionRefusedError:
            refused = True
        live = Live(url=url, scraped=scraped, before=before, after=after,
                    listening=listening(port), refused_elsewhere=refused)  # fmt: skip
        run.proc.send_signal(signal.SIGTERM)  # stop the supervisor: attempt 2 stops cleanly
        assert run.proc.wait(timeout=DEADLINE_S) == 75, "".join(run.stderr)
        return run, live
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Live]:
    return interrupted_run(tmp_path_factory)


def test_the_endpoint_is_scraped_during_the_run_and_matches_the_report(
    job: tuple[Run, Live],
) -> None:
    _, live = job
    s, before, after = live.scraped, live.before, live.after
    assert value(s, "spotsafe_report_up") == 1
    assert value(s, "spotsafe_job_info", job_id=before["job_id"], pool="fast",
                 state="running") == 1  # fmt: skip
    assert value(s, "spotsafe_current_attempt") == 2
    # Settled while attempt 2 trains (the job record): the same before, in, and after.
    assert before["interruptions"] == after["interruptions"] == {
        "total": 1, "by_source": {"unclean": 1}
    }  # fmt: skip
    assert by_label(s, "spotsafe_interruptions_total", "source") == {"unclean": 1}
    assert value(s, "spotsafe_interruptions_total", source="unclean", pool="fast") == 1
    assert by_label(s, "spotsafe_attempts_total", "exit_class") == {"unclean": 1}
    assert value(s, "spotsafe_attempts_total", exit_class="unclean", pool="fast") == 1
    assert before["resume"] == after["resume"]
    for result in ("succeeded", "fell_back", "fresh"):
        assert value(s, "spotsafe_resumes_total", result=result) == before["resume"][result]
    assert before["resume"]["succeeded"] == 1
    # Growing while it trains: the scrape lies between the reports around it.
    saves = value(s, "spotsafe_checkpoint_blocking_seconds_count")
    assert before["checkpoint"]["count"] <= saves <= after["checkpoint"]["count"]
    # No label names an attempt, whatever the family.
    assert {k for (_, labels) in s for k, _ in labels} <= {
        "job_id", "pool", "state", "exit_class", "source", "result", "category", "le"
    }  # fmt: skip


def test_it_listens_on_loopback_only_by_default(job: tuple[Run, Live]) -> None:
    _, live = job
    assert live.url.startswith("http://127.0.0.1:")
    assert live.listening == ["0100007F"]  # 127.0.0.1, and no other address
    assert live.refused_elsewhere  # 127.0.0.2 is this machine too, but not bound


def test_the_textfile_at_exit_is_the_final_report(job: tuple[Run, Live]) -> None:
    run, _ = job
    text = run.textfile.read_text()
    s = parse(text)  # prometheus_client's parser reads all of it
    report = account_job(str(run.store)).to_json()
    assert report["state"] == "stopped"
    assert value(s, "spotsafe_job_info", job_id=report["job_id"], pool="fast",
                 state="stopped") == 1  # fmt: skip
    # What the script implies...
    assert report["interruptions"]["by_source"] == {"unclean": 1, "sigterm": 1}
    assert by_label(s, "spotsafe_interruptions_total", "source") == {"unclean": 1, "sigterm": 1}
    assert by_label(s, "spotsafe_attempts_total", "exit_class") == {"unclean": 1, "preempted": 1}
    assert value(s, "spotsafe_resumes_total", result="succeeded") == 1
    assert value(s, "spotsafe_resume_rate") == report["resume"]["rate"] == 1.0
    # ... and every other figure is the report's, to the last bit the text format keeps.
    approx = lambda x: pytest.approx(x, rel=1e-12, abs=1e-12)  # noqa: E731
    # Killed after step 5 (the supervisor's progress record knows it), resumed from 4.
    assert value(s, "spotsafe_replayed_steps_total") == report["replayed"]["steps_total"] == 1
    assert value(s, "spotsafe_replayed_seconds_total") == approx(
        report["replayed"]["seconds_total"]
    )
    assert value(s, "spotsafe_retry_seconds_total") == approx(report["retry"]["seconds_total"])
    saves = report["saves"]
    for kind in ("blocking", "persist"):
        name = f"spotsafe_checkpoint_{kind}_seconds"
        values = [sv[f"{kind}_s"] for sv in saves]
        assert value(s, f"{name}_count") == len(values) == report["checkpoint"]["count"] > 0
        assert value(s, f"{name}_sum") == approx(sum(values))
        for le in BUCKETS_S:
            assert value(s, f"{name}_bucket", le=repr(le)) == sum(v <= le for v in values)
        assert value(s, f"{name}_bucket", le="+Inf") == len(values)
    restores = [a["restore_s"] for a in report["attempts"] if a["restore_s"] is not None]
    assert value(s, "spotsafe_restore_seconds_count") == len(restores) == 1
    goodput = report["goodput"]
    assert value(s, "spotsafe_goodput_ratio") == approx(goodput["ratio"])
    assert value(s, "spotsafe_useful_seconds_total") == approx(goodput["useful_s"])
    assert value(s, "spotsafe_wall_seconds_total") == approx(goodput["total_s"])
    badput = by_label(s, "spotsafe_badput_seconds_total", "category")
    assert badput == {k: approx(v) for k, v in goodput["badput_s"].items()}
    cost = report["cost"]
    assert cost is not None
    for key in ("spot", "on_demand_equivalent", "saved", "saved_ratio"):
        assert value(s, f"spotsafe_cost_{key}") == approx(cost[key])


def test_metrics_host_binds_the_address_given(tmp_path: Path) -> None:
    store, marker = tmp_path / "store", tmp_path / "go"
    wait = f"import os, time\nwhile not os.path.exists({str(marker)!r}): time.sleep(0.05)"
    argv = [sys.executable, "-m", "spotsafe.cli", "run", "--store", str(store),
            "--metrics-port", "0", "--metrics-host", "127.0.0.2", "--",
            sys.executable, "-c", wait]  # fmt: skip
    run = start(argv, store, tmp_path / "unused")
    try:
        url = run.url()
        assert url.startswith("http://127.0.0.2:")
        assert listening(int(url.rsplit(":", 1)[1].split("/")[0])) == ["0200007F"]
        wait_for("attempt 1", lambda: 1 in attempt_files(open_store(str(store))), run.proc)
        with urllib.request.urlopen(url, timeout=30) as response:
            s = parse(response.read().decode())
        assert value(s, "spotsafe_current_attempt") == 1
        marker.touch()
        assert run.proc.wait(timeout=DEADLINE_S) == 0
    finally:
        marker.touch()
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_a_port_in_use_is_a_one_line_user_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "spotsafe.cli", "run", "--store", str(tmp_path / "s"),
                "--metrics-port", str(port), "--", sys.executable, "-c", "pass"]  # fmt: skip
        done = subprocess.run(argv, cwd=REPO, env=child_env(), capture_output=True, text=True,
                              timeout=DEADLINE_S)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines
    assert not (tmp_path / "s" / "job").exists()  # refused before the job started


# ------------------------------------------------------------------ the collector alone

REPORT: Mapping[str, Any] = {
    "job_id": "j", "pool": None, "state": "running",
    "attempts": [{"attempt": 1, "exit_class": "preempted", "restore_s": None}],
    "saves": [{"blocking_s": 0.02, "persist_s": 0.5}],
    "interruptions": {"total": 1, "by_source": {"aws-spot": 1}},
    "resume": {"attempts": 0, "succeeded": 0, "fell_back": 0, "fresh": 0, "rate": None},
    "replayed": {"steps_total": 0, "seconds_total": 0.0}, "retry": {"seconds_total": 0.0},
    "goodput": {"ratio": None, "useful_s": 0.0, "total_s": 0.0, "badput_s": {}}, "cost": None,
}  # fmt: skip


def scrape(collector: JobCollector) -> Samples:
    exporter = Exporter(collector)
    from prometheus_client import generate_latest

    return parse(generate_latest(exporter.registry).decode())


def test_scrapes_within_the_interval_share_one_computation() -> None:
    now = [0.0]
    calls: list[float] = []

    def report() -> Mapping[str, Any]:
        calls.append(now[0])
        return REPORT

    collector = JobCollector(report, pool="std", min_interval_s=10, clock=lambda: now[0])
    s = scrape(collector)
    now[0] = 9.9
    scrape(collector)
    assert calls == [0.0]
    now[0] = 10.0
    scrape(collector)
    assert calls == [0.0, 10.0]
    # The supervisor's pool names the series when the report has none; unknowns are absent.
    assert value(s, "spotsafe_interruptions_total", source="aws-spot", pool="std") == 1
    assert not any(n in {"spotsafe_goodput_ratio", "spotsafe_resume_rate",
                         "spotsafe_cost_saved"} for n, _ in s)  # fmt: skip


def test_a_store_that_fails_serves_the_last_numbers_marked_stale() -> None:
    now = [0.0]
    fail = [False]

    def report() -> Mapping[str, Any]:
        if fail[0]:
            raise StorageError("s3://bucket/job: timed out")
        return REPORT

    collector = JobCollector(report, min_interval_s=1, clock=lambda: now[0])
    assert value(scrape(collector), "spotsafe_report_up") == 1
    fail[0], now[0] = True, 5.0
    s = scrape(collector)
    assert value(s, "spotsafe_report_up") == 0
    assert value(s, "spotsafe_report_errors_total") == 1
    assert value(s, "spotsafe_attempts_total", exit_class="preempted", pool="") == 1
    fail[0], now[0] = False, 10.0
    assert value(scrape(collector), "spotsafe_report_up") == 1


def test_the_textfile_is_rewritten_every_interval_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "job.prom"
    path.write_text("old")
    attempts = [1]

    def report() -> Mapping[str, Any]:
        return {**REPORT, "attempts": [{"attempt": attempts[0], "exit_class": None,
                                        "restore_s": None}]}  # fmt: skip

    exporter = Exporter(JobCollector(report, min_interval_s=0), file=path, file_interval_s=0.05)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while path.read_text() == "old":  # written by the exporter's thread, not by close
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert value(parse(path.read_text()), "spotsafe_current_attempt") == 1
    finally:
        attempts[0] = 2
        exporter.close()  # and once more at close, with the newest numbers
    assert value(parse(path.read_text()), "spotsafe_current_attempt") == 2
    assert sorted(os.listdir(tmp_path)) == ["job.prom"]  # no temporary file left behind
