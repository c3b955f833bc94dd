"""S3 benchmark: spotsafe against boto3's TransferManager, same bytes, same server, one run.

    .venv/bin/python bench/s3_bench.py                            # both states, 5 rounds
    .venv/bin/python bench/s3_bench.py --size-mb 64 --repeat 3    # quicker

Starts moto's S3 server in a separate process (so the server does not share the client's
GIL) on a free loopback port, then measures two states: a moderate one (``--moderate-mb``,
default 64 MiB in ``--moderate-tensors`` 16 tensors) and a large one (``--size-mb``, default
256 MiB in one tensor). Each round writes new random bytes into the state's tensors and into
a file, then times, in an order that rotates from round to round (the machine's load drifts):

- ``Checkpointer.save`` of the state, as under ``spotsafe run`` (attempt 1 of a job: the
  fence is checked before each commit, events on, retention keeping 3), against boto3's
  ``upload_file`` of the same bytes and ``upload_fileobj`` from memory, with the same part
  size and concurrency (``TransferConfig``), and ``upload_file`` with TransferManager's own
  defaults (8 MiB parts, 10 threads);
- ``Checkpointer.restore`` against ``download_file``;
- for the large state, ``S3Store.write`` / ``read_into`` of the bytes alone (one object, what
  a save and a restore do per data file) against the same two.

The table shows the median of the rounds and the ratio of throughputs: in each round,
boto3's time over the other's (above 1 is faster than boto3; the target is >= 0.9x), the
median of those per-round ratios and their range, and the S3 requests one
save makes (those it waits for and those its side thread makes after it returns), counted with
a botocore event hook. JSON with every sample goes to ``--out``
(default ``bench/results``).

moto keeps objects in memory and reads the whole object to serve any range, so the numbers
say how the clients compare on this machine, not what S3 itself sustains.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
MiB = 1024 * 1024
JOB_ID = "s3-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start within 30 s")


class RequestCounter:
    """Counts the S3 requests a botocore client makes, by operation (a before-call hook)."""

    def __init__(self, client: Any) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        if threading.current_thread().name.startswith("spotsafe-events"):
            return  # the event log's flush every 10 s: its own clock, not a save's request
        with self._lock:
            self.counts[model.name] += 1

    def take(self) -> dict[str, int]:
        """The counts since the last take, and start again."""
        with self._lock:
            out = dict(sorted(self.counts.items()))
            self.counts.clear()
        return out


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rounds(
    ops: dict[str, Callable[[], Any]], refresh: Callable[[int], None], n: int
) -> dict[str, list[float]]:
    """Seconds per op over ``n`` rounds; ``refresh(round)`` first (untimed), then every op in
    an order rotated by one each round. A first round is not timed: it opens connections and
    threads and imports what each path imports on first use."""
    names = list(ops)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(-1, n):
        refresh(r)
        k = r % len(names)
        for name in names[k:] + names[:k]:
            seconds = timed(ops[name])
            if r >= 0:
                out[name].append(seconds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="the large state, one tensor (MiB)")
    ap.add_argument("--moderate-mb", type=int, default=64, help="the moderate state (MiB)")
    ap.add_argument("--moderate-tensors", type=int, default=16, help="its tensor count")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the table shows medians")
    ap.add_argument("--part-mb", type=int, default=16, help="multipart part size, in MiB")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--only", choices=["moderate", "large"], help="measure one state only")
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="where the JSON goes")
    args = ap.parse_args()

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench-access-key")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret-key")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # As under `spotsafe run`: attempt 1 of a job, so every commit checks the fence.
    os.environ["SPOTSAFE_JOB_ID"] = JOB_ID
    os.environ["SPOTSAFE_ATTEMPT"] = "1"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    moto = start_moto(port)
    load_before = os.getloadavg()
    try:
        states, requests = run(args, endpoint)
    finally:
        moto.terminate()
        moto.wait(10)
    load_after = os.getloadavg()

    print(f"{'state':16s} {'operation':28s} {'median s':>9s} {'MiB/s':>7s} {'vs boto3':>9s} range")
    for label, st in states.items():
        for name, med in st["median_s"].items():
            ratio = st["ratios"].get(name)
            shown = f"{ratio:8.2f}x" if ratio is not None else ""
            per = st["ratio_per_round"].get(name)
            spread = f"{min(per):.2f}-{max(per):.2f}" if per else ""
            print(f"{label:16s} {name:28s} {med:9.3f} {st['mib'] / med:7.1f} {shown:>9s} {spread}")
    print("(vs boto3: the median over rounds of boto3's time over the other's in the same round,")
    print(" against upload_file (same part size and threads) for writes and download_file for")
    print(" reads; range: lowest and highest round; >= 0.9x is the target for spotsafe)")
    for label, counts in requests.items():
        print(f"S3 requests of one {label} save: {sum(counts.values())} {counts}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    result = {
        "bench": "s3",
        "part_mb": args.part_mb,
        "concurrency": args.concurrency,
        "rounds": args.repeat,
        "server": "moto_server (separate process, loopback)",
        "states": states,
        "requests_per_save": requests,
        "load_average": {"before": load_before, "after": load_after},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"s3-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def run(
    args: argparse.Namespace, endpoint: str
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    import boto3
    from boto3.s3.transfer import TransferConfig

    part = args.part_mb * MiB
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    config = TransferConfig(
        multipart_threshold=part, multipart_chunksize=part, max_concurrency=args.concurrency
    )
    defaults = TransferConfig()
    shapes = {"moderate": (args.moderate_mb, args.moderate_tensors), "large": (args.size_mb, 1)}
    if args.only is not None:
        shapes = {args.only: shapes[args.only]}
    states: dict[str, dict[str, Any]] = {}
    requests: dict[str, dict[str, int]] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:  # the repository's disk, not /tmp
        for i, (mib, count) in enumerate(shapes.values()):
            label = f"{mib} MiB / {count} t"
            bench = StateBench(
                args, client, bucket, config, defaults, f"state-{i}", Path(tmp), mib, count
            )
            states[label] = bench.run(args.repeat)
            requests[label] = bench.last_counts
    return states, requests


class StateBench:
    """One state shape: its Checkpointer and boto3's transfers of the same bytes."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: Any,
        bucket: str,
        config: Any,
        defaults: Any,
        prefix: str,
        tmp: Path,
        mib: int,
        count: int,
    ) -> None:
        import torch

        import spotsafe
        from spotsafe.jobrecord import attempt_path
        from spotsafe.storage import open_store

        self.client, self.bucket, self.config, self.defaults = client, bucket, config, defaults
        self.mib, self.count = mib, count
        self.src, self.dst = tmp / "src.bin", tmp / "dst.bin"
        options = {"part_size": args.part_mb * MiB, "concurrency": args.concurrency}
        self.store = open_store(f"s3://{bucket}/{prefix}", **options)
        self.counter = RequestCounter(self.store.client)
        # The raw S3Store rows use a store of their own, so that only saves are counted.
        self.raw = open_store(f"s3://{bucket}/{prefix}-raw", **options)
        self.store.write_bytes(attempt_path(1, "start"), b'{"attempt": 1}')  # the job record
        module = torch.nn.Module()
        self.per = mib * MiB // count
        for t in range(count):
            module.register_buffer(f"w{t}", torch.zeros(self.per, dtype=torch.uint8))
        self.tensors = list(module.buffers())
        self.state = spotsafe.TrainState(model=module)
        self.ckpt = spotsafe.Checkpointer(self.store, allow_ephemeral=True)
        self.blob = bytearray(self.per * count)
        self.out = bytearray(self.per * count)
        self.last_counts: dict[str, int] = {}

    def refresh(self, _round: int) -> None:
        """New bytes in the state and the file: nothing can be reused from the last round."""
        import torch

        self.blob[:] = os.urandom(len(self.blob))
        flat = torch.frombuffer(self.blob, dtype=torch.uint8)
        for t, tensor in enumerate(self.tensors):
            tensor.copy_(flat[t * self.per : (t + 1) * self.per])
        self.src.write_bytes(self.blob)
        self.state.step += 1
        self.ckpt.flush()  # the previous save's side work (old data files deleted) is done
        self.counter.take()

    def run(self, repeat: int) -> dict[str, Any]:
        c, b, cfg = self.client, self.bucket, self.config
        ops: dict[str, Callable[[], Any]] = {
            "Checkpointer.save": lambda: self.ckpt.save(self.state),
            "boto3 upload_file": lambda: c.upload_file(str(self.src), b, "tm.bin", Config=cfg),
            "boto3 upload_fileobj": lambda: c.upload_fileobj(
                io.BytesIO(self.blob), b, "tm-obj.bin", Config=cfg
            ),
            # TransferManager's own defaults (8 MiB parts, 10 threads): what a user who
            # passes no Config gets.
            "boto3 upload_file, defaults": lambda: c.upload_file(
                str(self.src), b, "tm-def.bin", Config=self.defaults
            ),
        }
        if self.count == 1:
            ops["S3Store.write"] = lambda: self.raw.write("raw.bin", [self.blob])
        samples = rounds(ops, self.refresh, repeat)
        self.ckpt.flush()
        self.last_counts = self.counter.take()  # the last round's save, side work included
        reads: dict[str, Callable[[], Any]] = {
            "Checkpointer.restore": lambda: self.ckpt.restore(self.state),
            "boto3 download_file": lambda: c.download_file(b, "tm.bin", str(self.dst), Config=cfg),
        }
        if self.count == 1:
            reads["S3Store.read_into"] = lambda: self.raw.read_into("raw.bin", memoryview(self.out))
        samples.update(rounds(reads, lambda r: None, repeat))
        assert self.dst.read_bytes() == bytes(self.blob)
        assert self.count != 1 or self.out == self.blob
        self.ckpt.close()
        self.store.close()
        self.raw.close()
        median = {k: statistics.median(v) for k, v in samples.items()}
        # Each round's own ratio (its ops ran back to back, so a load spike that slows them
        # all cancels out); the table shows their median and range.
        writes = ("Checkpointer.save", "S3Store.write", "boto3 upload_fileobj",
                  "boto3 upload_file, defaults")  # fmt: skip
        per_round = {
            k: [b / t for b, t in zip(samples["boto3 upload_file"], samples[k], strict=True)]
            for k in writes
            if k in samples
        }
        for k in ("Checkpointer.restore", "S3Store.read_into"):
            if k in samples:
                base = samples["boto3 download_file"]
                per_round[k] = [b / t for b, t in zip(base, samples[k], strict=True)]
        ratios = {k: statistics.median(v) for k, v in per_round.items()}
        return {
            "ratio_per_round": per_round,
            "mib": self.mib,
            "tensors": self.count,
            "seconds": samples,
            "median_s": median,
            "ratios": ratios,
            "save_vs_upload_fileobj": median["boto3 upload_fileobj"] / median["Checkpointer.save"],
        }


if __name__ == "__main__":
    main()
