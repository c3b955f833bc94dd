"""TrainState: everything a run needs to continue exactly where it stopped."""

from __future__ import annotations

import hashlib
import json
import platform
import time
import warnings
from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable

from spotsafe import rng
from spotsafe.env import ChildEnv
from spotsafe.errors import CheckpointCorrupt, CheckpointMismatch, ConfigError

_RESERVED = {"step", "epoch", "config"}


@runtime_checkable
class Stateful(Protocol):
    """Anything with ``state_dict()`` and ``load_state_dict()``."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any) -> Any: ...


def config_fingerprint(config: Mapping[str, Any] | str) -> str:
    """A short stable hash of a run's config (a JSON-able mapping, or a string)."""
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TrainState:
    """The full state of a training run: your objects, the counters, every RNG.

    Args:
        config: optional run config (a JSON-able mapping or a string); its fingerprint is
            stored in each checkpoint and checked on resume.
        **objects: anything with ``state_dict()`` / ``load_state_dict()``: the model, the
            optimizer, the LR scheduler, an AMP GradScaler, a data loader, your own objects.

    Example:
        >>> import torch, spotsafe
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> state = spotsafe.TrainState(model=model, optimizer=opt)
        >>> state.step, state.epoch
        (0, 0)
    """

    def __init__(self, *, config: Mapping[str, Any] | str | None = None, **objects: Any) -> None:
        from spotsafe.data import NotExactWarning, ResumableLoader, not_exact_reason, shield_workers

        # Exact by default: a bare DataLoader (or StatefulDataLoader) is recorded by a
        # ResumableLoader, and iterating the loader itself goes through it.
        bare = {n for n, o in objects.items() if _is_loader(o)}
        objects = {n: ResumableLoader(o) if n in bare else o for n, o in objects.items()}
        for name, obj in objects.items():
            if not isinstance(obj, Stateful):
                raise ConfigError(
                    f"TrainState({name}=...): a {type(obj).__name__} has no state_dict() /"
                    " load_state_dict(); pass objects that do (model, optimizer, scheduler,"
                    " GradScaler, a data loader)"
                )
        self.objects: dict[str, Any] = objects
        #: Names of objects whose state differs per rank under torch.distributed (data
        #: loaders). The others are replicated (DDP) and written once, by rank 0.
        self.per_rank: set[str] = {n for n, o in objects.items() if isinstance(o, ResumableLoader)}
        #: Why the named loaders cannot resume bitwise exactly: each said once, here, and
        #: recorded in every checkpoint's metadata (``not_exact``).
        self.not_exact: dict[str, str] = {}
        for name in sorted(self.per_rank):
            loader = objects[name]
            # From here on, not only from the Guard's start: workers started before the Guard
            # (a first batch fetched before the loop; a StatefulDataLoader's state_dict()
            # starts its iterator) must not die of a signal the main process catches to
            # flush. Harmless outside a Guard: see spotsafe.data.
            shield_workers(loader.loader)
            reason = not_exact_reason(loader)
            if reason is None and name in bare and not loader.hooked:
                reason = (
                    f"spotsafe cannot hook a {type(loader.loader).__name__}'s iteration; iterate"
                    f" the wrapper instead: {name} = spotsafe.ResumableLoader({name})"
                )
            if reason is not None:
                self.not_exact[name] = reason
                warnings.warn(
                    f"TrainState({name}=...) will not resume bitwise exactly: {reason}",
                    NotExactWarning,
                    stacklevel=2,
                )
        self.step = 0
        self.epoch = 0
        self.config_fingerprint = None if config is None else config_fingerprint(config)

    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint: objects, counters and every RNG."""
        return {
            "objects": {name: obj.state_dict() for name, obj in self.objects.items()},
            "step": self.step,
            "epoch": self.epoch,
            "rng": rng.capture(),
        }

    def shared_state_dict(self, *, skip: Collection[str] = ()) -> dict[str, Any]:
        """The part every rank holds alike: replicated objects and the counters (not the
        objects named in ``skip``: sharded ones, which spotsafe.checkpoint.sharded saves)."""
        return {
            "objects": {
                n: o.state_dict()
                for n, o in self.objects.items()
                if n not in self.per_rank and n not in skip
            },
            "step": self.step,
            "epoch": self.epoch,
        }

    def rank_state_dict(self) -> dict[str, Any]:
        """The part that is this rank's own: per-rank objects and every RNG."""
        return {
            "objects": {n: o.state_dict() for n, o in self.objects.items() if n in self.per_rank},
            "rng": rng.capture(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, skip: Collection[str] = ()) -> None:
        """Load ``state``; the RNGs last, so nothing loaded afterwards draws from them. The
        objects named in ``skip`` are left alone (sharded ones are loaded through DCP)."""
        try:
            saved = state["objects"]
            missing = set(self.objects) - set(saved) - set(skip)
            if missing:
                raise CheckpointCorrupt(
                    f"the checkpoint has no state for {sorted(missing)}; it holds {sorted(saved)}"
                )
            for name, obj in self.objects.items():
                if name in skip:
                    continue
                try:
                    obj.load_state_dict(saved[name])
                except (RuntimeError, ValueError, TypeError) as e:
                    raise CheckpointMismatch(
                        f"the checkpoint's {name!r} does not fit this run's {name!r}"
                        f" ({type(obj).__name__}): {e}. Did the model or optimizer change?"
                    ) from e
            self.step = int(state["step"])
            self.epoch = int(state["epoch"])
            rng.restore(state["rng"])
        except KeyError as e:
            raise CheckpointCorrupt(f"the checkpoint state has no {e}") from e

    def metadata(self) -> dict[str, Any]:
        """Who wrote the state, with what: job, attempt, world size, versions, time."""
        import torch

        from spotsafe._version import __version__

        child = ChildEnv.from_environ()  # the supervisor->child contract (spotsafe.env)
        return {
            "job_id": child.job_id,
            "attempt": child.attempt,
            "world_size": _world_size(),
            "versions": {
                "spotsafe": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "config_fingerprint": self.config_fingerprint,
            "not_exact": dict(self.not_exact),
            "wall_time": time.time(),
        }

    def __repr__(self) -> str:
        return f"TrainState(step={self.step}, epoch={self.epoch}, objects={sorted(self.objects)})"


def merge_parts(shared: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """One rank's full state from the shared part and its own part."""
    return {
        "objects": {**shared["objects"], **own["objects"]},
        "step": shared["step"],
        "epoch": shared["epoch"],
        "rng": own["rng"],
    }


def _is_loader(obj: Any) -> bool:
    """Whether ``obj`` is a bare torch DataLoader (a torchdata StatefulDataLoader too)."""
    import torch.utils.data

    return isinstance(obj, torch.utils.data.DataLoader)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
