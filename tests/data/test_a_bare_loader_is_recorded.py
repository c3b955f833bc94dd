"""TrainState records a bare DataLoader itself: the user's own ``for batch in loader`` goes
through a ResumableLoader, and the loader stays the object the user built (its class name,
its attributes, torch's iterator behind ``iter()``). Exactness itself is measured in
tests/checkpoint/test_resume_is_bitwise_exact.py; this is how the hook behaves."""

from __future__ import annotations

import copy
import gc
import pickle
import warnings

import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

import spotsafe
import spotsafe.data
from spotsafe.data import NotExactWarning, ResumableLoader

DATA = torch.utils.data.TensorDataset(torch.arange(16.0))  # 8 batches of 2


def positions(state: spotsafe.TrainState) -> tuple[bool, int]:
    s = state.state_dict()["objects"]["loader"]
    return s["in_epoch"], s["consumed"]


@pytest.mark.parametrize("cls", [DataLoader, StatefulDataLoader])
def test_iterating_the_bare_loader_is_recorded(cls: type) -> None:
    loader = cls(DATA, batch_size=2, shuffle=True)
    state = spotsafe.TrainState(loader=loader)
    assert isinstance(state.objects["loader"], ResumableLoader)
    assert isinstance(loader, cls) and type(loader).__name__ == cls.__name__
    assert positions(state) == (False, 0)
    batches = iter(loader)
    next(batches), next(batches), next(batches)
    assert positions(state) == (True, 3)
    assert len(batches) == 8 and batches._num_yielded == 3  # torch's iterator behind it
    assert len(list(batches)) == 5
    assert positions(state) == (False, 8)  # the epoch ran out
    assert len(list(loader)) == len(loader) == 8


def test_the_loader_and_an_explicit_wrapper_are_one() -> None:
    loader = DataLoader(DATA, batch_size=2)
    wrapper = ResumableLoader(loader)
    state = spotsafe.TrainState(loader=loader)
    assert state.objects["loader"] is wrapper is ResumableLoader(loader)
    batches = iter(wrapper)
    next(batches)
    next(iter(loader))  # a new epoch, whichever object starts it
    assert positions(state) == (True, 1)
    assert spotsafe.TrainState(loader=wrapper).objects["loader"] is wrapper


def test_a_copy_a_pickle_or_a_rebuilt_loader_is_a_plain_one() -> None:
    loader = DataLoader(DATA, batch_size=2)
    state = spotsafe.TrainState(loader=loader)
    for other in (copy.copy(loader), pickle.loads(pickle.dumps(loader))):
        assert type(other) is DataLoader
        assert len(list(other)) == 8
    rebuilt = type(loader)(DATA, batch_size=2)  # as Lightning re-creates a loader
    assert len(list(rebuilt)) == 8
    assert positions(state) == (False, 0)  # none of their epochs was this loader's


def test_a_loader_whose_state_is_gone_iterates_as_before() -> None:
    loader = DataLoader(DATA, batch_size=2)
    spotsafe.TrainState(loader=loader)
    gc.collect()  # nothing refers to the state: its recorder is gone with it
    assert spotsafe.data._tracker_of(loader) is None
    assert len(list(loader)) == 8


def test_an_exact_loader_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotExactWarning)
        state = spotsafe.TrainState(loader=DataLoader(DATA, num_workers=2, shuffle=True))
    assert state.not_exact == {} and state.metadata()["not_exact"] == {}


def test_a_loader_that_cannot_be_hooked_warns_with_the_fix(monkeypatch) -> None:
    """The floor: where the hook fails, TrainState says so and how to wrap the loader."""

    class Frozen:
        __slots__ = ("x",)  # no layout a DataLoader can move to

    monkeypatch.setattr(spotsafe.data, "_exact_class", lambda base: Frozen)
    loader = DataLoader(DATA, batch_size=2)
    with pytest.warns(NotExactWarning, match=r"batches = spotsafe.ResumableLoader\(batches\)"):
        state = spotsafe.TrainState(batches=loader)
    assert "cannot hook" in state.metadata()["not_exact"]["batches"]
    assert type(loader) is DataLoader


def test_a_checkpoint_with_a_stateful_loaders_own_state_still_loads(caplog) -> None:
    """Written before TrainState recorded bare loaders: it resumes at the loader's position
    (not bitwise exactly), rather than failing as corrupt."""
    old = StatefulDataLoader(DATA, batch_size=2)
    batches = iter(old)
    next(batches), next(batches)
    own_state = old.state_dict()
    loader = StatefulDataLoader(DATA, batch_size=2)
    state = spotsafe.TrainState(loader=loader)
    state.objects["loader"].load_state_dict(own_state)
    assert "not bitwise exactly" in caplog.text
    assert [int(b[0][0]) for b in loader] == [4, 6, 8, 10, 12, 14]
