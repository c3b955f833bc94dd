"""What the framework scenarios of tests/integrations share: one forked process per training
run, the store's checkpoints as a reader sees them, and the faults (a SIGKILL between a save's
data files and its manifest, a flipped byte).

A run is ``one_run(spec, out) -> exit status`` in a forked grandchild of the scenario driver
(tests/support/integrations_child.py), which imported every framework once. The grandchild
prints ``step N`` per optimizer step and ``final <digest>`` (every weight and optimizer
tensor) at the end of training; :func:`run` returns those, its exit status and its output.
:func:`run_ranks` runs the same ``one_run`` as a 2-rank DDP job (one forked process per
rank, torchrun's environment), and :func:`ddp_scenarios` is the DDP scenario every framework
runs with it.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import socket
import sys
import time
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
    before = os.times()
    pid = _fork_run(one_run, spec, work / spec.get("out", name), log, {})
    _, status = os.waitpid(pid, 0)
    return {**_result(log, status), "cpu_s": _children_cpu_s(before, os.times())}


def _fork_run(
    one_run: OneRun, spec: dict[str, Any], out: Path, log: Path, env: dict[str, str]
) -> int:
    """The pid of a forked process that runs ``one_run(spec, out)`` with ``env`` added to
    its environment, its output to ``log``, and exits with its status."""
    pid = os.fork()
    if pid == 0:  # the grandchild
        code = 1
        try:
            os.environ.update(env)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            faulthandler.enable()  # a run killed as hung (SIGABRT) shows where it was
            code = one_run(spec, out)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _result(log: Path, status: int) -> dict[str, Any]:
    text = log.read_text()
    lines = text.splitlines()
    return {
        "status": os.waitstatus_to_exitcode(status),
        "final": next((ln.split()[1] for ln in lines if ln.startswith("final ")), None),
        "steps": [int(ln.split()[1]) for ln in lines if ln.startswith("step ")],
        "tail": text[-3000:],
    }


def _children_cpu_s(before: os.times_result, after: os.times_result) -> float:
    """CPU seconds of the runs and their loader workers (for the record, never asserted)."""
    return round(
        after.children_user + after.children_system - before.children_user - before.children_system,
        2,
    )


def _wait_all(pids: list[int], *, deadline_s: float) -> list[int]:
    """The wait statuses of ``pids``; past ``deadline_s`` (a hung collective), the ranks
    still running are killed (SIGABRT: each prints where it hung)."""
    statuses: dict[int, int] = {}
    while len(statuses) < len(pids):
        for pid in pids:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = status
        if time.monotonic() > deadline_s:
            for pid in pids:
                if pid not in statuses:
                    os.kill(pid, signal.SIGABRT)  # faulthandler prints its stack, then dies
                    statuses[pid] = os.waitpid(pid, 0)[1]
        time.sleep(0.05)
    return [statuses[pid] for pid in pids]


def run_ranks(
    one_run: OneRun, name: str, spec: dict[str, Any], work: Path, *, world: int = 2
) -> list[dict[str, Any]]:
    """One run as a ``world``-rank torch.distributed job on this machine: each rank a forked
    process with the environment torchrun gives its workers (a fresh rendezvous port per run);
    each framework initializes its gloo process group from it, as under torchrun. With
    ``signal`` in ``spec``, only rank ``signal_rank`` (default 1) is signalled. Returns each
    rank's result as :func:`run` does (WORK/NAME.rank-R.log)."""
    with socket.socket() as s:  # a free port: the rendezvous of this run only
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "GROUP_RANK": "0",
        "GROUP_WORLD_SIZE": "1",
        "ROLE_NAME": "default",
        "ROLE_WORLD_SIZE": str(world),
        "TORCHELASTIC_RUN_ID": f"{name}-{port}",  # what tells a framework torchrun started it
        "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_USE_AGENT_STORE": "False",  # rank 0 hosts the rendezvous store
    }
    before = os.times()
    pids = []
    for rank in range(world):
        mine = dict(spec)
        if rank != spec.get("signal_rank", 1):
            mine["signal"] = None
        ranked = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "ROLE_RANK": str(rank)}
        log = work / f"{name}.rank-{rank}.log"
        pids.append(_fork_run(one_run, mine, work / spec.get("out", name), log, ranked))
    statuses = _wait_all(pids, deadline_s=time.monotonic() + 180)
    after = os.times()
    cpu_s = _children_cpu_s(before, after)
    return [
        {**_result(work / f"{name}.rank-{rank}.log", status), "cpu_s": cpu_s}
        for rank, status in enumerate(statuses)
    ]


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
    ckpt = spotsafe.Checkpointer(str(store), read_only=True)
    valid = [c for c in ckpt.verify() if c.status.value == "valid"]
    # A 2-rank checkpoint has a folder per rank: the largest file is rank 0's replicated state.
    flip_byte(max((store / valid[0].path).rglob("data-*.bin"), key=lambda p: p.stat().st_size))
    return [c.step for c in valid[1:]]


def ddp_scenarios(
    one_run: OneRun,
    work: Path,
    *,
    stop: int,
    steps: int,
    reference: dict[str, Any],
    term: dict[str, Any],
) -> dict[str, Any]:
    """A framework's 2-rank DDP scenario (each run: :func:`run_ranks`):

    - reference: ``reference``, uninterrupted;
    - term: with spotsafe, ``term`` (a SIGTERM) delivered to rank 1 alone, inside the
      gradient-accumulation window of optimizer step STOP;
    - resume: the same command again, from the stop step's checkpoint;
    - corrupt_resume: on a copy of the store as term left it, with the stop step's checkpoint
      corrupted: it falls back to the checkpoint before (each rank) and quarantines it.
    """

    def run(name: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
        return run_ranks(one_run, name, {**spec, "world": 2}, work)

    results: dict[str, Any] = {"stop_step": stop, "steps": steps}
    store, copy = work / "store", work / "store-corrupt"
    spotsafe = {"kind": "spotsafe", "store": str(store)}
    results["reference"] = run("reference", reference)
    results["term"] = run("term", {**spotsafe, **term, "at_step": stop, "signal_rank": 1})
    results["term_ckpts"] = checkpoints(store)
    shutil.copytree(store, copy)
    results["resume"] = run("resume", spotsafe)
    results["fallbacks"] = corrupt_newest_valid(copy)
    results["corrupt_resume"] = run("corrupt_resume", {**spotsafe, "store": str(copy)})
    results["corrupt_ckpts"] = checkpoints(copy)
    return results
