"""The vectorised engine against a slow simulator that walks one event at a time: the same
attempts (waits for capacity, windows until each interruption) give the same makespan, the
same waste of every kind and the same interruption count, trial by trial."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from spotsafe.simulate import WASTE_KINDS, Job, Poisson, Trace, run_trials, schedule

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Recorded:
    """A process that hands out fixed rows of (wait, window), per trial, cyclically."""

    waits: Array
    windows: Array
    name: str = "recorded"

    @property
    def mean_window_s(self) -> float:
        return float(self.windows.mean())

    def draw(
        self, rng: np.random.Generator, n: int, k: int, state: object
    ) -> tuple[Array, Array, object]:
        start = 0 if state is None else int(str(state))
        cols = (start + np.arange(k)) % self.windows.shape[1]
        return self.waits[:n][:, cols], self.windows[:n][:, cols], start + k


def reference(job: Job, interval_s: float, rows: list[tuple[float, float]]) -> dict[str, float]:
    """One trial, one event at a time. Rows repeat cyclically, as `Recorded` hands them out."""
    sched = schedule(job, interval_s)
    tau, c, p = sched.work_s, job.checkpoint_s, job.persist_s
    waste = dict.fromkeys(WASTE_KINDS, 0.0)
    t, durable, first = 0.0, 0.0, True
    for i in range(10**6):
        count = i  # interruptions so far
        wait, window = rows[i % len(rows)]
        waste["capacity_wait"] += wait
        t += wait
        now = 0.0  # seconds into this attempt; the interruption comes at `window`
        if not first:
            for kind, spend in (("restart", job.restart_s), ("restore", job.restore_s)):
                used = min(spend, window - now)
                waste[kind] += used
                now += used
        first = False
        killed = now >= window and job.overhead_s > 0 and i > 0
        stop = window - job.notice_s if job.notice_saves else window
        done = durable
        saves: list[tuple[float, float]] = []  # (when durable, work it holds)
        # The model's rule: the first cycle waits as if a save were in flight at the start.
        in_flight = now + p
        finished = False
        while not killed:
            seg = min(tau, job.work_s - done)
            if now + seg > stop:
                done += max(stop - now, 0.0)
                break
            now += seg
            done += seg
            if now < in_flight:  # the previous save is not durable yet: wait for it
                if in_flight > stop:
                    waste["checkpoint"] += stop - now
                    break
                waste["checkpoint"] += in_flight - now
                now = in_flight
            last = done >= job.work_s - 1e-9
            if now + c > stop and not (last and job.notice_saves):
                waste["checkpoint"] += stop - now
                break
            now += c
            waste["checkpoint"] += c
            in_flight = now + p
            saves.append((in_flight, done))
            if last:
                if in_flight <= window:
                    waste["checkpoint"] += p
                    finished = True
                else:  # interrupted while the final save persists
                    waste["checkpoint"] += max(min(window, stop) - now, 0.0)
                break
        if finished:
            makespan = t + in_flight
            assert math.isclose(sum(waste.values()) + job.work_s, makespan, rel_tol=1e-9)
            return {"makespan": makespan, "interruptions": count, **waste}
        # Interrupted: keep what a notice saved, or the newest save durable by then.
        train_start = job.overhead_s if i > 0 else 0.0
        if job.notice_saves:
            kept = done
            waste["notice"] += max(window - max(stop, train_start), 0.0) if not killed else 0.0
        else:
            kept = max([w for d, w in saves if d <= window] + [durable])
            waste["replayed"] += done - kept
        durable = kept
        t += window
    raise AssertionError("did not finish")


CASES = {
    "sync": Job(work_s=3000.0, checkpoint_s=20.0, restore_s=15.0, restart_s=40.0),
    "async": Job(work_s=3000.0, checkpoint_s=10.0, persist_s=60.0, restore_s=15.0, restart_s=40.0),
    "saves queue": Job(work_s=3000.0, checkpoint_s=10.0, persist_s=200.0, restart_s=30.0),
    "steps": Job(work_s=3000.0, step_s=7.0, checkpoint_s=12.0, restore_s=5.0, restart_s=30.0),
    "notice": Job(work_s=3000.0, checkpoint_s=10.0, persist_s=20.0, restart_s=30.0, notice_s=120.0),
}
INTERVALS = {"sync": 250.0, "async": 300.0, "saves queue": 205.0, "steps": 200.0, "notice": 400.0}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_waits", [False, True])
def test_every_trial_matches(name: str, with_waits: bool) -> None:
    job, interval = CASES[name], INTERVALS[name]
    rng = np.random.default_rng(3)
    trials, width = 40, 64
    # Windows from 1 s (killed during the restart) to 20 min; waits as a trace's outages.
    windows = rng.exponential(500.0, size=(trials, width)) + 1.0
    waits = rng.exponential(100.0, size=(trials, width)) * with_waits
    got = run_trials(job, Recorded(waits, windows), interval, trials=trials, seed=0)
    assert got.unfinished == 0
    for i in range(trials):
        want = reference(job, interval, list(zip(waits[i], windows[i], strict=True)))
        assert got.makespan_s[i] == pytest.approx(want["makespan"], rel=1e-9, abs=1e-6), i
        assert got.interruptions[i] == want["interruptions"], i
        for kind in WASTE_KINDS:
            assert got.waste_s[kind][i] == pytest.approx(want[kind], rel=1e-9, abs=1e-6), (
                i,
                kind,
            )


def test_the_waste_adds_up_to_the_makespan() -> None:
    job = CASES["async"]
    out = run_trials(job, Poisson(900.0), 300.0, trials=300, seed=2)
    total = sum(out.waste_s[k] for k in WASTE_KINDS) + job.work_s
    assert np.allclose(total, out.makespan_s)


def test_a_trace_replays_its_windows_and_outages() -> None:
    """Slots of 60 s, 1 = unavailable: windows [120, 300) and [360, 480), the second one
    wrapping around the end of the trace (slots 6 and 0)."""
    trace = Trace.from_slots([0, 1, 0, 0, 0, 1, 0], 60.0)
    assert trace.starts.tolist() == [120.0, 360.0]
    assert trace.ends.tolist() == [300.0, 480.0]
    waits, windows, _ = trace.draw(np.random.default_rng(0), 500, 5, None)
    # After the first attempt, the trace's cycle: each window, and an outage of 60 s.
    assert set(windows[:, 1:].ravel().tolist()) == {120.0, 180.0}
    assert set(waits[:, 1:].ravel().tolist()) == {60.0}
    # A trial that starts in an outage waits (< 60 s) for a whole window; one that starts
    # inside a window holds the rest of it at once.
    outage = waits[:, 0] > 0
    assert outage.any() and (~outage).any()
    assert np.all(waits[outage, 0] <= 60.0)
    assert set(windows[outage, 0].tolist()) <= {120.0, 180.0}
    assert np.all(windows[~outage, 0] <= 180.0)
