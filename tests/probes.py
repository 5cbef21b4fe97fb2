"""Test-only callbacks that `rnnt fit|validate` subprocesses load from a YAML config.

Each writes what a test needs to check into files, one per rank, appending and flushing as it
goes, so that what a rank did is on disk even if the process is stopped or killed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


def _append(path: Path, record: dict) -> None:
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")


class BatchRecorder(pl.Callback):
    """Appends ``{"split", "epoch", "step", "ids"}`` per batch to ``out_dir/batches-rank{R}.jsonl``.

    Sanity-check validation batches are left out.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def _record(self, trainer: pl.Trainer, split: str, batch: dict[str, Any]) -> None:
        if trainer.sanity_checking:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "split": split,
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "ids": list(batch["ids"]),
        }
        _append(self.out_dir / f"batches-rank{trainer.global_rank}.jsonl", record)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record(trainer, "train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._record(trainer, "val", batch)


class MetricsRecorder(pl.Callback):
    """Appends the trainer's scalar metrics after each validation to ``out_dir/metrics-rank{R}``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics = {
            key: float(value) for key, value in trainer.callback_metrics.items() if value.numel()
        }
        metrics["global_step"] = trainer.global_step
        _append(self.out_dir / f"metrics-rank{trainer.global_rank}.jsonl", metrics)


class NanLossOnRank(pl.Callback):
    """Makes the loss NaN on one rank only, at the given global steps (a diverging replica)."""

    def __init__(self, rank: int, steps: list[int]) -> None:
        self.rank = rank
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        model = pl_module.model
        model.__dict__.pop("forward", None)  # undo the previous step's patch
        if trainer.global_rank == self.rank and trainer.global_step in self.steps:
            original = type(model).forward.__get__(model)

            def nan_loss(*args, **kwargs) -> torch.Tensor:
                return original(*args, **kwargs) * float("nan")

            model.forward = nan_loss


class HalfRightDecoder(pl.Callback):
    """Replaces greedy decoding with the first half of each reference (rounded up).

    An untrained model's WER is 1.0 for every utterance, which any split across ranks,
    duplicated or dropped, reproduces; here each utterance has its own WER, so the corpus WER
    depends on exactly which utterances were counted how often.
    """

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        texts = list(batch["texts"])

        def decode(encoder_out, encoder_lengths) -> list[str]:
            return [" ".join(text.split()[: (len(text.split()) + 1) // 2]) for text in texts]

        pl_module._decode = decode


class SendSignal(pl.Callback):
    """Sends ``signal`` to this process once, on one rank: at the start of the training batch
    that begins at ``train_step``, or of validation batch ``val_batch`` in epoch ``epoch``."""

    def __init__(
        self,
        rank: int = 0,
        train_step: int | None = None,
        val_batch: int | None = None,
        epoch: int = 0,
        signal: str = "SIGTERM",
    ) -> None:
        self.rank = rank
        self.train_step = train_step
        self.val_batch = val_batch
        self.epoch = epoch
        self.signal = signal
        self.sent = False

    def _send(self, trainer) -> None:
        import os
        import signal

        if not self.sent and trainer.global_rank == self.rank:
            self.sent = True
            os.kill(os.getpid(), signal.Signals[self.signal])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.train_step:
            self._send(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if (
            not trainer.sanity_checking
            and batch_idx == self.val_batch
            and trainer.current_epoch == self.epoch
        ):
            self._send(trainer)
