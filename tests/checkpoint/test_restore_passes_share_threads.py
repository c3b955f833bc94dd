"""A restore's two passes (check everything, then fill the live tensors) read on one set of
threads with one scratch buffer each, and its first pass takes turns between runs read into
new memory and runs only checked. Errors still surface once the running reads ended."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.checkpoint import fetch, reader
from spotsafe.checkpoint.fetch import Run


def run(file: str, start: int) -> Run:
    return Run(file=file, start=start, end=start + 64, members=(start,))


def test_the_first_pass_alternates_kept_and_checked_runs_in_file_order() -> None:
    kept = [run("a", 0), run("a", 64), run("b", 0)]
    checked = [run("c", 0)]
    assert reader.alternate(kept, checked) == [kept[0], checked[0], kept[1], kept[2]]
    assert reader.alternate([], checked) == checked
    assert reader.alternate(kept, []) == kept


def test_workers_run_every_item_on_at_most_their_threads_and_keep_them() -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()
    with fetch.Workers(2) as workers:

        def note(x: int) -> None:
            time.sleep(0.01)  # long enough that both threads take part
            with lock:
                seen.append((x, threading.get_ident()))

        workers.run(note, list(range(6)))
        first = {ident for _, ident in seen}
        workers.run(note, list(range(6, 12)))
    assert sorted(x for x, _ in seen) == list(range(12))
    assert threading.get_ident() not in first
    assert {ident for _, ident in seen} == first and len(first) <= 2  # the same threads


def test_each_worker_thread_allocates_its_scratch_once() -> None:
    buffers: dict[int, set[int]] = {}
    lock = threading.Lock()
    with fetch.Workers(2) as workers:

        def note(_: int) -> None:
            buf = workers.scratch()
            assert buf.nbytes == fetch.CHUNK_BYTES and not buf.readonly
            with lock:
                buffers.setdefault(threading.get_ident(), set()).add(id(buf.obj))

        for _ in range(2):
            workers.run(note, list(range(4)))
    assert all(len(ids) == 1 for ids in buffers.values())


def test_the_first_error_is_raised_after_the_running_items_end() -> None:
    ended: list[int] = []
    started = threading.Event()

    def item(x: int) -> None:
        if x == 0:
            started.wait(5)
            raise ValueError("item 0 failed")
        started.set()
        time.sleep(0.05)
        ended.append(x)

    with fetch.Workers(2) as workers, pytest.raises(ValueError, match="item 0 failed"):
        workers.run(item, list(range(50)))
    assert 1 in ended  # item 1 ran alongside item 0 and finished before the raise
    assert len(ended) < 49  # the queued ones were cancelled


def test_a_restore_into_live_tensors_reads_on_one_pool(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256, bias=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 256)).sum().backward()
    opt.step()
    state = spotsafe.TrainState(model=model, optimizer=opt)
    state.step = 1
    ckpt = spotsafe.Checkpointer(str(tmp_path), events=False, io_threads=2, shard_bytes=64 << 10)
    ckpt.save(state)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.zero_()
    pools: list[int] = []
    real = fetch.fetch

    def spy(*args: object, **kwargs: object) -> None:
        pools.append(id(kwargs["workers"]))
        real(*args, **kwargs)  # type: ignore[arg-type]

    try:
        fetch.fetch = spy  # type: ignore[assignment]
        info = spotsafe.Checkpointer(str(tmp_path), events=False, io_threads=2).restore(state)
    finally:
        fetch.fetch = real  # type: ignore[assignment]
    assert info is not None and info.step == 1
    assert len(pools) == 2 and pools[0] == pools[1]  # check pass and fill pass, one pool
    assert torch.equal(model.weight, want["weight"])
