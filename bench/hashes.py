"""Which checksum for checkpoint data: throughput of the candidates on this machine.

    .venv/bin/python bench/hashes.py [--mb 256] [--repeat 3]

spotsafe hashes every tensor on save (incremental saves reuse a stored tensor when its hash and
size match) and on restore (full verification), so the checksum sits on both paths and must
run far faster than the disk. For each candidate this prints single-thread GB/s, the GB/s of
two threads hashing two halves (a checksum that holds the GIL does not speed up, and stalls
the training thread while a save persists in the background), and the digest size: the hash
is also the identity incremental saves rely on, so it must make an accidental collision
negligible. google-crc32c is measured only if it is already installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import zlib
from collections.abc import Callable

import xxhash
from _timing import best_of

Hasher = Callable[[memoryview], object]


def candidates() -> dict[str, tuple[int, Hasher]]:
    """name -> (digest bits, function)."""
    out: dict[str, tuple[int, Hasher]] = {
        "xxh3_64": (64, lambda b: xxhash.xxh3_64(b).digest()),
        "xxh3_128": (128, lambda b: xxhash.xxh3_128(b).digest()),
        "zlib.crc32": (32, zlib.crc32),
        "blake2b": (512, lambda b: hashlib.blake2b(b).digest()),
        "sha256": (256, lambda b: hashlib.sha256(b).digest()),
    }
    try:
        import google_crc32c  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        out["google-crc32c"] = (32, lambda b: google_crc32c.value(bytes(b)))
    return out


def two_threads(fn: Hasher, data: memoryview) -> None:
    half = len(data) // 2
    threads = [threading.Thread(target=fn, args=(part,)) for part in (data[:half], data[half:])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=256, help="MiB hashed per measurement")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many")
    args = ap.parse_args()
    data = memoryview(os.urandom(args.mb << 20))
    n = len(data)
    print(f"{'checksum':<14} {'bits':>5} {'GB/s 1 thread':>14} {'GB/s 2 threads':>15}")
    for name, (bits, fn) in candidates().items():
        one = best_of(args.repeat, lambda fn=fn: fn(data))
        two = best_of(args.repeat, lambda fn=fn: two_threads(fn, data))
        print(f"{name:<14} {bits:>5} {n / one / 1e9:>14.2f} {n / two / 1e9:>15.2f}")
    print(f"\n{os.cpu_count()} CPUs; {args.mb} MiB of random bytes; best of {args.repeat}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
