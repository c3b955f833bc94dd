"""Every numeric Guard setting has an upper bound: a value past it, NaN, an infinity, zero,
a negative or a non-number is refused with a ConfigError that names the setting, the value
and the bound, before the Guard reads the store; the bound itself is accepted and used."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import spotsafe
from spotsafe.errors import ConfigError
from spotsafe.guard import MAX_EVERY_S, MAX_EVERY_STEPS, MAX_HEARTBEAT_S
from spotsafe.policy import EverySeconds, EverySteps, MaxLostWork
from spotsafe.policy.pools import MAX_GRACE_S, MAX_LOST_WORK_S

# setting -> (its bound, how the Guard shows the value it took)
SETTINGS: dict[str, tuple[float, Any]] = {
    "every_steps": (MAX_EVERY_STEPS, lambda g: g.interval == EverySteps(n=MAX_EVERY_STEPS)),
    "every_s": (MAX_EVERY_S, lambda g: g.interval == EverySeconds(interval_s=MAX_EVERY_S)),
    "max_lost_work_s": (
        MAX_LOST_WORK_S,
        lambda g: g.interval == MaxLostWork(max_lost_work_s=MAX_LOST_WORK_S),
    ),
    "grace_s": (MAX_GRACE_S, lambda g: g.grace_s == MAX_GRACE_S),
    "heartbeat_s": (MAX_HEARTBEAT_S, lambda g: g.heartbeat_s == MAX_HEARTBEAT_S),
}


def guard(tmp_path: Any, **settings: Any) -> spotsafe.Guard:
    state = spotsafe.TrainState(model=torch.nn.Linear(1, 1))
    ckpt = spotsafe.Checkpointer(str(tmp_path), events=False)
    return spotsafe.Guard(ckpt, state, watchers=[], **settings)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_setting_takes_its_bound_and_refuses_anything_past_it(tmp_path, name: str) -> None:
    bound, took = SETTINGS[name]
    assert took(guard(tmp_path, **{name: bound}))
    past = bound + 1 if name == "every_steps" else math.nextafter(bound, math.inf)
    refused = [past, 10**400, math.nan, math.inf, -math.inf, 0, -1, True, "10"]
    for value in refused:
        with pytest.raises(ConfigError) as caught:
            guard(tmp_path, **{name: value})
        message = str(caught.value)
        assert f"{name}={value!r}" in message, message
        assert f"at most {bound:,.0f}" in message, message


def test_a_setting_is_refused_before_the_guard_reads_anything(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(spotsafe.guard, "pool_from_env", lambda: pytest.fail("read"))
    with pytest.raises(ConfigError, match="every_s=nan"):
        guard(tmp_path, every_s=math.nan)
