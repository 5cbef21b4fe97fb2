"""The LightningModule: the step logic of transducer training, nothing else.

Lightning owns the loop, devices, precision, checkpointing and logging (see DESIGN.md); this
module owns what one step means: the fused transducer loss, a guard against non-finite losses,
AdamW with a warmup schedule, and validation by loss and greedy word error rate.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.text import WordErrorRate

from rnnt.checkpoint import MODEL_CONFIG_KEY, TOKENIZER_KEY
from rnnt.constants import (
    ADAM_BETAS,
    ATTENTION_CONTEXT_SIZE,
    CAUSAL_CONV,
    LEARNING_RATE,
    LOG_TEXT_EXAMPLES,
    MAX_NONFINITE_STEPS,
    MAX_SYMBOLS_PER_FRAME,
    MIN_LR_RATIO,
    MODEL_PRESET,
    SAMPLE_RATE,
    SCHEDULER,
    TOKENIZER_MODEL_PATH,
    WARMUP_STEPS,
    WEIGHT_DECAY,
)
from rnnt.data.tokenizer import Tokenizer
from rnnt.decoding import greedy_search
from rnnt.models.transducer import Transducer, config_from_preset
from rnnt.scheduler import build_scheduler

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when too many steps in a row had a loss that was NaN or infinite."""


class TransducerModule(pl.LightningModule):
    """Trains a :class:`Transducer` on batches of the :class:`TransducerDataModule`.

    Args:
        tokenizer_path: SentencePiece model; its size fixes the output layer, and its bytes are
            stored in every checkpoint so that a checkpoint alone can transcribe.
        preset: model size, one of ``tiny``, ``small``, ``medium``, ``large``.
        attention_context_size: ``[left, right]`` encoder frames each frame attends to after
            subsampling; ``-1`` is unlimited. ``[k, 0]`` with ``causal_conv`` gives a
            streaming model.
        causal_conv: convolutions see no future frames (for streaming).
        model_overrides: any other field of ``TransducerConfig``, e.g. ``{"num_layers": 8}``.
        learning_rate: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment coefficients.
        scheduler: ``noam`` or ``cosine`` (see ``rnnt/scheduler.py``).
        warmup_steps: optimizer steps of linear warmup.
        min_lr_ratio: final learning rate of ``cosine`` as a fraction of the peak.
        max_symbols_per_frame: greedy decoding cap used for the validation WER.
        max_nonfinite_steps: stop with an error after this many non-finite losses in a row.
        log_text_examples: reference/hypothesis pairs written to TensorBoard each validation.
    """

    def __init__(
        self,
        tokenizer_path: str = TOKENIZER_MODEL_PATH,
        preset: str = MODEL_PRESET,
        attention_context_size: list[int] = ATTENTION_CONTEXT_SIZE,
        causal_conv: bool = CAUSAL_CONV,
        model_overrides: dict[str, Any] | None = None,
        learning_rate: float = LEARNING_RATE,
        weight_decay: float = WEIGHT_DECAY,
        betas: tuple[float, float] = ADAM_BETAS,
        scheduler: str = SCHEDULER,
        warmup_steps: int = WARMUP_STEPS,
        min_lr_ratio: float = MIN_LR_RATIO,
        max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
        max_nonfinite_steps: int = MAX_NONFINITE_STEPS,
        log_text_examples: int = LOG_TEXT_EXAMPLES,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = Tokenizer.load(tokenizer_path)
        config = config_from_preset(
            preset,
            self.tokenizer.num_classes,
            attention_context_size=list(attention_context_size),
            causal_conv=causal_conv,
            **(model_overrides or {}),
        )
        self.model = Transducer(config)
        self.val_wer = WordErrorRate()
        self.test_wer = WordErrorRate()
        self._nonfinite_in_a_row = 0
        self._text_examples: list[tuple[str, str]] = []

    # --- steps --------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean transducer loss of a batch (float32 scalar)."""
        return self.model(
            batch["audio"], batch["audio_lengths"], batch["targets"], batch["target_lengths"]
        )

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every utterance of the batch failed to load (already counted)
            return None
        loss = self(batch)
        finite = torch.isfinite(loss.detach())
        # Every rank must agree, or DDP would wait forever for the gradients of a skipped step.
        if not self.trainer.strategy.reduce_boolean_decision(bool(finite), all=True):
            self._nonfinite_in_a_row += 1
            log.warning(
                "step %d: non-finite loss (%s), step skipped (%d in a row)",
                self.global_step,
                loss.item(),
                self._nonfinite_in_a_row,
            )
            if self._nonfinite_in_a_row >= self.hparams.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"{self._nonfinite_in_a_row} training steps in a row had a NaN or infinite "
                    "loss; the run is diverging. Lower model.learning_rate, raise "
                    "model.warmup_steps, or check the data for empty or mislabelled audio. "
                    "Resume from the last good checkpoint with --ckpt_path last."
                )
            return None
        self._nonfinite_in_a_row = 0
        batch_size = len(batch["texts"])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
        self.log(
            "train_audio_seconds",
            batch["audio_lengths"].sum().float() / SAMPLE_RATE,
            batch_size=batch_size,
        )
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norms = [p.grad.detach().norm(2) for p in self.parameters() if p.grad is not None]
        if norms:
            self.log("grad_norm", torch.stack(norms).norm(2), on_step=True, on_epoch=False)

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val", self.val_wer)

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test", self.test_wer)

    def _evaluate(
        self, batch: dict[str, Any] | None, batch_idx: int, split: str, wer: WordErrorRate
    ) -> None:
        if batch is None:
            return
        batch_size = len(batch["texts"])
        # One encoder pass serves both the loss and the greedy transcripts.
        encoder_out, encoder_lengths = self.model.encode(batch["audio"], batch["audio_lengths"])
        loss = self.model.loss(
            encoder_out, encoder_lengths, batch["targets"], batch["target_lengths"]
        )
        self.log(f"{split}_loss", loss, prog_bar=True, sync_dist=True, batch_size=batch_size)
        hypotheses = self._decode(encoder_out, encoder_lengths)
        wer.update(hypotheses, batch["texts"])
        self.log(f"{split}_wer", wer, prog_bar=True, on_epoch=True, batch_size=batch_size)
        if split == "val" and batch_idx == 0:
            self._text_examples = list(zip(batch["texts"], hypotheses, strict=True))[
                : self.hparams.log_text_examples
            ]

    def _decode(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[str]:
        # Greedy transcripts of encoder frames (B, T', D).
        token_ids = greedy_search(
            self.model, encoder_out, encoder_lengths, self.hparams.max_symbols_per_frame
        )
        return [self.tokenizer.decode(ids) for ids in token_ids]

    def on_validation_epoch_end(self) -> None:
        if not self._text_examples or self.trainer.sanity_checking:
            return
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                table = "\n\n".join(
                    f"**ref:** {ref}  \n**hyp:** {hyp}" for ref, hyp in self._text_examples
                )
                logger.experiment.add_text("val_examples", table, self.global_step)

    # --- optimisation -------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            # Norms, biases and embeddings are not weights to shrink.
            (no_decay if parameter.ndim < 2 or "embedding" in name else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.learning_rate,
            betas=tuple(self.hparams.betas),
        )
        total_steps = None
        if self.hparams.scheduler == "cosine":
            estimated = self.trainer.estimated_stepping_batches
            total_steps = int(estimated) if math.isfinite(estimated) else None
        scheduler = build_scheduler(
            optimizer,
            self.hparams.scheduler,
            warmup_steps=self.hparams.warmup_steps,
            total_steps=total_steps,
            min_lr_ratio=self.hparams.min_lr_ratio,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }

    # --- checkpoints --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint is self-contained: `rnnt transcribe --checkpoint X.ckpt` needs no other file.
        checkpoint[TOKENIZER_KEY] = self.tokenizer.model_bytes
        checkpoint[MODEL_CONFIG_KEY] = self.model.config.to_dict()

    def on_train_start(self) -> None:
        log.info(
            "model: %s preset, %.2fM parameters, %d output classes",
            self.hparams.preset,
            self.model.num_parameters() / 1e6,
            self.model.config.num_classes,
        )
