"""Child process: every framework scenario of tests/integrations, and the docstring examples
of the integration modules, in one process.

    python -m tests.support.integrations_child WORKDIR PLAN

PLAN is JSON: ``{"transformers": STOP, "lightning": STOP, "accelerate": STOP,
"transformers_ddp": STOP, "lightning_ddp": STOP, "accelerate_ddp": STOP, "doctest": [MODULE,
...]}``, any subset (a ``_ddp`` part runs the framework's 2-rank DDP scenario). Importing a
framework costs seconds of CPU (torch's compiler stack, sympy, ...), most of it shared by all
three, so this process imports what the plan needs once, and every training run is a forked
grandchild (a real process: real signals, its own exit status; a DDP run, one per rank; see
tests/support/integrations_common.py). Each part writes its results under its name in
WORKDIR/results.json; a part that fails records its traceback there, and the others still
run. The parts run side by side, two at a time.
"""

from __future__ import annotations

import contextlib
import doctest
import gc
import importlib
import io
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

PARALLEL = 2  # parts at a time: the 2 cores the suite runs on
# The longest first
ORDER = (
    "transformers_ddp",
    "lightning",
    "accelerate_ddp",
    "transformers",
    "lightning_ddp",
    "accelerate",
    "doctest",
)
SCENARIOS = {
    "transformers": "tests.support.integrations_hf",
    "lightning": "tests.support.integrations_lightning",
    "accelerate": "tests.support.integrations_accelerate",
}
DDP = "_ddp"  # the suffix of a part that runs a framework's 2-rank DDP scenario

# Imported on first use inside a training run: imported here once, not in every forked run
# (s3fs alone costs 1.7 s of CPU a run: Lightning's ModelCheckpoint asks whether its folder is
# object storage). torch._dynamo: optimizers import it on first use.
WARM = [
    "multiprocessing.popen_fork",
    "s3fs",
    "torch._dynamo",
    "torch.profiler._cupti_monitor",
    "torch.utils.serialization",
    "torchdata.stateful_dataloader",
]


def run_doctests(modules: list[str]) -> dict[str, Any]:
    """Each module's docstring examples, as tests/test_docstring_examples.py runs them."""
    results: dict[str, Any] = {}
    for name in modules:
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            r = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        results[name] = {"failed": r.failed, "attempted": r.attempted, "output": text.getvalue()}
    return results


def start(part: str, arg: Any, work: Path, modules: dict[str, Any]) -> int:
    """Fork the process of one part; it writes WORK/PART/results.json."""
    folder = work / part
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                if part == "doctest":
                    result = run_doctests(arg)
                elif part.endswith(DDP):
                    result = modules[part.removesuffix(DDP)].ddp_scenarios(folder, int(arg))
                else:
                    result = modules[part].scenarios(folder, int(arg))
            except BaseException:
                result = {"error": traceback.format_exc()}
            (folder / "results.json").write_text(json.dumps(result, indent=1))
            code = 0
        finally:
            os._exit(code)
    return pid


def main() -> None:
    work = Path(sys.argv[1])
    plan: dict[str, Any] = json.loads(sys.argv[2])
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    for name in WARM:
        importlib.import_module(name)
    frameworks = {part.removesuffix(DDP) for part in plan} & set(SCENARIOS)
    modules = {part: importlib.import_module(SCENARIOS[part]) for part in frameworks}
    for name in plan.get("doctest", []):
        importlib.import_module(name)
    # What is imported stays out of the forked runs' garbage collections: a collection
    # touches every tracked object, which copies the page it is on (a second of CPU a run).
    gc.freeze()
    # The parts run side by side, PARALLEL at a time, each its runs one after the other
    # (the pytest process that waits for this one uses no CPU meanwhile).
    pending = sorted(plan, key=list(ORDER).index)
    running: dict[int, str] = {}
    results: dict[str, Any] = {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            part = pending.pop(0)
            running[start(part, plan[part], work, modules)] = part
        pid, status = os.wait()
        part = running.pop(pid)
        out = work / part / "results.json"
        if status == 0 and out.exists():
            results[part] = json.loads(out.read_text())
        else:
            results[part] = {"error": f"the process of {part} ended with status {status}"}
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
