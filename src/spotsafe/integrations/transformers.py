"""The Hugging Face Trainer on spot capacity: ``SpotsafeTrainer`` instead of ``Trainer``.

``trainer.train()`` then resumes by itself from the newest *verified* checkpoint in the
spotsafe store (``store=`` or ``$SPOTSAFE_STORE``; no ``resume_from_checkpoint``), saves through
:class:`spotsafe.Checkpointer` on the Guard's schedule, and on SIGTERM / SIGINT / SIGUSR1 or a
cloud notice stops at the next optimizer-step boundary, after that step's logging, evaluation
and ``checkpoint-N`` save, never inside a gradient-accumulation window, with a verified
checkpoint at that step, and exits 75.

How resume stays exact: the Trainer's own resume path is already bitwise exact (it skips the
consumed batches of the epoch through its seeded sampler and puts the RNGs back after
fetching the first window). SpotsafeTrainer keeps that path and only changes where its state
comes from: the Trainer's ``_load_*`` hooks read the verified spotsafe checkpoint instead of a
``checkpoint-N`` folder. The checkpoint holds the model, the optimizer, the LR scheduler, the
AMP scaler (when there is one), the ``TrainerState`` (as JSON: step, epoch, log history, best
metric, stateful callbacks) and every RNG.

The Trainer's own ``checkpoint-N`` saves (``save_strategy``, ``save_total_limit``,
``load_best_model_at_end``) keep working; resume reads only spotsafe's store. An explicit
``train(resume_from_checkpoint=...)`` still wins. DeepSpeed and FSDP are not supported (a
ConfigError says so).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Any

from spotsafe.integrations import install_hint

try:
    from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState
    from transformers.trainer_callback import ExportableState
    from transformers.trainer_utils import TrainOutput
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(install_hint("transformers")) from e

from spotsafe.errors import ConfigError
from spotsafe.integrations._common import (
    GuardedCallback,
    Live,
    Resumed,
    put_rng,
    restore_parts,
)
from spotsafe.state import TrainState

__all__ = ["SpotsafeCallback", "SpotsafeTrainer"]

log = logging.getLogger("spotsafe")

TRAINER_STATE_NAME = "trainer_state.json"  # the one file the Trainer's resume path opens


class SpotsafeCallback(GuardedCallback, TrainerCallback):
    """Saves the Trainer's full state through spotsafe and stops cleanly when asked.

    Used by :class:`SpotsafeTrainer`, which adds automatic resume. Alone, on a plain
    ``Trainer``, it saves and stops (exit 75 with a verified checkpoint) at ``on_step_end``,
    an optimizer-step boundary; resuming needs SpotsafeTrainer.

    Args:
        store: where checkpoints go (a path or fsspec URL); None means ``$SPOTSAFE_STORE``.
        checkpointer: a Checkpointer to use instead of one built from ``store``.
        every_steps, every_s, max_lost_work_s, exit_code, watchers, async_saves: the
            :class:`spotsafe.Guard`'s settings (default: the interval policy of the pool).

    Example:
        >>> import tempfile
        >>> from spotsafe.integrations.transformers import SpotsafeCallback
        >>> callback = SpotsafeCallback(tempfile.mkdtemp(), every_steps=50)
        >>> callback.checkpointer.keep_last
        3
    """

    #: The Trainer, when a SpotsafeTrainer owns this callback: it then marks step boundaries
    #: itself, after each step's logging, evaluation and save.
    trainer: Trainer | None = None
    _hf_state: TrainerState | None = None

    # ----------------------------------------------------------------- hooks

    def on_train_begin(
        self,
        args: Any,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        if model is None or optimizer is None or lr_scheduler is None:
            raise ConfigError(
                "SpotsafeCallback: the Trainer gave no model, optimizer or LR scheduler to"
                " on_train_begin; use spotsafe.integrations.transformers.SpotsafeTrainer"
            )
        self._hf_state = state
        objects: dict[str, Any] = {
            "model": model,
            "optimizer": optimizer,
            "scheduler": lr_scheduler,
            "trainer_state": Live(self._trainer_state_json, _refuse_direct_load),
        }
        scaler = self._scaler()
        if scaler is not None:
            objects["scaler"] = scaler
        trainer = self.trainer
        if trainer is not None:
            # The floating-point operations counted since the Trainer last summed them over
            # the ranks (store_flos, a collective: never called from a save, which only
            # rank 0 makes of the replicated parts); each rank keeps its own count.
            objects["flos"] = Live(
                lambda: {"current": float(trainer.current_flos)}, _refuse_direct_load
            )
        self.state = TrainState(**objects)
        if "flos" in objects:
            self.state.per_rank.add("flos")
        self.state.step = state.global_step
        self.state.epoch = int(state.epoch or 0)
        self.enter(self.state)

    def on_step_end(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.trainer is None:
            self.step_boundary()

    def on_train_end(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.leave()  # saves the final state

    # ----------------------------------------------------------------- steps

    def step_boundary(self) -> None:
        """One optimizer step is done: save if due; on a stop request, flush and exit 75.

        Called once per optimizer step, never between the micro-batches of a
        gradient-accumulation window.
        """
        if self.guard is None or self.state is None or self._hf_state is None:
            return
        hf = self._hf_state
        if hf.global_step == self.state.step:
            return  # this step was counted already (epoch end, or a resumed step)
        self.state.step = hf.global_step - 1  # the Guard counts the step
        self.state.epoch = int(hf.epoch or 0)
        self.guard.step()

    def abort(self, exc_type: type[BaseException], exc: BaseException, tb: Any = None) -> None:
        """Leave the Guard after ``exc`` ended training (its own stop included)."""
        self.leave(exc_type, exc, tb)

    # ----------------------------------------------------------------- state

    def _scaler(self) -> Any:
        trainer = self.trainer
        accelerator = getattr(trainer, "accelerator", None)
        return getattr(accelerator, "scaler", None)

    def _trainer_state_json(self) -> dict[str, str]:
        hf = self._hf_state
        assert hf is not None
        trainer = self.trainer
        if trainer is not None:
            # As the Trainer's own _save_checkpoint does: stateful callbacks (early stopping,
            # the control flags) write their state into the TrainerState first.
            saved: dict[str, Any] = hf.stateful_callbacks  # type: ignore[assignment]
            for cb in [*trainer.callback_handler.callbacks, trainer.control]:
                if isinstance(cb, ExportableState):
                    name = type(cb).__name__
                    if isinstance(saved.get(name), list):
                        saved[name].append(cb.state())
                    else:
                        saved[name] = cb.state()
        # What TrainerState.save_to_json writes, which its load_from_json reads back.
        return {"json": json.dumps(dataclasses.asdict(hf), indent=2, sort_keys=True) + "\n"}


def _refuse_direct_load(value: Any) -> None:
    raise TypeError("the TrainerState is restored by SpotsafeTrainer.train()")


_PARTS = ["model", "optimizer", "scheduler", "trainer_state", "flos"]


class SpotsafeTrainer(Trainer):
    """A ``transformers.Trainer`` that resumes, saves and stops through spotsafe.

    Takes the Trainer's arguments, plus:

    Args:
        store: where checkpoints go; None means ``$SPOTSAFE_STORE``.
        spotsafe: a :class:`SpotsafeCallback` with other settings (``every_steps=``,
            ``checkpointer=``, ...) instead of one built from ``store``.

    ``train()`` resumes from the newest verified checkpoint in the store (falling back past
    corrupt ones), unless ``resume_from_checkpoint`` is given.

    Example:
        >>> import tempfile, torch
        >>> from transformers import TrainingArguments
        >>> from spotsafe.integrations.transformers import SpotsafeTrainer
        >>> model = torch.nn.Linear(2, 2)
        >>> args = TrainingArguments(tempfile.mkdtemp(), report_to="none", use_cpu=True)
        >>> trainer = SpotsafeTrainer(model=model, args=args, store=tempfile.mkdtemp())
        >>> trainer.spotsafe.trainer is trainer
        True
    """

    def __init__(
        self,
        *args: Any,
        store: str | os.PathLike[str] | None = None,
        spotsafe: SpotsafeCallback | None = None,
        **kwargs: Any,
    ) -> None:
        if spotsafe is not None and store is not None:
            raise ConfigError("SpotsafeTrainer: give store= or spotsafe=, not both")
        self.spotsafe = spotsafe if spotsafe is not None else SpotsafeCallback(store)
        self._spotsafe_resume: Resumed | None = None
        super().__init__(*args, **kwargs)
        self.spotsafe.trainer = self
        self.add_callback(self.spotsafe)

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> TrainOutput:
        """``Trainer.train()``, resumed from the newest verified checkpoint in the store."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ConfigError(
                "SpotsafeTrainer does not support DeepSpeed or FSDP yet; use DDP, or the plain"
                " Trainer with its own checkpoints"
            )
        folder: str | None = None
        if resume_from_checkpoint in (None, False):
            resumed = self._spotsafe_restore()
            if resumed is not None:
                folder = tempfile.mkdtemp(prefix="spotsafe-resume-")
                with open(os.path.join(folder, TRAINER_STATE_NAME), "w") as f:
                    f.write(resumed.parts["trainer_state"]["json"])
                self._spotsafe_resume = resumed
                self.current_flos = resumed.parts["flos"]["current"]
                resume_from_checkpoint = folder
        try:
            return super().train(
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
                **kwargs,
            )
        except BaseException as e:
            self.spotsafe.abort(type(e), e, e.__traceback__)
            raise
        finally:
            self._spotsafe_resume = None
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _spotsafe_restore(self) -> Resumed | None:
        names = list(_PARTS)
        if getattr(self.accelerator, "scaler", None) is not None:
            names.append("scaler")
        resumed = restore_parts(self.spotsafe.checkpointer, names)
        if resumed is not None:
            log.info("resuming from step %d (%s)", resumed.step, resumed.info.path)
        return resumed

    # The Trainer's resume path, fed from the spotsafe checkpoint. Each hook keeps the
    # Trainer's own timing: weights before accelerator.prepare, optimizer and scheduler once
    # created, RNGs after the first window of the resumed epoch was fetched.

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        resumed = self._spotsafe_resume
        if resumed is None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        target = model if model is not None else self.model
        assert target is not None
        target.load_state_dict(resumed.parts["model"])

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        resumed = self._spotsafe_resume
        if resumed is None:
            super()._load_optimizer_and_scheduler(checkpoint)
            return
        assert self.optimizer is not None and self.lr_scheduler is not None
        self.optimizer.load_state_dict(resumed.parts["optimizer"])
        self.lr_scheduler.load_state_dict(resumed.parts["scheduler"])

    def _load_scaler(self, checkpoint: str | None) -> None:
        resumed = self._spotsafe_resume
        if resumed is None:
            super()._load_scaler(checkpoint)
            return
        if "scaler" in resumed.parts and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(resumed.parts["scaler"])

    def _load_rng_state(self, checkpoint: str | None) -> None:
        resumed = self._spotsafe_resume
        if resumed is None:
            super()._load_rng_state(checkpoint)
            return
        put_rng(resumed.rng)

    def _maybe_log_save_evaluate(self, *args: Any, **kwargs: Any) -> None:
        super()._maybe_log_save_evaluate(*args, **kwargs)
        # After the step's logging, evaluation and checkpoint-N save: a stop here loses
        # none of them, and the saved RNGs are those the Trainer's own save would record.
        self.spotsafe.step_boundary()
