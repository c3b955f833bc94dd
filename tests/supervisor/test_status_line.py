"""``spotsafe run`` shows where the job stands: a live line on a terminal that the child's output
never crosses, plain lines (no escape codes, never inside a child's line) in a log.

This module is also the torch-free child it runs: ``python -m tests.supervisor.test_status_line
child`` reports 8 steps on the progress board (as a Guard would) and prints a line per step,
plus a progress bar redrawn with carriage returns.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from spotsafe.supervisor.status import Phase, RunStatus, format_status
from tests.supervisor.conftest import REPO, child_env, write_pool

STEPS = 8


def child() -> None:
    from spotsafe.progress_channel import ProgressWriter

    board = ProgressWriter.from_environ()
    assert board is not None and board.enabled, "run me under spotsafe run"
    board.entered()
    for step in range(1, STEPS + 1):
        time.sleep(0.15)
        board.step(step)
        print(f"child line {step} is whole", flush=True)
        if step == 4:
            for pct in (10, 50, 100):  # a progress bar, as tqdm draws one
                sys.stderr.write(f"\rbar {pct}%")
                sys.stderr.flush()
                time.sleep(0.3)
            sys.stderr.write("\n")
    board.saving()
    board.saved(STEPS)


def spotsafe_run(tmp_path: Path) -> list[str]:
    config = write_pool(tmp_path / "spotsafe.toml")
    return [sys.executable, "-m", "spotsafe.cli", "run", "--store", str(tmp_path / "s"),
            "--config", str(config), "--pool", "fast", "--",
            sys.executable, "-m", "tests.supervisor.test_status_line", "child"]  # fmt: skip


def test_the_line_says_attempt_step_checkpoint_age_next_and_interruptions() -> None:
    s = RunStatus(job_id="j", phase=Phase.RUNNING, attempt=4, step=2050, checkpoint_step=2000,
                  checkpoint_s=1000.0, next_save_step=2100, interruptions=3)  # fmt: skip
    assert format_status(s, now_s=1125.0) == (
        "attempt 4 · step 2050 · checkpoint 2000 (2m05s ago) · next at step 2100 · 3 interruptions"
    )
    hung = RunStatus(job_id="j", phase=Phase.HUNG, attempt=4, step=2050, interruptions=1)
    assert format_status(hung, now_s=0.0) == (
        "attempt 4 · step 2050 · hung · no checkpoint yet · 1 interruption"
    )


def test_on_a_terminal_one_live_line_and_the_childs_lines_stay_whole(tmp_path: Path) -> None:
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(spotsafe_run(tmp_path), stdin=subprocess.DEVNULL, stdout=sub,
                            stderr=sub, cwd=REPO, env=child_env())  # fmt: skip
    os.close(sub)
    out = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not data:
            break
        out += data
    os.close(main)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")[-3000:]
    text = out.decode()
    assert "\x1b[" in text  # it was drawn live, not logged
    # The status, redrawn while the child ran: its step, then how the attempt ended.
    assert re.search(r"spotsafe: attempt 1 · step [1-8] · no checkpoint yet · 0 interruptions",
                     text), text  # fmt: skip
    assert re.search(rf"attempt 1 ended success · step {STEPS} · checkpoint {STEPS} \(\d+s ago\)",
                     text), text  # fmt: skip
    # Every line of the child reached the terminal in one piece, never cut by a redraw.
    for step in range(1, STEPS + 1):
        assert text.count(f"child line {step} is whole") == 1, text
    assert "bar 100%" in text  # what the terminal showed last of the redrawn bar


def test_in_a_log_plain_lines_between_the_childs_lines(tmp_path: Path) -> None:
    proc = subprocess.run(spotsafe_run(tmp_path), capture_output=True, cwd=REPO,
                          env=child_env(), timeout=60)  # fmt: skip
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert stdout.split("\n") == [f"child line {n} is whole" for n in range(1, STEPS + 1)] + [""]
    assert "\x1b" not in stderr
    lines = stderr.split("\n")
    assert "spotsafe: attempt 1 · starting · no checkpoint yet · 0 interruptions" in lines
    assert re.fullmatch(rf"spotsafe: attempt 1 ended success · step {STEPS} · checkpoint "
                        rf"{STEPS} \(\d+s ago\) · 0 interruptions", lines[-2])  # fmt: skip
    # The bar passed through untouched (a log keeps every redraw), on a line of its own.
    assert "\n\rbar 10%\rbar 50%\rbar 100%\n" in stderr
    assert all(line.startswith(("spotsafe:", "\rbar")) for line in lines[:-1]), lines


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        child()
    else:
        raise SystemExit(f"unknown mode {sys.argv[1:]!r}")
