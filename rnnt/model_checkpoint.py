"""Checkpoint files of a training run: written whole, and a ``last.ckpt`` that is never behind.

* ``AtomicCheckpointIO`` writes every checkpoint (best, ``last.ckpt``, on-signal) to a
  temporary file in the same folder, syncs it to disk and renames it over the old one, so a
  process killed mid-write (SIGKILL, out of memory, power cut) leaves the previous file whole.
  It reads checkpoints (resume, ``rnnt validate|test --ckpt_path``) with
  ``rnnt.checkpoint.read_checkpoint``: plain data only, no pickled code runs, and a truncated
  or foreign file is a one-line error naming it.
* ``AtomicModelCheckpoint`` is Lightning's ``ModelCheckpoint`` (``--checkpoint.*``) that keeps
  ``last.ckpt`` at the newest step: every ``every_n_train_steps``, every
  ``save_last_every_minutes`` of training, at every validation and epoch end, and when
  training ends. It ranks and names the best files only on a validation loss of the same
  step, and replaces ``last.ckpt`` atomically.

``rnnt fit|validate|test`` install both (``rnnt.lightning_cli.make_cli``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from rnnt.checkpoint import link_checkpoint, read_checkpoint, write_checkpoint
from rnnt.constants import CHECKPOINT_EVERY_MINUTES

SECONDS_PER_MINUTE = 60.0


def _is_local(path: Any) -> bool:
    # fsspec URLs (s3://, gs://, ...) keep Lightning's own writer.
    return "://" not in str(path)


def _minutes() -> float:
    # The clock of timed saves (monotonic, minutes); tests replace it.
    return time.monotonic() / SECONDS_PER_MINUTE


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that never leaves a half-written checkpoint under its final name.

    Lightning 2.6's own writer serialises to memory and moves a file from the system's temp
    folder (often another file system, where the move is a plain copy onto the final name)
    without fsync; a kill during that copy truncates the checkpoint. Here the temporary file is
    next to the checkpoint, fsynced, then renamed (``rnnt.checkpoint.write_checkpoint``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_checkpoint(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """The checkpoint at ``path``, read with ``weights_only=True`` whatever is asked.

        Raises ``rnnt.checkpoint.CheckpointError`` (one line naming the file) for a missing,
        truncated or foreign file, before Lightning touches any of it.
        """
        if not _is_local(path):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return read_checkpoint(path, map_location or "cpu")


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is never behind and never swapped non-atomically.

    Lightning (2.6) updates ``last.ckpt`` only together with a best-k file, and with a
    monitored metric it puts off the saves of ``every_n_train_steps`` until the first
    validation: a run killed in a long first epoch, or after epochs that did not improve,
    resumed from far back or from nothing. Here ``last.ckpt`` is written (a resume point, not a
    ranked file) at every step interval and every ``save_last_every_minutes`` of training, at
    every validation and epoch end, and when training ends. The best-k files are ranked and
    named only on a validation loss of the same global step: a run stopped by ``max_steps``
    mid-epoch no longer saves ``rnnt-01-<epoch 0's val_loss>``. With ``save_last="link"`` the
    link is made under a temporary name and renamed over ``last.ckpt``; where no best-k file of
    the current step exists to link to, ``last.ckpt`` is a file.

    Args:
        save_last_every_minutes: write ``last.ckpt`` when this many minutes of training have
            passed since it was last written; 0 or None: no timed saves.
        *args, **kwargs: those of Lightning's ``ModelCheckpoint``.
    """

    def __init__(
        self,
        *args: Any,
        save_last_every_minutes: float | None = CHECKPOINT_EVERY_MINUTES,
        **kwargs: Any,
    ) -> None:
        if save_last_every_minutes is not None and not save_last_every_minutes >= 0:
            raise ValueError(
                f"--checkpoint.save_last_every_minutes {save_last_every_minutes} must be >= 0 "
                "(0 or null: no timed saves of last.ckpt)"
            )
        super().__init__(*args, **kwargs)
        self.save_last_every_minutes = save_last_every_minutes
        self._last_written_step: int | None = None
        self._last_written_at = _minutes()
        self._validated_step: int | None = None
        self._best_due = False  # a step interval passed: rank the best-k at the next validation

    # --- last.ckpt ----------------------------------------------------------------------
    def save_last_now(self, trainer: pl.Trainer) -> Path:
        """Write ``last.ckpt`` (a link where ``save_last="link"`` and a best-k file of this step
        exists) at the current step, whatever the schedule; all ranks call it. Returns its path."""
        candidates = self._monitor_candidates(trainer)
        path = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:  # another run's last.ckpt stays (Lightning's rule)
            version = self.STARTING_VERSION
            while self.file_exists(path, trainer) and path != self.last_model_path:
                path = self.format_checkpoint_name(
                    candidates, self.CHECKPOINT_NAME_LAST, ver=version
                )
                version += 1
        # Set before saving: the path is part of the callback's state in the checkpoint.
        previous, self.last_model_path = self.last_model_path, path
        best_of_this_step = (
            self._last_global_step_saved == trainer.global_step and self._last_checkpoint_saved
        )
        if self.save_last == "link" and best_of_this_step and self.save_top_k != 0:
            self._link_checkpoint(trainer, self._last_checkpoint_saved, path)
        else:
            # Not through `_save_checkpoint`: a resume point must not count as this step's
            # ranked save, or a validation at the same step would skip the best-k.
            trainer.save_checkpoint(path, self.save_weights_only)
        self._last_written_step = trainer.global_step
        self._last_written_at = _minutes()
        if previous and self._should_remove_checkpoint(trainer, previous, path):
            self._remove_checkpoint(trainer, previous)
        return Path(path)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        # Every save of last.ckpt Lightning makes goes through `save_last_now`.
        if self.save_last:
            self.save_last_now(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        # last.ckpt at the current step, unless it is there already or nothing was trained.
        if (
            self.save_last
            and trainer.global_step > 0
            and self._last_written_step != trainer.global_step
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and not trainer.fast_dev_run
        ):
            self.save_last_now(trainer)

    def _timed_save_due(self, trainer: pl.Trainer) -> bool:
        minutes = self.save_last_every_minutes
        due = bool(minutes) and _minutes() - self._last_written_at >= minutes
        # Every rank must take part in the save: one tensor all-reduce, "any rank's clock".
        return trainer.strategy.reduce_boolean_decision(due, all=False) if minutes else False

    def _interval_reached(self, trainer: pl.Trainer) -> bool:
        # Lightning's `every_n_train_steps` and `train_time_interval` triggers.
        steps = self._every_n_train_steps
        if steps >= 1 and trainer.global_step % steps == 0:
            return True
        if self._train_time_interval is None:
            return False
        now = time.monotonic()
        since = now - (self._last_time_checked or now)
        due = trainer.strategy.broadcast(since >= self._train_time_interval.total_seconds())
        if due:
            self._last_time_checked = now
        return due

    # --- hooks --------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_written_at = _minutes()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.monitor is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        elif self._interval_reached(trainer):
            self._best_due = True
            self._refresh_last(trainer)
        if self._timed_save_due(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting:
            self._validated_step = trainer.global_step
        saves_here = not self._should_save_on_train_epoch_end(trainer)
        if fitting and saves_here:
            self._save_due_best(trainer)
        super().on_validation_end(trainer, pl_module)
        if fitting and saves_here:
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_due_best(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._refresh_last(trainer)

    def _save_due_best(self, trainer: pl.Trainer) -> None:
        # The best-k a step interval asked for, now that this step has a validation loss.
        if self._best_due and not self._should_skip_saving_checkpoint(trainer):
            self._best_due = False
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            if self._last_global_step_saved == trainer.global_step:
                self._save_last_checkpoint(trainer, candidates)

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        # A file ranked and named by the monitored metric needs a value of this very step.
        if self.monitor is not None and self._validated_step != trainer.global_step:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    @staticmethod
    def _link_checkpoint(trainer: pl.Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link_checkpoint(filepath, linkpath)
        trainer.strategy.barrier()
