"""The README's config and code examples work as written: every ```python block runs for
real (on a tiny model, against a temporary directory or the loopback S3 server), and a new
block without a runner here fails."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spotsafe.policy import get_pool, load_pools

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> dict[str, list[str]]:
    """The ```python blocks of the README, by the heading of the section they are in."""
    blocks: dict[str, list[str]] = {}
    heading, fence, code = "", None, []
    for line in README.read_text().splitlines():
        if fence is None and line.startswith("```"):
            fence, code = line[3:].strip(), []
        elif fence is not None and line.strip() == "```":
            if fence == "python":
                blocks.setdefault(heading, []).append("\n".join(code) + "\n")
            fence = None
        elif fence is not None:
            code.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def run(code: str, substitutions: dict[str, str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Run `code` with each placeholder replaced (it must be there: the README is the test)."""
    for placeholder, value in substitutions.items():
        assert placeholder in code, f"the README's example no longer says {placeholder}"
        code = code.replace(placeholder, value)
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_the_pools_example_loads(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    config = tmp_path / "spotsafe.toml"
    config.write_text(block.group(1))
    pools = load_pools(config)
    assert get_pool("critical", pools).max_lost_work_s == 300
    assert get_pool("sweep", pools).max_failures == 0
    assert get_pool("sweep", pools).max_preemptions == get_pool("experiment").max_preemptions


@pytest.fixture
def training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], dict[str, Any]]:
    """What the README's loop takes as given: a tiny model, its optimizer, data, epochs."""
    import torch

    monkeypatch.chdir(tmp_path)  # no spotsafe.toml here: the standard pool
    monkeypatch.setenv("SPOTSAFE_CLOUD", "none")  # no metadata probes from a laptop or CI

    def objects() -> dict[str, Any]:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return {
            "torch": torch,
            "data": torch.utils.data.TensorDataset(torch.randn(96, 4), torch.randn(96, 1)),
            "model": model,
            "opt": opt,
            "sched": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
            "loss_fn": torch.nn.MSELoss(),
            "epochs": 2,
        }

    return objects


def test_the_training_loop_runs_and_resumes(
    training: Callable[[], dict[str, Any]], tmp_path: Path
) -> None:
    [loop] = python_blocks()["Add it to a training loop"]
    store = {'"s3://my-bucket/runs/exp-42"': repr(str(tmp_path / "run"))}
    first = run(loop, store, training())
    state, ckpt = first["state"], first["ckpt"]
    assert (state.epoch, state.step) == (2, 6)  # 96 samples in batches of 32, two epochs
    [newest, *_] = ckpt.checkpoints()
    assert newest.step == 6  # leaving the Guard's block saved the final state
    trained = first["model"].weight.detach().clone()
    ckpt.close()  # as the process's exit would: flush the events, let go of the store

    # The same script again: it restores the newest checkpoint and has nothing left to do.
    again = run(loop, store, training())
    assert (again["state"].epoch, again["state"].step) == (2, 6)
    assert again["model"].weight.detach().equal(trained)
    assert again["sched"].get_last_lr() == first["sched"].get_last_lr()
    again["ckpt"].close()


def test_the_s3_store_example_runs(s3_bucket: str, training: Callable[[], dict[str, Any]]) -> None:
    import spotsafe

    [tuned, _] = python_blocks()["Stores"]
    ns = run(tuned, {'"s3://bucket/run"': repr(f"s3://{s3_bucket}/run")}, {"spotsafe": spotsafe})
    assert ns["store"].options.concurrency == 8 and ns["store"].options.part_size == 16 << 20
    objects = training()
    state = spotsafe.TrainState(model=objects["model"])
    state.step = 3
    assert ns["ckpt"].save(state).step == 3
    assert ns["ckpt"].restore(spotsafe.TrainState(model=objects["model"])).step == 3
    ns["ckpt"].close()  # before the session's S3 server goes away


def test_the_staging_example_runs(
    s3_bucket: str, training: Callable[[], dict[str, Any]], tmp_path: Path
) -> None:
    import spotsafe

    [_, staged] = python_blocks()["Stores"]
    ns = run(
        staged,
        {
            '"s3://bucket/run"': repr(f"s3://{s3_bucket}/run"),
            '"/mnt/nvme/spotsafe-staging"': repr(str(tmp_path / "staging")),
        },
        {"spotsafe": spotsafe},
    )
    ckpt = ns["ckpt"]
    state = spotsafe.TrainState(model=training()["model"])
    state.step = 4
    ckpt.save(state)
    ckpt.flush()  # the uploads landed: the checkpoint is durable in the bucket
    durable = spotsafe.Checkpointer(f"s3://{s3_bucket}/run", read_only=True)
    assert [c.step for c in durable.checkpoints()] == [4]
    ckpt.close()  # before the session's S3 server goes away


def test_every_python_block_has_a_runner() -> None:
    blocks = {heading: len(codes) for heading, codes in python_blocks().items()}
    assert blocks == {"Add it to a training loop": 1, "Stores": 2}, (
        "a new README example: run it in this file"
    )
