"""Checkpoint I/O on a bounded number of threads (``io_threads``): files written, spans read."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_threads(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads, in order; the first error is
    raised once the calls already running have ended (none is left writing behind us)."""
    todo = list(items)
    if len(todo) <= 1 or threads <= 1:
        return [fn(x) for x in todo]
    with cf.ThreadPoolExecutor(min(threads, len(todo)), thread_name_prefix="spotsafe-io") as pool:
        futures = [pool.submit(fn, x) for x in todo]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
