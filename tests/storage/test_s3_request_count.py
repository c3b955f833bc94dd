"""What one save asks of S3, counted against the loopback S3 server: every request has a reason,
and a redundant round trip that comes back fails these tests (they count, they never time).

A save under the supervisor makes, once its data are up: two listings at once (the fence's,
of ``job/attempts``, and retention's, of ``checkpoints/``, on the side thread), the manifest
PUT, and the old manifest's delete. The old data files are deleted on the side thread after
the save has returned. Nothing is HEAD-ed or read back: manifests this process wrote are
cached. A file of known size goes up in equal parts planned for it, all at once.
"""

from __future__ import annotations

import io
import itertools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import spotsafe
from spotsafe.events import EventLog
from spotsafe.jobrecord import attempt_path
from spotsafe.storage import open_store
from spotsafe.storage.s3 import MIN_PART_SIZE, S3Store, plan_parts
from tests.storage.conftest import PART

MiB = 1024 * 1024
# Four 3 MiB tensors: one data file of 12 MiB and a few KB (RNG states), three 5 MiB parts.
TENSORS, TENSOR_BYTES = 4, 3 * MiB


@dataclass
class Request:
    op: str
    thread: str
    params: dict[str, Any] = field(default_factory=dict)


class Requests:
    """Every request a botocore client makes: operation, thread, parameters (a before-call hook)."""

    def __init__(self, store: S3Store) -> None:
        self.seen: list[Request] = []
        self._lock = threading.Lock()
        store.client.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        thread = threading.current_thread().name
        if thread.startswith("spotsafe-lease"):
            return  # the lease's heartbeats run on their own clock, not the save's
        shown = {k: str(_size(v) if k == "Body" else v) for k, v in params.items()}
        with self._lock:
            self.seen.append(Request(model.name, thread, shown))

    def take(self) -> list[Request]:
        with self._lock:
            out, self.seen = self.seen, []
        return out


def after_the_data(requests: list[Request]) -> list[str]:
    """What the saving thread asked, in order, once the data file was complete: the round
    trips a save waits for beyond the upload itself."""
    saver = threading.current_thread().name
    ops = [r.op for r in requests if r.thread == saver]
    return ops[len(ops) - ops[::-1].index("CompleteMultipartUpload") :]


def _size(body: Any) -> int:
    """Bytes in a request body: bytes, or the file-like object botocore wraps them in."""
    return body.getbuffer().nbytes if isinstance(body, io.BytesIO) else len(body)


def counts(requests: list[Request]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in requests:
        out[r.op] = out.get(r.op, 0) + 1
    return out


@pytest.fixture
def store(s3_bucket: str) -> Iterator[S3Store]:
    s = open_store(f"s3://{s3_bucket}/run-{uuid.uuid4().hex[:8]}", part_size=PART, concurrency=4)
    assert isinstance(s, S3Store)
    yield s
    s.close()


def new_state() -> tuple[spotsafe.TrainState, list[torch.Tensor]]:
    module = torch.nn.Module()
    for i in range(TENSORS):
        module.register_buffer(f"w{i}", torch.zeros(TENSOR_BYTES, dtype=torch.uint8))
    return spotsafe.TrainState(model=module), list(module.buffers())


def save_new_bytes(
    ckpt: spotsafe.Checkpointer, state: spotsafe.TrainState, tensors: list[torch.Tensor]
) -> None:
    """A save whose every tensor changed: nothing is shared with the previous checkpoint."""
    state.step += 1
    for t in tensors:
        t.fill_(state.step)
    ckpt.save(state)


def test_a_supervised_save_makes_only_the_requests_it_needs(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOTSAFE_JOB_ID", "job")
    monkeypatch.setenv("SPOTSAFE_ATTEMPT", "1")
    store.write_bytes(attempt_path(1, "start"), b'{"attempt": 1}')  # the job record's start
    requests = Requests(store)
    # Events are flushed by hand, so that their background writes do not land in the counts.
    events = EventLog(store, job_id="job", attempt=1, flush_interval_s=0)
    ckpt = spotsafe.Checkpointer(store, keep_last=2, events=events)
    state, tensors = new_state()
    for _ in range(2):  # steps 1 and 2: nothing to prune yet
        save_new_bytes(ckpt, state, tensors)
    ckpt.flush()
    requests.take()

    save_new_bytes(ckpt, state, tensors)  # step 3: step 1 goes
    during = requests.take()
    ckpt.flush()  # waits for the side thread's deletes
    after = requests.take()

    data_parts = len(plan_parts(TENSORS * TENSOR_BYTES + 1, part_size=PART, concurrency=4))
    everything = during + after
    assert counts(everything) == {
        "CreateMultipartUpload": 1,
        "UploadPart": data_parts,
        "CompleteMultipartUpload": 1,
        "ListObjectsV2": 2,  # the fence's and retention's, at the same time
        "PutObject": 1,  # the manifest
        "DeleteObjects": 2,  # step 1's manifest, then its data file
    }, counts(everything)
    saver = threading.current_thread().name
    # The fence's listing, the manifest, the old manifest's delete; nothing else waited for.
    assert after_the_data(during) == ["ListObjectsV2", "PutObject", "DeleteObjects"]
    listings = {r.params["Prefix"].split("/", 1)[1]: r for r in everything
                if r.op == "ListObjectsV2"}  # fmt: skip
    assert set(listings) == {"job/attempts/", "checkpoints/"}
    assert listings["job/attempts/"].thread == saver  # the fence: right before the manifest
    assert listings["checkpoints/"].thread.startswith("spotsafe-prune")  # beside the commit
    deletes = [r for r in everything if r.op == "DeleteObjects"]
    assert "MANIFEST.json" in deletes[0].params["Delete"]  # the manifest goes first, before
    assert deletes[0].thread == saver  # save returns;
    assert "data-000.bin" in deletes[1].params["Delete"]  # its data file after,
    assert deletes[1].thread.startswith("spotsafe-prune")  # off the save's critical path
    ckpt.close()
    steps = sorted(c.step for c in spotsafe.Checkpointer(store, read_only=True).checkpoints())
    assert steps == [2, 3]


def test_a_save_outside_the_supervisor_lists_once_and_checks_no_fence(store: S3Store) -> None:
    requests = Requests(store)
    ckpt = spotsafe.Checkpointer(store, keep_last=2, events=False)
    state, tensors = new_state()
    for _ in range(2):
        save_new_bytes(ckpt, state, tensors)
    ckpt.flush()
    requests.take()
    save_new_bytes(ckpt, state, tensors)
    ckpt.flush()
    seen = requests.take()
    assert after_the_data(seen) == ["PutObject", "DeleteObjects"]  # the retention listing
    assert counts(seen)["ListObjectsV2"] == 1  # went beside the manifest; no fence to check
    assert counts(seen)["DeleteObjects"] == 2
    assert not {"HeadObject", "GetObject"} & set(counts(seen)), counts(seen)
    ckpt.close()


def test_a_file_of_known_size_goes_up_in_equal_parts(store: S3Store) -> None:
    requests = Requests(store)
    size = 3 * PART + 4096  # streamed in PART-sized pieces, this would end in a 4 KiB part
    data = bytes(range(256)) * (size // 256)
    assert store.write("x.bin", [memoryview(data)[: size // 2], memoryview(data)[size // 2 :]])
    sizes = [int(r.params["Body"]) for r in requests.take() if r.op == "UploadPart"]
    assert len(sizes) == 3 and sum(sizes) == size  # 3 parts, not 4
    assert max(sizes) - min(sizes) < 3  # of one size, a few bytes over PART
    assert store.read_bytes("x.bin") == data


@pytest.mark.parametrize(
    ("total", "part_size", "concurrency", "sizes_mib"),
    [
        (64 * MiB, 16 * MiB, 8, [8.0] * 8),  # spread over every connection, 8 MiB each
        (256 * MiB, 16 * MiB, 8, [16.0] * 16),  # as many parts as part_size needs
        (33 * MiB, 16 * MiB, 1, [11.0] * 3),  # equal parts: no small last one
        (6 * MiB, 5 * MiB, 8, [5.0, 1.0]),  # never under S3's 5 MiB minimum
        (20 * MiB + 8, 5 * MiB, 8, [5.0 + 2 / MiB] * 4),  # nor a sliver after full parts
    ],
)
def test_parts_are_planned_for_the_file(
    total: int, part_size: int, concurrency: int, sizes_mib: list[float]
) -> None:
    ranges = plan_parts(total, part_size=part_size, concurrency=concurrency)
    assert [(e - s) / MiB for s, e in ranges] == sizes_mib
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(e - s >= MIN_PART_SIZE for s, e in ranges[:-1])
