"""Lightning on spot capacity: ``L.Trainer(callbacks=[SpotsafeCallback()])``.

``trainer.fit(model, datamodule)`` then resumes by itself from the newest *verified*
checkpoint in the spotsafe store (``store=`` or ``$SPOTSAFE_STORE``; no ``ckpt_path``), saves
through :class:`spotsafe.Checkpointer` on the Guard's schedule, and on SIGTERM / SIGINT /
SIGUSR1 or a cloud notice stops after the next optimizer step (never inside a
gradient-accumulation window; after an epoch's last batch, one step later) with a verified
checkpoint at that step, and exits 75, not 0.

What a checkpoint holds: Lightning's own checkpoint dictionary (weights, optimizers, LR
schedulers, loop progress, callback states such as ``ModelCheckpoint``'s best model,
precision plugin), minus the hyper-parameters (not needed to resume, and not always plain
data), plus what Lightning does not save: every RNG and each training loader's position
(:class:`spotsafe.ResumableLoader`, which replays the epoch's shuffle and skips the batches
already trained on). It is loaded through Lightning's own restore path, at the moment a
``ckpt_path`` would be, so loops, optimizers and callbacks resume as Lightning resumes them.

Two things differ from a plain Lightning run, both so that resume can be exact:
validation during ``fit`` leaves the training's RNGs as it found them (a validation run
after the saved step is not repeated on resume), and the training loader is re-iterated once
at ``on_train_start`` (Lightning iterates it before any callback can wrap it).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from spotsafe import rng
from spotsafe.data import ResumableLoader
from spotsafe.errors import ConfigError
from spotsafe.integrations import install_hint
from spotsafe.integrations._common import (
    GuardedCallback,
    Live,
    Resumed,
    put_rng,
    restore_parts,
)
from spotsafe.state import TrainState

try:
    import lightning.pytorch as pl
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from lightning.fabric.utilities.warnings import PossibleUserWarning
    from torch.utils.data import DataLoader
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(install_hint("lightning")) from e

__all__ = ["SpotsafeCallback"]

log = logging.getLogger("spotsafe")

# Parts of Lightning's checkpoint that resuming a fit does not read, and that may hold
# arbitrary Python objects (a checkpoint is plain data and tensors, never a pickle).
_NOT_SAVED = (
    "hyper_parameters",
    "hparams_name",
    "hparams_type",
    "datamodule_hyper_parameters",
    "datamodule_hparams_name",
    "datamodule_hparams_type",
)
_PARTS = ["lightning", "loaders"]


class SpotsafeCallback(GuardedCallback, pl.Callback):
    """Resume, save and stop a Lightning ``fit`` through spotsafe.

    Args:
        store: where checkpoints go (a path or fsspec URL); None means ``$SPOTSAFE_STORE``.
        checkpointer: a Checkpointer to use instead of one built from ``store``.
        every_steps, every_s, max_lost_work_s, exit_code, watchers, async_saves: the
            :class:`spotsafe.Guard`'s settings (default: the interval policy of the pool).

    An explicit ``trainer.fit(..., ckpt_path=...)`` still wins over the store.

    Example:
        >>> import tempfile
        >>> from spotsafe.integrations.lightning import SpotsafeCallback
        >>> callback = SpotsafeCallback(tempfile.mkdtemp(), every_steps=100)
        >>> callback.checkpointer.keep_last
        3
    """

    _trainer: pl.Trainer | None = None
    _resumed: Resumed | None = None
    _loaders: tuple[ResumableLoader, ...] = ()  # the training loaders' recorders
    _rng_before_validation: dict[str, Any] | None = None
    _seen_step = 0  # the optimizer step the last training batch ended

    # ----------------------------------------------------------------- resume

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._trainer = trainer
        resumed = restore_parts(self.checkpointer, _PARTS)
        self._resumed = resumed
        if resumed is None:
            return
        log.info("resuming from step %d (%s)", resumed.step, resumed.info.path)
        # Lightning warns that a plain DataLoader cannot resume mid-epoch; spotsafe resumes it
        # (on_train_start), so the warning does not apply.
        warnings.filterwarnings(
            "ignore",
            message="You're resuming from a checkpoint that ended before the epoch ended",
            category=PossibleUserWarning,
        )
        # Lightning reads this right after the setup hooks, exactly where it would read the
        # file of a ckpt_path (an explicit ckpt_path replaces it).
        connector = trainer._checkpoint_connector
        connector._loaded_checkpoint = dict(resumed.parts["lightning"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        combined = trainer.fit_loop._combined_loader
        fetcher = trainer.fit_loop._data_fetcher
        if combined is None or fetcher is None:
            raise ConfigError("SpotsafeCallback: Lightning has no training loader at train start")
        loaders = []
        for loader in combined.flattened:
            if not isinstance(loader, DataLoader):
                raise ConfigError(
                    f"SpotsafeCallback: the training loader is a {type(loader).__name__}; only"
                    " torch DataLoaders resume exactly"
                )
            loaders.append(ResumableLoader(loader))
        self._loaders = tuple(loaders)
        resumed, self._resumed = self._resumed, None
        ended = False
        if resumed is not None:
            saved = resumed.parts["loaders"]
            if len(saved) != len(self._loaders):
                raise ConfigError(
                    f"SpotsafeCallback: the checkpoint has {len(saved)} training loaders, this"
                    f" run {len(self._loaders)}"
                )
            for loader, position in zip(self._loaders, saved, strict=True):
                if position["in_epoch"] and position["consumed"] >= len(loader):
                    # Saved after the epoch's last batch: Lightning counts that epoch as done
                    # and iterates on into the next one, which starts fresh.
                    position = {**position, "in_epoch": False, "consumed": 0}
                    ended = True
                loader.load_state_dict(position)
            put_rng(resumed.rng)
        if not ended:
            # A DistributedSampler's order follows its epoch, which Lightning sets only after
            # this hook (on_advance_start): set it now, as Lightning will, for the replay.
            progress: Any = trainer.fit_loop.epoch_progress.current  # typed as its base class
            epoch = int(progress.processed)
            for loader in combined.flattened:
                _set_sampler_epoch(loader, epoch)
            # Lightning iterated the loaders before any callback could record them: iterate
            # again through the recorders (a resumed epoch replays its start and skips the
            # batches already trained on, then puts every RNG back). After an epoch's end,
            # Lightning starts the next epoch with an iter() of its own.
            iter(fetcher)
        self.state = TrainState(
            lightning=Live(self._lightning_state, _refuse_direct_load),
            loaders=Live(self._loader_positions, _refuse_direct_load),
        )
        # Under DDP each rank saves its own loader positions (the RNG states its epochs began
        # with differ per rank); Lightning's checkpoint is replicated, written by rank 0.
        self.state.per_rank.add("loaders")
        self.state.step = self._seen_step = trainer.global_step
        self.state.epoch = trainer.current_epoch
        # Entered after Lightning installed its SIGTERM handler: the Guard's replaces it
        # (Lightning's would stop at the epoch's end with exit 0) and is put back on exit.
        self.enter(self.state)
        # A resumed run may validate before its first batch (the saved step's validation).
        self._rng_before_validation = rng.capture()

    # ----------------------------------------------------------------- steps

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.guard is None or self.state is None:
            return
        # Validation may follow this batch, and Lightning iterates its loader (drawing from
        # the RNGs) before any validation hook runs: note the RNGs here, for the validation
        # to leave them as it found them.
        self._rng_before_validation = rng.capture()
        if trainer.global_step == self._seen_step:
            return  # inside a gradient-accumulation window: no optimizer step yet
        self._seen_step = trainer.global_step
        loop = trainer.fit_loop
        if loop.epoch_loop.batch_progress.is_last_batch or (
            loop._data_fetcher is not None
            and loop.epoch_loop._should_check_val_fx(loop._data_fetcher)
        ):
            # Not after an epoch's last batch, nor before a validation: Lightning resumes
            # such a checkpoint without running that epoch's end or that validation as it
            # ran, and the resumed runs were measured to differ. The next step saves instead.
            return
        self.state.step = trainer.global_step - 1  # the Guard counts the step
        self.state.epoch = trainer.current_epoch
        self.guard.step()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saved, self._rng_before_validation = self._rng_before_validation, None
        if saved is not None and trainer.state.fn == "fit":
            rng.restore(saved)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:  # the last step may have ended an epoch, uncounted
            self.state.step = trainer.global_step
            self.state.epoch = trainer.current_epoch
        self.leave()  # saves the final state

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.leave(type(exception), exception, exception.__traceback__)

    # ----------------------------------------------------------------- state

    def _lightning_state(self) -> dict[str, Any]:
        trainer = self._trainer
        assert trainer is not None
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        return {k: v for k, v in checkpoint.items() if k not in _NOT_SAVED}

    def _loader_positions(self) -> list[Any]:
        return [loader.state_dict() for loader in self._loaders]


def _refuse_direct_load(value: Any) -> None:
    raise TypeError("Lightning's state is restored by SpotsafeCallback.setup()")
