"""Stopping a training run cleanly: on SIGTERM or Ctrl-C, finish the batch, save, exit 0.

``StopOnSignal`` turns SIGTERM (what cluster schedulers and ``kill`` send) and SIGINT (Ctrl-C)
into: finish the current batch, save ``last.ckpt``, exit with status 0. Under DDP every rank
stops at the same batch, whichever rank got the signal. The checkpoint files themselves are
written by ``rnnt.model_checkpoint`` (``AtomicCheckpointIO``, ``AtomicModelCheckpoint``).

``rnnt fit|validate|test`` install it (``rnnt.lightning_cli.make_cli``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rnnt.constants import STOP_SIGNALS
from rnnt.model_checkpoint import AtomicCheckpointIO, AtomicModelCheckpoint

__all__ = ["AtomicCheckpointIO", "AtomicModelCheckpoint", "StopOnSignal"]
log = logging.getLogger(__name__)


class StopOnSignal(pl.Callback):
    """On SIGTERM or SIGINT (Ctrl-C): finish the current batch, save ``last.ckpt``, exit 0.

    Training batches and validation batches inside ``fit`` are both safe points, so a long
    validation does not eat the scheduler's grace period (usually 30 s to a few minutes before
    SIGKILL). The checkpoint goes where ``ModelCheckpoint`` keeps ``last.ckpt``, so
    ``rnnt fit ... --ckpt_path last`` resumes it: global step, optimizer, scheduler and epoch.

    The signal handler only records the signal. At the end of each batch all ranks agree
    (one tiny all-reduce) whether any rank got it, then all save and stop together: no rank is
    left waiting in a collective, whether the scheduler signalled every rank or only one.
    Lightning's own SIGTERM handler is replaced while ``fit`` runs (it communicates between
    ranks from inside the handler, which can pair with another rank's unrelated collective);
    so is Python's SIGINT handler, whose ``KeyboardInterrupt`` Lightning turns into exit 1
    with nothing saved. A second Ctrl-C raises ``KeyboardInterrupt`` at once: the run stops
    without saving (an interrupted save leaves the previous ``last.ckpt`` whole). Data-loader
    workers forked from the trainer inherit the handler and ignore the signals.

    Args:
        signals: names of the signals that stop training, e.g. ``["SIGTERM", "SIGUSR2"]``.
    """

    def __init__(self, signals: list[str] | tuple[str, ...] = STOP_SIGNALS) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.received: signal.Signals | None = None
        self.saved_path: Path | None = None
        self._owner_pid: int | None = None
        self._announce = False

    # --- the handler --------------------------------------------------------------------
    def _handle(self, signum: int, frame: Any) -> None:
        # Async-signal context: only record; saving happens at the next batch end.
        if os.getpid() != self._owner_pid:
            return  # a forked data-loader worker: the trainer process decides
        received = signal.Signals(signum)
        if received == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        if self.received is None:
            self.received = received
        if received == signal.SIGINT and self._announce:
            # os.write, not print: a handler may run in the middle of another write to stderr.
            os.write(
                2,
                b"\nCtrl-C: finishing this batch and saving last.ckpt "
                b"(Ctrl-C again stops at once, without saving)\n",
            )

    def _install(self, trainer: pl.Trainer) -> None:
        # Lightning registers its handlers just before the loops start; take over after it.
        # It restores the handlers it found when the run ends.
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        self._owner_pid = os.getpid()
        self._announce = trainer.is_global_zero
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
        path = self._save_last(trainer)  # all ranks take part; rank 0 writes
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
    def _save_last(trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        if isinstance(callback, AtomicModelCheckpoint) and callback.dirpath:
            return callback.save_last_now(trainer)
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            path = Path(callback.dirpath) / (
                callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION
            )
            # Saved as part of the callback's state: a resumed run keeps writing this file.
            callback.last_model_path = str(path)
        else:
            path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        return path


def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether the trainer writes logged values at this training step.

    Lightning's own decision (every ``log_every_n_steps`` steps, and when stopping), the same
    from a step's start to its end. A step reads device values on the host only then.
    """
    connector = getattr(trainer, "_logger_connector", None)  # no public API for it
    return bool(getattr(connector, "should_update_logs", True))


class EstimatingProgressBar(TQDMProgressBar):
    """Lightning's progress bar with a total and an ETA for training epochs too, and the
    training loss read only at logging steps.

    A training loader has no ``len()`` (its batch count changes with each epoch's shuffle and
    speed factors, see ``rnnt.data.loader``), so Lightning would show ``12/?``; this bar shows
    the sampler's estimate (``estimated_length``) instead. The epoch still ends when the data
    does, whatever the estimate said.

    ``self.log(..., prog_bar=True)`` would make Lightning read the value on the host after
    every step (a GPU sync per step); ``train_loss`` is logged for the loggers only, and this
    bar shows the value of the last logging step (``log_every_n_steps``).
    """

    interval_metrics = ("train_loss",)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        # (rnnt.lightning_cli turns Lightning's bar into this one in place: no __init__ ran.)
        shown = self.__dict__.setdefault("_interval_values", {})
        if trainer.training and logs_this_step(trainer):
            metrics = trainer.callback_metrics
            for name in self.interval_metrics:
                if name in metrics:
                    shown[name] = float(metrics[name])  # one read per logging interval
        return {**super().get_metrics(trainer, pl_module), **shown}

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        loader = self.trainer.train_dataloader
        if total == float("inf") and hasattr(loader, "estimated_length"):
            limit = self.trainer.limit_train_batches
            estimate = loader.estimated_length
            return min(estimate, limit) if isinstance(limit, int) else estimate
        return total
