"""The supervisor reads a store its child is writing: a listing that raced a prune, or a
throttled request, is looked at again (with the injected sleep), never the supervisor's end.
A failure that persists still raises: "could not read" is never "no progress"; a garbled job
record is a StorageError, never another exception."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from spotsafe.checkpoint.manifest import CHECKPOINTS_DIR
from spotsafe.errors import ObjectMissing, StorageError
from spotsafe.policy import ExitClass, Pool
from spotsafe.storage import Store, open_store
from spotsafe.storage.base import Buffer
from spotsafe.supervisor import JobRecord, Outcome, Supervisor
from spotsafe.supervisor.progress import LOOK_AGAIN_S
from tests.supervisor.conftest import CHILD, child_env


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)


class Flaky(Store):
    """A store whose listings of ``checkpoints/`` fail as scripted: ``failures[i]`` is raised
    by the i-th such listing (None: it succeeds)."""

    def __init__(self, inner: Store, failures: list[StorageError | None]) -> None:
        self.inner, self.failures = inner, failures
        self.url, self.is_local = inner.url, inner.is_local
        self.listings = 0

    def list(self, prefix: str = "") -> dict[str, int]:
        if prefix.strip("/") == CHECKPOINTS_DIR:
            self.listings += 1
            if self.failures:
                failure = self.failures.pop(0)
                if failure is not None:
                    raise failure
        return self.inner.list(prefix)

    def write(self, path: str, chunks: Iterable[Buffer]) -> int:
        return self.inner.write(path, chunks)

    def read_bytes(self, path: str) -> bytes:
        return self.inner.read_bytes(path)

    def read_range(self, path: str, start: int, end: int) -> bytes:
        return self.inner.read_range(path, start, end)

    def read_into(self, path: str, out: memoryview) -> None:
        self.inner.read_into(path, out)

    def delete(self, paths: Iterable[str]) -> None:
        self.inner.delete(paths)

    def create_exclusive(self, path: str, data: Buffer) -> bool:
        return self.inner.create_exclusive(path, data)


def supervise(store: Store, *plans: str) -> tuple[Outcome, list[float]]:
    slept: list[float] = []
    sup = Supervisor(store=store, store_url=store.url, command=[*CHILD, *plans],
                     pool=Pool(backoff_initial_s=0, backoff_max_s=0, grace_s=2, lease_ttl_s=2),
                     watchers=[], sleep=slept.append, rng=random.Random(0),
                     echo=False)  # fmt: skip
    return sup.run(), slept


# The error a listing raised when the child pruned a checkpoint directory mid-walk (it
# stopped `make chaos` at interruption 63).
PRUNED = ObjectMissing("list /s/checkpoints/step-000000000040-1a2b3c4d: no such file")
THROTTLED = StorageError("could not list s3://b/run/checkpoints: SlowDown", retryable=True)


def test_a_listing_that_raced_a_prune_is_looked_at_again(tmp_path: Path) -> None:
    # Listing 1 finds the start step; listings 2 and 3, judging the attempt, fail.
    store = Flaky(open_store(str(tmp_path / "s")), [None, PRUNED, THROTTLED])
    outcome, slept = supervise(store, "ckpt:10,ckpt:20,exit:0")
    assert outcome.exit_code == 0, outcome.reason
    assert slept == list(LOOK_AGAIN_S[:2])  # the injected sleep, not a real one
    record = JobRecord.open(store.inner)
    [attempt] = record.retry_state().attempts
    assert attempt.exit_class is ExitClass.SUCCESS and attempt.end_step == 20


def test_progress_is_judged_on_the_settled_look(tmp_path: Path) -> None:
    # A failed look must not turn into "no progress": the attempt advanced 10 -> 20.
    store = Flaky(open_store(str(tmp_path / "s")), [None, PRUNED, PRUNED, PRUNED])
    outcome, slept = supervise(store, "ckpt:10,exit:75", "ckpt:20,exit:75", "exit:0")
    assert outcome.exit_code == 0, outcome.reason
    assert slept[:3] == list(LOOK_AGAIN_S)
    classes = [a.exit_class for a in JobRecord.open(store.inner).retry_state().attempts]
    assert classes == [ExitClass.PREEMPTED, ExitClass.PREEMPTED, ExitClass.SUCCESS]


def test_a_failure_that_persists_raises_and_leaves_the_attempt_open(tmp_path: Path) -> None:
    store = Flaky(open_store(str(tmp_path / "s")), [None] + [THROTTLED] * 10)
    with pytest.raises(StorageError, match="SlowDown"):
        supervise(store, "ckpt:10,exit:75")
    record = JobRecord.open(store.inner)
    # Not judged, so not recorded: the next supervisor closes it from what the store says.
    assert [s.attempt for s in record.unfinished] == [1] and not record.ends
    assert store.read_bytes("logs/attempt-000001.log").startswith(b"attempt 1")
    outcome, _ = supervise(open_store(str(tmp_path / "s")), "exit:0")
    assert outcome.exit_code == 0
    recovered = JobRecord.open(store.inner).end_docs[1]
    assert recovered["recovered"] is True and recovered["end_step"] == 10


def test_a_fatal_error_is_not_retried(tmp_path: Path) -> None:
    denied = StorageError("could not list /s/checkpoints: Permission denied", retryable=False)
    store = Flaky(open_store(str(tmp_path / "s")), [None, denied])
    with pytest.raises(StorageError, match="Permission denied"):
        supervise(store, "ckpt:10,exit:75")
    assert store.listings == 2


def test_a_garbled_manifest_is_judged_not_raised(tmp_path: Path) -> None:
    # Whatever a manifest holds, discovery raises nothing but spotsafe errors, and a bad
    # manifest is a corrupt checkpoint (not the newest valid step), never a crash of ours.
    store = open_store(str(tmp_path / "s"))
    for i, body in enumerate([b"{", b"[]", b'{"format": 1}', b"\xff\xfe", b"[" * 100_000]):
        store.write_bytes(f"{CHECKPOINTS_DIR}/step-{90 + i:012d}-0000000{i}/MANIFEST.json", body)
    outcome, _ = supervise(store, "ckpt:10,exit:75", "exit:0")
    assert outcome.exit_code == 0, outcome.reason
    attempts = JobRecord.open(store).retry_state().attempts
    assert [(a.start_step, a.end_step) for a in attempts] == [(None, 10), (10, 10)]


GOOD_END = {"attempt": 1, "exit_class": "preempted", "started_s": 10.0, "ended_s": 20.0,
            "start_step": None, "end_step": 5, "returncode": 75}  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"started_s": "soon"},
        {"ended_s": None},
        {"ended_s": 5.0},  # before it started
        {"exit_class": "vanished"},
        {"end_step": "five"},
        {"end_step": -1},
        {"returncode": "75"},
        {"started_s": float("nan")},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_a_garbled_record_is_a_storage_error_never_a_crash(
    tmp_path: Path, change: dict[str, object]
) -> None:
    store = open_store(str(tmp_path / "s"))
    JobRecord.open(store, job_id="j")
    start = {"attempt": 1, "job_id": "j", "started_s": 10.0, "start_step": None, "info": {}}
    store.write_bytes("job/attempts/000001-start.json", json.dumps(start).encode())
    store.write_bytes("job/attempts/000001-end.json", json.dumps({**GOOD_END, **change}).encode())
    with pytest.raises(StorageError, match=r"000001-end\.json: the job record is garbled") as info:
        JobRecord.open(store)
    assert info.value.retryable is False


def test_a_garbled_start_record_is_a_storage_error(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"))
    JobRecord.open(store, job_id="j")
    store.write_bytes("job/attempts/000001-start.json", b'{"attempt": 1, "info": [1]}')
    with pytest.raises(StorageError, match=r"000001-start\.json: the job record is garbled"):
        JobRecord.open(store)


def test_a_garbled_time_does_not_hide_the_interruption_rate(tmp_path: Path) -> None:
    from spotsafe.jobrecord import observed_interruptions

    store = open_store(str(tmp_path / "s"))
    store.write_bytes("job/attempts/000001-end.json", json.dumps(GOOD_END).encode())
    store.write_bytes("job/attempts/000002-end.json",
                      b'{"exit_class": "unclean", "started_s": 0, "ended_s": 1e999}')  # fmt: skip
    # The garbled one is skipped; an infinite run time made the observed rate zero.
    assert observed_interruptions(store) == (1, 10.0)
