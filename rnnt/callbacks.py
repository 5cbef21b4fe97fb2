"""Crash safety for training: whole checkpoint files, and a clean stop on SIGTERM.

* ``AtomicCheckpointIO`` writes every checkpoint (best, ``last.ckpt``, on-signal) to a
  temporary file in the same folder, syncs it to disk and renames it over the old one, so a
  process killed mid-write (SIGKILL, out of memory, power cut) leaves the previous file whole.
  It reads checkpoints (resume, ``rnnt validate|test --ckpt_path``) with
  ``rnnt.checkpoint.read_checkpoint``: plain data only, no pickled code runs, and a truncated
  or foreign file is a one-line error naming it.
* ``AtomicModelCheckpoint`` is Lightning's ``ModelCheckpoint`` whose ``save_last="link"``
  replaces ``last.ckpt`` atomically too.
* ``StopOnSignal`` turns SIGTERM (what cluster schedulers and ``kill`` send) into: finish the
  current batch, save ``last.ckpt``, exit with status 0. Under DDP every rank stops at the
  same batch, whichever rank got the signal.

``rnnt fit|validate|test`` install all three (``rnnt.lightning_cli.make_cli``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnt.checkpoint import link_checkpoint, read_checkpoint, write_checkpoint

log = logging.getLogger(__name__)


def _is_local(path: Any) -> bool:
    # fsspec URLs (s3://, gs://, ...) keep Lightning's own writer.
    return "://" not in str(path)


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
    """``ModelCheckpoint`` whose ``save_last="link"`` swaps ``last.ckpt`` atomically.

    Lightning removes ``last.ckpt`` and then creates the link, leaving a moment with no
    ``last.ckpt`` at all; here the link is made under a temporary name and renamed over it.
    Files (``save_last=True``) are written by the trainer's ``CheckpointIO``.
    """

    @staticmethod
    def _link_checkpoint(trainer: pl.Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link_checkpoint(filepath, linkpath)
        trainer.strategy.barrier()


class StopOnSignal(pl.Callback):
    """On SIGTERM: finish the current batch, save ``last.ckpt``, exit with status 0.

    Training batches and validation batches inside ``fit`` are both safe points, so a long
    validation does not eat the scheduler's grace period (usually 30 s to a few minutes before
    SIGKILL). The checkpoint goes where ``ModelCheckpoint`` keeps ``last.ckpt``, so
    ``rnnt fit ... --ckpt_path last`` resumes it: global step, optimizer, scheduler and epoch.

    The signal handler only records the signal. At the end of each batch all ranks agree
    (one tiny all-reduce) whether any rank got it, then all save and stop together: no rank is
    left waiting in a collective, whether the scheduler signalled every rank or only one.
    Lightning's own SIGTERM handler is replaced while ``fit`` runs (it communicates between
    ranks from inside the handler, which can pair with another rank's unrelated collective).

    Args:
        signals: names of the signals that stop training, e.g. ``["SIGTERM", "SIGUSR2"]``.
    """

    def __init__(self, signals: list[str] | tuple[str, ...] = ("SIGTERM",)) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.received: signal.Signals | None = None
        self.saved_path: Path | None = None

    # --- the handler --------------------------------------------------------------------
    def _handle(self, signum: int, frame: Any) -> None:
        # Async-signal context: only record; saving happens at the next batch end.
        self.received = signal.Signals(signum)

    def _install(self, trainer: pl.Trainer) -> None:
        # Lightning registers its handlers just before the loops start; take over after it.
        # It restores the handlers it found when the run ends.
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            if signal.getsignal(signum) != self._handle:
                signal.signal(signum, self._handle)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.received = None  # a signal that stopped an earlier fit of this trainer is spent

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    # --- the safe points ----------------------------------------------------------------
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._stop_if_signalled(trainer, f"training batch {batch_idx}")

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._stop_if_signalled(trainer, f"validation batch {batch_idx}")

    def _stop_if_signalled(self, trainer: pl.Trainer, where: str) -> None:
        # Every rank calls this at every batch end, so the all-reduce always pairs up.
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        path = self._last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # all ranks take part; rank 0 writes
        self.saved_path = path
        if trainer.is_global_zero:
            cause = (
                f"{self.received.name} received"
                if self.received is not None
                else "a stop signal reached another rank"
            )
            log.warning(
                "%s: stopped after %s and saved %s (epoch %d, global step %d). "
                "Resume with the same command plus --ckpt_path last (or --ckpt_path %s).",
                cause,
                where,
                path,
                trainer.current_epoch,
                trainer.global_step,
                path,
            )
        # A SystemExit with no code: the trainer tears down cleanly and the process exits 0.
        raise SIGTERMException()

    @staticmethod
    def _last_checkpoint_path(trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            path = Path(callback.dirpath) / (
                callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION
            )
            # Saved as part of the callback's state: a resumed run keeps writing this file.
            callback.last_model_path = str(path)
            return path
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
