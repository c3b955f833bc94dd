"""S3 benchmark: spotsafe's S3 store against boto3's TransferManager, same bytes, one run.

    .venv/bin/python bench/s3_bench.py                  # 256 MiB against moto on loopback
    .venv/bin/python bench/s3_bench.py --size-mb 64 --repeat 1          # quick

Starts moto's S3 server in a separate process (so the server does not share the client's
GIL) on a free loopback port, then measures on the same random bytes: ``S3Store.write`` and
``read_into`` (what a checkpoint save and restore do per data file); boto3's
``upload_file`` / ``download_file`` with the same part size and concurrency; and a full
``Checkpointer.save`` / ``restore`` of a state of that size. Prints a table and writes JSON
to ``--out`` (default ``bench/results``). The target is >= 0.9x the TransferManager.

moto keeps objects in memory and reads the whole object to serve any range, so the numbers
say how the clients compare, not what S3 itself sustains.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import best_of

ROOT = Path(__file__).resolve().parent
MiB = 1024 * 1024


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


def best_s(fn: Callable[[], Any], repeat: int) -> float:
    return best_of(repeat, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256, help="bytes per object, in MiB")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the best counts")
    ap.add_argument("--part-mb", type=int, default=16, help="multipart part size, in MiB")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="where the JSON goes")
    args = ap.parse_args()

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench-access-key")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret-key")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    moto = start_moto(port)
    try:
        import boto3
        import torch
        from boto3.s3.transfer import TransferConfig

        import spotsafe
        from spotsafe.storage import open_store

        size = args.size_mb * MiB
        part = args.part_mb * MiB
        data = os.urandom(size)
        client = boto3.client("s3", endpoint_url=endpoint)
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        store = open_store(f"s3://{bucket}/store", part_size=part, concurrency=args.concurrency)
        config = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=args.concurrency
        )
        rows: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src.bin"
            dst = Path(tmp) / "dst.bin"
            src.write_bytes(data)
            out = bytearray(size)
            rows["spotsafe S3Store.write"] = best_s(
                lambda: store.write("x.bin", [data]), args.repeat
            )
            rows["boto3 upload_file"] = best_s(
                lambda: client.upload_file(str(src), bucket, "tm.bin", Config=config), args.repeat
            )
            rows["spotsafe S3Store.read_into"] = best_s(
                lambda: store.read_into("x.bin", memoryview(out)), args.repeat
            )
            rows["boto3 download_file"] = best_s(
                lambda: client.download_file(bucket, "tm.bin", str(dst), Config=config),
                args.repeat,
            )
            assert out == data and dst.read_bytes() == data

            module = torch.nn.Module()
            module.register_buffer("w", torch.frombuffer(bytearray(data), dtype=torch.uint8))
            state = spotsafe.TrainState(model=module)
            ckpt = spotsafe.Checkpointer(
                store, keep_last=2, incremental=False, allow_ephemeral=True, events=False
            )

            def save() -> None:
                state.step += 1
                ckpt.save(state)

            rows["spotsafe Checkpointer.save"] = best_s(save, args.repeat)
            rows["spotsafe Checkpointer.restore"] = best_s(lambda: ckpt.restore(state), args.repeat)
            ckpt.close()
    finally:
        moto.terminate()
        moto.wait(10)

    print(f"{'operation':32s} {'s':>8s} {'MiB/s':>9s}")
    for name, seconds in rows.items():
        print(f"{name:32s} {seconds:8.3f} {args.size_mb / seconds:9.1f}")
    ratios = {
        "write_vs_upload_file": rows["boto3 upload_file"] / rows["spotsafe S3Store.write"],
        "read_vs_download_file": rows["boto3 download_file"] / rows["spotsafe S3Store.read_into"],
    }
    for name, r in ratios.items():
        print(f"{name:32s} {r:8.2f}x  (target >= 0.9x)")
    result = {
        "bench": "s3",
        "size_mb": args.size_mb,
        "part_mb": args.part_mb,
        "concurrency": args.concurrency,
        "repeat": args.repeat,
        "server": "moto_server (separate process, loopback)",
        "seconds": rows,
        "mib_per_s": {k: args.size_mb / v for k, v in rows.items()},
        "ratios": ratios,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"s3-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
