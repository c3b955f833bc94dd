"""What the framework integrations share: restoring a checkpoint before the framework has
built the objects it goes into, and a Guard entered and left by framework hooks rather than
by a ``with`` block."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from spotsafe import rng
from spotsafe.checkpoint import Checkpointer, RestoreInfo
from spotsafe.guard import EXIT_PREEMPTED, Guard
from spotsafe.interrupt import Watcher
from spotsafe.state import TrainState


class Held:
    """A part of a checkpoint kept as it was loaded, for an object the framework builds later
    (a Trainer creates its optimizer inside ``train()``); saving goes through ``source``."""

    def __init__(self, source: Callable[[], Any] | None = None) -> None:
        self.source = source
        self.value: Any = None

    def state_dict(self) -> Any:
        if self.source is None:
            raise TypeError("this part is only restored, never saved")
        return self.source()

    def load_state_dict(self, state_dict: Any) -> None:
        self.value = state_dict


class Live:
    """A framework object whose state is read and written through two functions."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        self._get = get
        self._put = put

    def state_dict(self) -> Any:
        return self._get()

    def load_state_dict(self, state_dict: Any) -> None:
        self._put(state_dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed:
    """A verified checkpoint loaded into memory, waiting for the framework's objects."""

    info: RestoreInfo
    parts: Mapping[str, Any]  #: each saved object's state, by name
    rng: Mapping[str, Any]  #: every RNG as it was at the saved step

    @property
    def step(self) -> int:
        return self.info.step


def restore_parts(checkpointer: Checkpointer, names: list[str]) -> Resumed | None:
    """The newest verified checkpoint of the objects ``names``, held in memory; None when
    the store holds none. Corrupt checkpoints are skipped (and quarantined) by the
    Checkpointer; the process's RNGs are left as the checkpoint had them."""
    held: dict[str, Any] = {name: Held() for name in names}
    info = checkpointer.restore(TrainState(**held))
    if info is None:
        return None
    # TrainState.load_state_dict restored the checkpoint's RNGs last: capture them now, to
    # put them back at the moment the framework's own resume would.
    return Resumed(info=info, parts={n: h.value for n, h in held.items()}, rng=rng.capture())


def put_rng(saved: Mapping[str, Any]) -> None:
    """Put every RNG back to ``saved`` (from :func:`restore_parts`)."""
    rng.restore(dict(saved))


class GuardedCallback:
    """What the framework callbacks share: where checkpoints go, the Guard's settings, and a
    Guard entered and left by the framework's hooks rather than by a ``with`` block.

    Args:
        store: where checkpoints go (a path or fsspec URL); None means ``$SPOTSAFE_STORE``.
        checkpointer: a Checkpointer to use instead of one built from ``store``.
        every_steps, every_s, max_lost_work_s, exit_code, watchers, async_saves: the
            :class:`spotsafe.Guard`'s settings (default: the interval policy of the pool).
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        *,
        checkpointer: Checkpointer | None = None,
        every_steps: int | None = None,
        every_s: float | None = None,
        max_lost_work_s: float | None = None,
        exit_code: int = EXIT_PREEMPTED,
        watchers: list[Watcher] | None = None,
        async_saves: bool = True,
    ) -> None:
        self.checkpointer = checkpointer if checkpointer is not None else Checkpointer(store)
        self._guard_settings: dict[str, Any] = {
            "every_steps": every_steps,
            "every_s": every_s,
            "max_lost_work_s": max_lost_work_s,
            "exit_code": exit_code,
            "watchers": watchers,
            "async_saves": async_saves,
        }
        self.guard: Guard | None = None
        self.state: TrainState | None = None

    def enter(self, state: TrainState) -> None:
        """Guard ``state`` from now on: a framework hook at the start of training."""
        self.state = state
        self.guard = Guard(self.checkpointer, state, **self._guard_settings)
        self.guard.__enter__()

    def leave(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Leave the Guard as a ``with`` block would: normally (saving the final state) or
        with the exception that ended training (its own stop included)."""
        guard, self.guard = self.guard, None
        if guard is not None and guard._entered:
            guard.__exit__(exc_type, exc, tb)
