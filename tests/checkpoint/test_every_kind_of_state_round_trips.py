"""Everything a TrainState holds comes back exactly: objects, counters, every RNG."""

from __future__ import annotations

import random

import numpy as np
import torch

import spotsafe


class Custom:
    """A user object with awkward but legal state: int keys, tuples, bytes, numpy, bf16."""

    def __init__(self) -> None:
        self.state = {
            1: (2, 3.5, None, True),
            "bytes": b"\x00\xff",
            "np": np.arange(6, dtype=np.int16).reshape(2, 3),
            "npscalar": np.float32(1.5),
            "bf16": torch.arange(4, dtype=torch.bfloat16),
            "empty": torch.empty(0, 3),
            "scalar": torch.tensor(7),
            "nan": float("nan"),
            "dtype": torch.float16,
            "set": {3, 1, 2},
        }

    def state_dict(self) -> dict[object, object]:
        return self.state

    def load_state_dict(self, state: dict[object, object]) -> None:
        self.state = state


def test_scheduler_scaler_custom_and_rngs_round_trip(tmp_path) -> None:
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
        sched.step()
    custom = Custom()
    state = spotsafe.TrainState(
        model=model, optimizer=opt, scheduler=sched, scaler=scaler, c=custom
    )
    state.step, state.epoch = 3, 1
    spotsafe.Checkpointer(str(tmp_path)).save(state)
    expected_draws = (random.random(), float(np.random.rand()), torch.rand(1).item())

    model2 = torch.nn.Linear(3, 3)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    scaler2 = torch.amp.GradScaler("cpu")
    custom2 = Custom()
    custom2.state = {}
    restored = spotsafe.TrainState(
        model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler2, c=custom2
    )
    spotsafe.Checkpointer(str(tmp_path)).restore(restored)
    assert (restored.step, restored.epoch) == (3, 1)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expected_draws
    assert torch.equal(model2.weight, model.weight)
    assert sched2.state_dict() == sched.state_dict()
    assert scaler2.state_dict() == scaler.state_dict()
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], buf)
    got = custom2.state
    assert got[1] == (2, 3.5, None, True) and got["bytes"] == b"\x00\xff"
    assert np.array_equal(got["np"], custom.state["np"]) and got["np"].dtype == np.int16
    assert got["npscalar"] == np.float32(1.5) and got["npscalar"].dtype == np.float32
    assert torch.equal(got["bf16"], custom.state["bf16"]) and got["bf16"].dtype == torch.bfloat16
    assert got["empty"].shape == (0, 3) and got["scalar"].item() == 7
    assert got["nan"] != got["nan"] and got["dtype"] is torch.float16 and got["set"] == {1, 2, 3}
