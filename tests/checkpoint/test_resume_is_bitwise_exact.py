"""An interrupted and resumed run ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import functools

import pytest
import torch

from tests.support.training import Interrupted, Setup, assert_bitwise_equal, train

# 40 samples / batch 4 = 10 steps per epoch, 3 epochs = 30 steps.
MID_EPOCH = [4]
EPOCH_BOUNDARY = [10]  # the last batch of epoch 0, saved before the loader is exhausted
SEVERAL = [7, 10, 23]  # mid-epoch, boundary, mid-epoch in the last epoch


@functools.cache
def uninterrupted(setup: Setup) -> dict[str, torch.Tensor]:
    return train(None, setup)


def interrupted(store: str, setup: Setup, stops: list[int]) -> dict[str, torch.Tensor]:
    for stop in stops:
        with pytest.raises(Interrupted):
            train(store, setup, stop_at=stop)
    return train(store, setup)


@pytest.mark.parametrize(
    "stops", [MID_EPOCH, EPOCH_BOUNDARY, SEVERAL], ids=["mid", "boundary", "several"]
)
@pytest.mark.parametrize("generator", [False, True], ids=["global-rng", "generator"])
@pytest.mark.parametrize("workers", [0, 2], ids=["w0", "w2"])
@pytest.mark.parametrize("loader", ["resumable", "stateful-wrapped"])
def test_resume_matches_uninterrupted_run(
    tmp_path, loader: str, workers: int, generator: bool, stops: list[int]
) -> None:
    setup = Setup(loader=loader, workers=workers, generator=generator)
    assert_bitwise_equal(interrupted(str(tmp_path), setup, stops), uninterrupted(setup))


@pytest.mark.parametrize("workers", [0, 2], ids=["w0", "w2"])
def test_bare_stateful_dataloader_is_not_exact(tmp_path, workers: int) -> None:
    """Why ResumableLoader wraps StatefulDataLoader too: alone it resumes inexactly
    (torchdata 0.11: iter() draws on the restored RNG; workers restart their RNG streams).
    If this starts to fail, torchdata fixed it and the wrapper could skip without loading."""
    setup = Setup(loader="stateful", workers=workers)
    result = interrupted(str(tmp_path), setup, MID_EPOCH)
    reference = uninterrupted(setup)
    assert any(not torch.equal(result[k], reference[k]) for k in reference)


def test_an_unsaved_run_really_differs(tmp_path) -> None:
    """The check above can fail: restarting from scratch after a stop gives other weights."""
    setup = Setup()
    with pytest.raises(Interrupted):
        train(str(tmp_path / "a"), setup, stop_at=7)
    resumed_elsewhere = train(str(tmp_path / "b"), Setup(epochs=2))
    reference = uninterrupted(setup)
    assert any(not torch.equal(resumed_elsewhere[k], reference[k]) for k in reference)


def test_resume_without_replay_would_differ(tmp_path, monkeypatch) -> None:
    """The RNG trap is real: re-creating the iterator on the restored RNG changes the run."""
    import spotsafe.data

    setup = Setup()
    monkeypatch.setattr(
        spotsafe.data.ResumableLoader,
        "_replay",
        lambda self, epoch_start, consumed, now: _naive_skip(self, consumed),
    )
    result = interrupted(str(tmp_path), setup, MID_EPOCH)
    reference = uninterrupted(setup)
    assert any(not torch.equal(result[k], reference[k]) for k in reference)


def _naive_skip(loader, consumed):  # type: ignore[no-untyped-def]
    it = iter(loader.loader)
    for _ in range(consumed):
        next(it)
    return it
