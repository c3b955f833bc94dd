"""A stale attempt (its supervisor lost the job) must not commit over a newer generation."""

from __future__ import annotations

import pytest

from spotsafe.errors import StorageError
from spotsafe.storage import open_store
from spotsafe.supervisor import JobRecord, check_fence, current_generation
from spotsafe.supervisor.job import AttemptStart


def test_only_the_newest_generation_passes_the_fence(memory_url: str) -> None:
    store = open_store(memory_url)
    assert current_generation(store) is None
    check_fence(store, 1)  # no supervisor record yet: nothing to fence against
    record = JobRecord.open(store, job_id="j")
    for n in (1, 2):
        record.start(AttemptStart(attempt=n, started_s=float(n), start_step=None))
    assert current_generation(store) == 2
    check_fence(store, 2)
    check_fence(store, None)  # a run outside the supervisor is not fenced
    with pytest.raises(StorageError, match="attempt 2 has started since") as e:
        check_fence(store, 1)
    assert not e.value.retryable


def test_an_attempt_number_is_taken_once(memory_url: str) -> None:
    store = open_store(memory_url)
    a, b = JobRecord.open(store), JobRecord.open(store)
    assert a.job_id == b.job_id  # both read the id the first one wrote
    a.start(AttemptStart(attempt=1, started_s=0.0, start_step=None))
    with pytest.raises(StorageError, match="started by another supervisor"):
        b.start(AttemptStart(attempt=1, started_s=0.0, start_step=None))


def test_a_store_holds_one_job(memory_url: str) -> None:
    from spotsafe.errors import ConfigError

    store = open_store(memory_url)
    JobRecord.open(store, job_id="first")
    with pytest.raises(ConfigError, match="holds job 'first', not 'second'"):
        JobRecord.open(store, job_id="second")
