"""The auto interval's MTBI starts at the pool's prior and learns from the job's record."""

from __future__ import annotations

import json

import pytest
import torch

import spotsafe
from spotsafe.policy import get_pool, mtbi_estimate
from spotsafe.policy.interval import DEFAULT_PRIOR_WEIGHT
from spotsafe.storage import open_store


def end_record(store_url: str, attempt: int, exit_class: str, started: float, ended: float) -> None:
    doc = {"attempt": attempt, "exit_class": exit_class, "started_s": started, "ended_s": ended}
    open_store(store_url).write_bytes(
        f"job/attempts/{attempt:06d}-end.json", json.dumps(doc).encode()
    )


def guard(store: str) -> spotsafe.Guard:
    state = spotsafe.TrainState(model=torch.nn.Linear(2, 2))
    return spotsafe.Guard(spotsafe.Checkpointer(store, events=False), state, watchers=[])


def test_outside_the_supervisor_the_prior_applies(tmp_path) -> None:
    assert guard(str(tmp_path)).mtbi_s is None


def test_the_jobs_interruptions_update_the_prior(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(tmp_path)
    end_record(store, 1, "preempted", 0.0, 600.0)
    end_record(store, 2, "unclean", 700.0, 1000.0)
    end_record(store, 3, "crash", 1100.0, 1200.0)  # a crash is not an interruption
    monkeypatch.setenv("SPOTSAFE_ATTEMPT", "4")
    prior = get_pool("standard").mtbi_prior_s
    expected = mtbi_estimate(prior, DEFAULT_PRIOR_WEIGHT, 2, 1000.0)
    assert guard(store).mtbi_s == pytest.approx(expected)
    assert expected < prior  # two interruptions in 1000 s: the interval shortens
