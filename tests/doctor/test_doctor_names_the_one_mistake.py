"""Each small training job makes exactly one of the common mistakes (one makes none), and
`spotsafe doctor` names exactly that mistake, with its evidence.

The jobs are real child processes that doctor runs twice in a scratch store, stopping the
first with a real SIGTERM. They run concurrently (one fixture for the module): they mostly
sleep between steps, and each doctor run waits on its own children.
"""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from spotsafe.doctor import Request, diagnose

JOB = [sys.executable, "-m", "tests.support.doctor_job"]
TORCH_JOB = [sys.executable, "-m", "tests.support.doctor_torch_save"]
SHM = Path("/dev/shm") / f"spotsafe-doctor-test-{uuid.uuid4().hex[:8]}"  # tmpfs
# For the jobs that outlive their grace: short, so they cost the suite little, yet long enough
# for doctor to see two of the checkpoints (0.1 s apart) a job that ignores SIGTERM goes on
# writing, when a look at them takes over a second on a loaded machine.
GRACE_S = 4.0
LONG_GRACE_S = 60.0  # for the others: they exit by themselves, however loaded the machine
KILLED = {"ignores-sigterm", "flush-outlasts-grace"}

SCENARIOS: dict[str, list[str]] = {
    "none": JOB,
    "restart-from-scratch": [*JOB, "--no-resume"],
    "dies-of-sigterm": [*JOB, "--signals", "default"],
    "ignores-sigterm": [*JOB, "--signals", "ignore"],
    "exits-0-on-stop": [*JOB, "--stop-code", "0"],
    "flush-outlasts-grace": [*JOB, "--flush-s", "30"],
    "ephemeral-store": [*JOB, "--dir", str(SHM)],
    "weights-only-no-data-position": [*JOB, "--save", "model,optimizer,scheduler,step,rng"],
    "torch-save-weights-only": TORCH_JOB,
}


@pytest.fixture(scope="module")
def results() -> Any:
    def one(name: str, command: list[str]) -> dict[str, Any]:
        grace_s = GRACE_S if name in KILLED else LONG_GRACE_S
        request = Request(command=tuple(command), grace_s=grace_s, timeout_s=120.0)
        return diagnose(request, environ={}).to_json()

    try:
        with pytest.MonkeyPatch.context() as mp, cf.ThreadPoolExecutor(len(SCENARIOS)) as pool:
            mp.setenv("SPOTSAFE_CLOUD", "none")  # no metadata probes: this is no cloud VM
            futures = {name: pool.submit(one, name, cmd) for name, cmd in SCENARIOS.items()}
            yield {name: f.result() for name, f in futures.items()}
    finally:
        shutil.rmtree(SHM, ignore_errors=True)


def found(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["id"], f["severity"]) for f in result["findings"]]


def only(result: dict[str, Any]) -> dict[str, Any]:
    """The one finding of a job with one mistake (all of them shown if there are more)."""
    assert len(result["findings"]) == 1, result["findings"]
    finding: dict[str, Any] = result["findings"][0]
    return finding


def test_a_job_without_mistakes_has_no_findings_and_every_check_ran(results: Any) -> None:
    result = results["none"]
    assert found(result) == []
    for check in ("no-checkpoint", "weights-only", "restart-from-scratch",
                  "no-signal-handling", "grace", "ephemeral-store"):  # fmt: skip
        assert check in result["checked"]
    assert result["facts"]["checkpoint"]["format"] == "torch.save"
    assert result["facts"]["flush_s"] < LONG_GRACE_S  # it exited 75 by itself, in the grace


def test_restart_from_scratch_is_named_with_both_steps(results: Any) -> None:
    finding = only(results["restart-from-scratch"])
    assert (finding["id"], finding["severity"]) == ("restart-from-scratch", "error")
    ev = finding["evidence"]
    # Seen before it passed the saved step, or later, when only the audit hook tells: the
    # second run opened no checkpoint (the job without mistakes, which does, has no finding).
    assert ev["next_checkpoint_step"] <= ev["saved_step"] or ev["checkpoint_files_read"] == 0


def test_a_job_that_dies_of_sigterm_has_no_signal_handling(results: Any) -> None:
    finding = only(results["dies-of-sigterm"])
    assert (finding["id"], finding["severity"]) == ("no-signal-handling", "error")
    assert finding["evidence"]["exit_code"] == -15
    assert finding["evidence"]["checkpoint_at_stop"] is False


def test_a_job_that_ignores_sigterm_has_no_signal_handling(results: Any) -> None:
    finding = only(results["ignores-sigterm"])
    assert (finding["id"], finding["severity"]) == ("no-signal-handling", "error")
    assert finding["evidence"]["exit_code"] is None  # still running at the grace's end
    assert "went on training" in finding["what"]


def test_a_stop_that_exits_0_reads_as_success_and_is_named(results: Any) -> None:
    finding = only(results["exits-0-on-stop"])
    assert (finding["id"], finding["severity"]) == ("no-signal-handling", "warning")
    assert finding["evidence"]["exit_code"] == 0
    assert finding["evidence"]["checkpoint_at_stop"] is True


def test_a_flush_longer_than_the_grace_is_a_grace_finding(results: Any) -> None:
    finding = only(results["flush-outlasts-grace"])
    assert (finding["id"], finding["severity"]) == ("grace", "error")
    assert finding["evidence"]["grace_s"] == GRACE_S
    assert finding["evidence"]["checkpoint_at_stop"] is True


def test_checkpoints_written_to_tmpfs_are_an_ephemeral_store(results: Any) -> None:
    result = results["ephemeral-store"]
    finding = only(result)
    assert (finding["id"], finding["severity"]) == ("ephemeral-store", "error")
    assert finding["evidence"]["location"] == str(SHM)
    assert finding["evidence"]["fstype"] == "tmpfs"
    assert finding["evidence"]["source"] == "written by the command"
    assert result["facts"]["written_to"] == [str(SHM)]


def test_a_checkpoint_without_the_data_position_is_named_with_what_is_missing(
    results: Any,
) -> None:
    finding = only(results["weights-only-no-data-position"])
    assert (finding["id"], finding["severity"]) == ("weights-only", "warning")
    assert finding["evidence"]["missing"] == ["scaler", "data position"]


def test_a_plain_torch_save_script_without_optimizer_state_is_weights_only(
    results: Any,
) -> None:
    finding = only(results["torch-save-weights-only"])
    assert (finding["id"], finding["severity"]) == ("weights-only", "error")
    ev = finding["evidence"]
    assert ev["format"] == "torch.save"
    assert ev["checkpoint"].endswith("ckpt.pt")
    assert ev["missing"] == ["optimizer", "scheduler", "scaler"]
    assert set(ev["found"]) == {"step/epoch", "data position", "RNG states"}
