"""What the framework scenarios of tests/integrations share: one forked process per training
run, the store's checkpoints as a reader sees them, and the faults (a SIGKILL between a save's
data files and its manifest, a flipped byte).

A run is ``one_run(spec, out) -> exit status`` in a forked grandchild of the scenario driver
(tests/support/integrations_child.py), which imported every framework once. The grandchild
prints ``step N`` per optimizer step and ``final <digest>`` (every weight and optimizer
tensor) at the end of training; :func:`run` returns those, its exit status and its output.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import spotsafe
from tests.support.guarded_train import digest

OneRun = Callable[[dict[str, Any], Path], int]


def run(one_run: OneRun, name: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Fork a grandchild for one run; its output goes to WORK/NAME.log."""
    log = work / f"{name}.log"
    out = work / spec.get("out", name)
    before = os.times()
    pid = os.fork()
    if pid == 0:  # the grandchild
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = one_run(spec, out)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    after = os.times()
    text = log.read_text()
    lines = text.splitlines()
    return {
        "status": os.waitstatus_to_exitcode(status),
        "final": next((ln.split()[1] for ln in lines if ln.startswith("final ")), None),
        "steps": [int(ln.split()[1]) for ln in lines if ln.startswith("step ")],
        "tail": text[-3000:],
        # CPU seconds of the run and its loader workers (for the record, never asserted)
        "cpu_s": round(
            after.children_user
            + after.children_system
            - before.children_user
            - before.children_system,
            2,
        ),
    }


def final_digest(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """The digest of every weight of ``model`` and every tensor of ``optimizer``'s state."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for pid, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v
    return digest(tensors)


def print_final(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    print(f"final {final_digest(model, optimizer)}", flush=True)


def checkpointer(spec: dict[str, Any]) -> spotsafe.Checkpointer:
    """The run's Checkpointer; with ``kill_saving=STEP`` in ``spec``, the process SIGKILLs
    itself once that step's data files are written and its manifest is next."""
    ckpt = spotsafe.Checkpointer(spec["store"], keep_last=3)
    kill_at = spec.get("kill_saving")
    if kill_at is not None:
        write = ckpt.store.write_bytes

        def write_bytes(path: str, data: Any) -> int:
            if path.endswith("MANIFEST.json") and f"step-{kill_at:012d}" in path:
                os.kill(os.getpid(), signal.SIGKILL)
            return write(path, data)

        ckpt.store.write_bytes = write_bytes  # type: ignore[method-assign]
    return ckpt


def checkpoints(store: Path) -> list[list[Any]]:
    """``[step, status]`` of each checkpoint in ``store``, newest first."""
    ckpt = spotsafe.Checkpointer(str(store), read_only=True)
    return [[c.step, c.status.value] for c in ckpt.verify()]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_newest_valid(store: Path) -> list[int]:
    """Flip a byte of the newest valid checkpoint's largest data file; the steps of the valid
    checkpoints before it, newest first (where restore must fall back to)."""
    valid = [step for step, status in checkpoints(store) if status == "valid"]
    (newest,) = (store / "checkpoints").glob(f"step-{valid[0]:012d}-*")
    flip_byte(max(newest.glob("data-*.bin"), key=lambda p: p.stat().st_size))
    return valid[1:]
