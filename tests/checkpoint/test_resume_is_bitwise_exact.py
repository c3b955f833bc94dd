"""An interrupted and resumed run ends with exactly the weights of an uninterrupted one,
whatever loader the user hands to TrainState; where no replay can make a loader exact,
TrainState says so once, at construction, and records it in the checkpoint's metadata.

The matrix: loaders (a bare torch DataLoader, a bare torchdata StatefulDataLoader, each also
in an explicit spotsafe.ResumableLoader) x the loader's ``generator=`` x ``num_workers`` 0 and
2, on 1 rank and (one torchrun for all its rows) on 2 ranks with a DistributedSampler. Every
exact row asserts that TrainState did not warn; every warning row, that the warning is true.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.data import NotExactWarning
from tests.support.training import (
    Interrupted,
    Setup,
    assert_bitwise_equal,
    make_loader,
    plain,
    train,
)

REPO = Path(__file__).resolve().parents[2]

# 40 samples / batch 4 = 10 steps per epoch, 3 epochs = 30 steps.
MID_EPOCH = [4]
EPOCH_BOUNDARY = [10]  # the last batch of epoch 0, saved before the loader is exhausted
SEVERAL = [7, 10, 23]  # mid-epoch, boundary (after a resume), mid-epoch in the last epoch

LOADERS = ["dataloader", "stateful", "resumable", "stateful-wrapped"]


def uninterrupted(setup: Setup) -> dict[str, torch.Tensor]:
    """The weights of a plain uninterrupted run (no spotsafe records its loader)."""
    return _plain_run(plain(setup))


@functools.cache
def _plain_run(setup: Setup) -> dict[str, torch.Tensor]:
    return train(None, setup)


def interrupted(store: str, setup: Setup, stops: list[int]) -> dict[str, torch.Tensor]:
    for stop in stops:
        with pytest.raises(Interrupted):
            train(store, setup, stop_at=stop)
    return train(store, setup)


def differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in b)


@pytest.fixture
def no_warning():  # type: ignore[no-untyped-def]
    """An exact row must not warn: a NotExactWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotExactWarning)
        yield


@pytest.mark.parametrize("generator", [False, True], ids=["global-rng", "generator"])
@pytest.mark.parametrize("workers", [0, 2], ids=["w0", "w2"])
@pytest.mark.parametrize("loader", LOADERS)
def test_resume_matches_uninterrupted_run(
    tmp_path, no_warning, loader: str, workers: int, generator: bool
) -> None:
    setup = Setup(loader=loader, workers=workers, generator=generator)
    assert_bitwise_equal(interrupted(str(tmp_path), setup, SEVERAL), uninterrupted(setup))


@pytest.mark.parametrize(
    ("loader", "stops"),
    [("dataloader", MID_EPOCH), ("stateful", EPOCH_BOUNDARY)],
    ids=["dataloader-mid", "stateful-boundary"],
)
def test_one_stop_mid_epoch_or_at_its_end_resumes_exactly(
    tmp_path, no_warning, loader: str, stops: list[int]
) -> None:
    """A first stop, in the process that started the run (SEVERAL stops mostly resume)."""
    setup = Setup(loader=loader, workers=2, generator=True)
    assert_bitwise_equal(interrupted(str(tmp_path), setup, stops), uninterrupted(setup))


def test_a_sampler_with_its_own_generator_resumes_exactly(tmp_path, no_warning) -> None:
    """``sampler=RandomSampler(ds, generator=g)``: the shuffle draws from ``g``, which is
    not the loader's; it is recorded too."""
    setup = Setup(loader="dataloader", sampler_generator=True)
    assert_bitwise_equal(interrupted(str(tmp_path), setup, SEVERAL), uninterrupted(setup))


@pytest.mark.parametrize("loader", ["dataloader", "stateful"])
def test_persistent_workers_warn_once_at_construction_and_in_the_metadata(loader: str) -> None:
    setup = Setup(loader=loader, workers=2, persistent=True)
    with pytest.warns(NotExactWarning) as caught:
        state = spotsafe.TrainState(model=torch.nn.Linear(1, 1), batches=make_loader(setup))
    (warning,) = [w for w in caught if w.category is NotExactWarning]
    message = str(warning.message)
    assert "TrainState(batches=...)" in message and "pass persistent_workers=False" in message
    assert warning.filename == __file__  # points at the user's line
    assert set(state.metadata()["not_exact"]) == {"batches"}
    assert spotsafe.TrainState(model=torch.nn.Linear(1, 1)).metadata()["not_exact"] == {}


def test_the_persistent_workers_warning_is_true(tmp_path) -> None:
    """If this starts to fail, persistent workers resume exactly and need no warning."""
    setup = Setup(loader="dataloader", workers=2, persistent=True)
    with pytest.warns(NotExactWarning):
        # Stopped in a later epoch than the workers' first: a stop in their first epoch
        # replays it from their start, and is exact.
        result = interrupted(str(tmp_path), setup, [13])
    assert differs(result, uninterrupted(setup))


@pytest.mark.parametrize("workers", [0, 2], ids=["w0", "w2"])
def test_a_stateful_dataloaders_own_state_is_not_exact(tmp_path, workers: int) -> None:
    """Why TrainState records a StatefulDataLoader rather than keep its own state_dict():
    alone it resumes inexactly (torchdata 0.11: iter() draws on the restored RNG; workers
    restart their RNG streams). If this starts to fail, torchdata fixed it and spotsafe
    could skip without loading."""
    setup = Setup(loader="native", workers=workers)
    assert differs(interrupted(str(tmp_path), setup, MID_EPOCH), uninterrupted(setup))


def test_an_unsaved_run_really_differs(tmp_path) -> None:
    """The check above can fail: restarting from scratch after a stop gives other weights."""
    setup = Setup()
    with pytest.raises(Interrupted):
        train(str(tmp_path / "a"), setup, stop_at=7)
    resumed_elsewhere = train(str(tmp_path / "b"), Setup(epochs=2))
    assert differs(resumed_elsewhere, uninterrupted(setup))


def test_resume_without_replay_would_differ(tmp_path, monkeypatch) -> None:
    """The RNG trap is real: re-creating the iterator on the restored RNG changes the run."""
    import spotsafe.data

    setup = Setup(loader="dataloader")
    monkeypatch.setattr(
        spotsafe.data.ResumableLoader,
        "_replay",
        lambda self, epoch_start, consumed, now: _naive_skip(self, consumed),
    )
    assert differs(interrupted(str(tmp_path), setup, MID_EPOCH), uninterrupted(setup))


def _naive_skip(loader, consumed):  # type: ignore[no-untyped-def]
    it = spotsafe.data._plain_iter(loader.loader)
    for _ in range(consumed):
        next(it)
    return it


# ------------------------------------------------------------------ 2 ranks

DDP_ROWS = {
    # scenario (tests/support/ddp_exact.py) -> what it must show
    **{
        f"{loader}-w{w}{g}": "exact"
        for loader in ("dataloader", "stateful")
        for w in (0, 2)
        for g in ("", "-gen")
    },
    "native-w0": "differs",  # the check can fail under DDP too
}


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Every 2-rank row, from one torchrun (a job costs seconds to start on 2 cores)."""
    workdir = tmp_path_factory.mktemp("ddp")
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        SPOTSAFE_CLOUD="none",
        SPOTSAFE_ALLOW_EPHEMERAL="1",
        OMP_NUM_THREADS="1",
    )
    job = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "tests.support.ddp_exact", str(workdir), *DDP_ROWS],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=280,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    results = {}
    for line in job.stdout.splitlines():
        if line.startswith("result "):
            _, scenario, verdict, said = line.split()
            results[scenario] = f"{verdict} {said}"
    return results


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(DDP_ROWS))
def test_two_ranks_resume_exactly(ddp_results: dict[str, str], scenario: str) -> None:
    assert ddp_results.get(scenario) == f"{DDP_ROWS[scenario]} silent"
