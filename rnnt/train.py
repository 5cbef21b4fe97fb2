"""The LightningModule: the step logic of transducer training, nothing else.

Lightning owns the loop, devices, precision, checkpointing and logging (see DESIGN.md); this
module owns what one step means: the fused transducer loss, a guard against non-finite losses,
AdamW with a warmup schedule, and validation by loss and greedy word error rate.

A training step reads no device value on the host outside logging steps (a read stalls a GPU
until its queue drains): lengths come from the loader's host lists, the non-finite guard
decides on the device (``rnnt.optim``), and logged values are produced, and so read, only
when the trainer logs (``trainer.log_every_n_steps``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics.text import WordErrorRate

from rnnt.arguments import MODEL_RULES, check_arguments
from rnnt.callbacks import logs_this_step
from rnnt.checkpoint import (
    MODEL_CONFIG_KEY,
    TOKENIZER_KEY,
    WEIGHT_MEANING_FIELDS,
    CheckpointError,
    check_weights_fit,
    stored_config,
)
from rnnt.constants import (
    ADAM_BETAS,
    ATTENTION_CONTEXT_SIZE,
    ATTENTION_CONTEXT_STYLE,
    CAUSAL_CONV,
    COMPILE,
    COMPILE_BACKEND,
    EMA_DECAY,
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
from rnnt.ema import ExponentialMovingAverage, use_raw_weights
from rnnt.evaluation import context_metrics, evaluate_batch
from rnnt.metrics import UtteranceMean
from rnnt.models.contexts import ContextSampler
from rnnt.models.transducer import Transducer, config_from_preset
from rnnt.optim import (
    NonFiniteGuard,
    NonFiniteLossError,
    adamw,
    clip_gradients,
    total_grad_norm,
)
from rnnt.scheduler import build_scheduler
from rnnt.warm_start import warm_start

log = logging.getLogger(__name__)
__all__ = ["NonFiniteLossError", "TransducerModule", "UtteranceMean"]


class TransducerModule(pl.LightningModule):
    """Trains a :class:`Transducer` on batches of the :class:`TransducerDataModule`.

    Args:
        tokenizer_path: SentencePiece model; its size fixes the output layer, and its bytes are
            stored in every checkpoint so that a checkpoint alone can transcribe.
        preset: model size, one of ``tiny``, ``small``, ``medium``, ``large``.
        attention_context_size: ``[left, right]`` encoder frames each frame attends to after
            subsampling; ``-1`` is unlimited. ``[k, 0]`` with ``causal_conv`` gives a
            streaming model. A list of pairs trains one model for several contexts (the
            first is its default): each batch draws one (``rnnt.models.contexts``).
        attention_context_style: ``sliding`` (each frame sees ``right`` frames ahead) or
            ``chunked`` (frames in chunks of ``right + 1`` see their chunk: streams at that
            chunk).
        attention_context_probabilities: the chance each listed context has per batch (sum
            1); None: equal.
        causal_conv: convolutions see no future frames (for streaming).
        model_overrides: any other field of ``TransducerConfig``, e.g. ``{"num_layers": 8}``.
        learning_rate: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment coefficients.
        scheduler: ``noam`` or ``cosine`` (see ``rnnt/scheduler.py``).
        warmup_steps: optimizer steps of linear warmup.
        min_lr_ratio: final learning rate of ``cosine`` as a fraction of the peak.
        max_symbols_per_frame: greedy decoding cap used for the validation WER.
        max_nonfinite_steps: stop with an error after this many non-finite losses in a row
            (noticed at the next logging step: ``rnnt.optim.NonFiniteGuard``).
        log_text_examples: reference/hypothesis pairs written to TensorBoard each validation.
        init_from: a checkpoint whose weights the model starts from (fine-tuning: step 0, a
            fresh optimizer and schedule; ``--ckpt_path`` resumes a run instead). One of
            another tokenizer gives all but the vocabulary layers (``rnnt.warm_start``).
        compile: run the encoder through ``torch.compile`` (backend ``COMPILE_BACKEND``); its
            parameter names do not change, so checkpoints load into an uncompiled model.
        ema_decay: keep an exponential moving average of the weights with this decay per step
            (``rnnt.ema``): validation, testing and checkpoints' ``state_dict`` use it; 0 or
            None: none.
    """

    def __init__(
        self,
        tokenizer_path: str = TOKENIZER_MODEL_PATH,
        preset: str = MODEL_PRESET,
        attention_context_size: list[int] | list[list[int]] = ATTENTION_CONTEXT_SIZE,
        attention_context_style: str = ATTENTION_CONTEXT_STYLE,
        attention_context_probabilities: list[float] | None = None,
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
        init_from: str | None = None,
        compile: bool = COMPILE,
        ema_decay: float | None = EMA_DECAY,
    ) -> None:
        check_arguments("model", MODEL_RULES, locals())  # one line naming a wrong --model.* value
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = Tokenizer.load(tokenizer_path)
        config = config_from_preset(
            preset,
            self.tokenizer.num_classes,
            attention_context_size=list(attention_context_size),
            attention_context_style=attention_context_style,
            causal_conv=causal_conv,
            **(model_overrides or {}),
        )
        self.model = Transducer(config)
        if init_from:
            self.model = warm_start(self.model, self.tokenizer, init_from, tokenizer_path)
        # Metric objects sum their states over DDP ranks when computed: the validation
        # figures are those of the whole set, whatever the number of ranks.
        self.val_loss = UtteranceMean()
        self.test_loss = UtteranceMean()
        self.val_wer = WordErrorRate()
        self.test_wer = WordErrorRate()
        contexts = self.model.encoder.attention_contexts
        self.context_wers = context_metrics(contexts, ("val", "test"))
        self._contexts = ContextSampler(contexts, attention_context_probabilities)
        self._guard = NonFiniteGuard(max_nonfinite_steps)
        self._text_examples: list[tuple[str, str]] = []
        self._ema = ExponentialMovingAverage(ema_decay) if ema_decay else None

    def configure_callbacks(self) -> list[pl.Callback]:
        # The module owns its EMA: every trainer that fits it keeps one (rnnt fit, rnnt demo,
        # a plain Trainer), and its checkpoint hook below reaches it for every save.
        return [self._ema] if self._ema is not None else []

    def configure_model(self) -> None:
        # Lightning's hook before a run, in every process. Module.compile compiles the
        # encoder's call in place (no `_orig_mod.` in its parameter names), for dynamic shapes
        # from the start: every batch has its own shape.
        if self.hparams.compile:
            self.model.encoder.compile(backend=COMPILE_BACKEND, dynamic=True)

    # --- steps --------------------------------------------------------------------------
    def forward(
        self, batch: dict[str, Any], attention_context: list[int] | None = None
    ) -> torch.Tensor:
        """Mean transducer loss of a batch (float32 scalar), at ``attention_context`` (None:
        the model's default).

        The targets are not checked again (``TransducerDataset`` did), and the lengths the
        model needs on the host come from the batch's host lists: no device value is read.
        """
        return self.model(
            batch["audio"],
            batch["audio_lengths"],
            batch["targets"],
            batch["target_lengths"],
            host_audio_lengths=batch.get("host_audio_lengths"),
            host_target_lengths=batch.get("host_target_lengths"),
            validate=False,
            attention_context=attention_context,
        )

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # one process: every utterance failed to load (already counted)
            return None
        # Under DDP a batch that failed to load is stood in for (rnnt.data.dataset): this rank
        # must still run the step, since gradients are exchanged, but must not learn from it.
        stand_in = not _counts_any(batch)
        context = self._contexts.draw(self.global_step, batch_idx)  # the same on every rank
        loss = self._zero_loss() if stand_in else self(batch, context)
        # A NaN or infinite loss on any rank: every rank skips this update, decided on the
        # device (on_before_optimizer_step); backward still runs, so DDP's exchange pairs up.
        self._guard.update(loss, self.global_step)
        if not stand_in and logs_this_step(self.trainer):
            batch_size = len(batch["texts"])
            self.log("train_loss", loss, batch_size=batch_size)
            seconds = batch["audio_lengths"].sum().float() / SAMPLE_RATE
            self.log("train_audio_seconds", seconds, batch_size=batch_size)
        return loss

    def _zero_loss(self) -> torch.Tensor:
        # 0, reaching every trainable parameter: a backward pass that exchanges zero gradients.
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._guard.hand_to(optimizer, self.parameters())  # a fused AdamW skips on the device

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # One fused norm serves the clipping and the grad_norm log. (Lightning's mixed
        # precision plugin refuses to clip for a fused optimizer even in bf16, without a
        # gradient scaler; sharded or scaled gradients are left to Lightning's clipping.)
        logging = logs_this_step(self.trainer)
        if _whole_unscaled_gradients(self.trainer.precision_plugin):
            by_value = gradient_clip_algorithm == "value"
            norm = clip_gradients(self.parameters(), gradient_clip_val or 0.0, by_value, logging)
        else:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
            norm = total_grad_norm(self.parameters()) if logging else None
        if logging and norm is not None:
            self.log("grad_norm", norm, on_step=True, on_epoch=False)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The guard's counts are read when the trainer logs, every log_every_n_steps (every
        # max_nonfinite_steps steps with logging off): a stop may come that many steps late.
        if self.trainer.log_every_n_steps:
            due = logs_this_step(self.trainer)
        else:
            due = self.global_step % self.hparams.max_nonfinite_steps == 0
        if due:
            self._guard.check()

    def on_train_epoch_end(self) -> None:
        self._guard.check()

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val", self.val_loss, self.val_wer)

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test", self.test_loss, self.test_wer)

    def _evaluate(
        self,
        batch: dict[str, Any] | None,
        batch_idx: int,
        split: str,
        mean_loss: UtteranceMean,
        wer: WordErrorRate,
    ) -> None:
        if batch is None:
            return
        examples = evaluate_batch(self, batch, split, mean_loss, wer, self.context_wers)
        if split == "val" and batch_idx == 0:
            self._text_examples = examples[: self.hparams.log_text_examples]

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
        optimizer = adamw(
            self.named_parameters(),
            self.hparams.weight_decay,
            allow_fused=getattr(self.trainer.precision_plugin, "scaler", None) is None,
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
        if self._ema is not None:
            self._ema.store(checkpoint)  # EMA weights in state_dict, the trained ones beside

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resume, validate and test build the model from the configuration, then load weights
        # into it; fields that change what the weights mean but not their shapes would
        # mismatch silently (another front end's features: a WER near 100 %). The checkpoint's
        # values win: the model is rebuilt before its weights are loaded.
        if self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            use_raw_weights(checkpoint)  # resuming trains on the raw weights (rnnt.ema)
        if MODEL_CONFIG_KEY not in checkpoint:
            return
        path = getattr(self._trainer, "ckpt_path", None) or "the checkpoint"
        # Another vocabulary or model size: one line saying which, not a size-mismatch trace.
        check_weights_fit(checkpoint, self.model, self.tokenizer, path, self.hparams.tokenizer_path)
        stored = stored_config(checkpoint[MODEL_CONFIG_KEY])
        config = self.model.config
        differing = {
            field: getattr(stored, field)
            for field in WEIGHT_MEANING_FIELDS
            if hasattr(config, field) and getattr(stored, field) != getattr(config, field)
        }
        if not differing:
            return
        change = ", ".join(
            f"{field}={value!r} (configured: {getattr(config, field)!r})"
            for field, value in differing.items()
        )
        if self._trainer is not None and self.trainer.strategy.restore_checkpoint_after_setup:
            # The strategy has wrapped the model already; it cannot be swapped now.
            raise CheckpointError(
                f"{path}: its model was trained with {change}; set these in model.model_overrides"
            )
        log.warning("%s: the checkpoint's model was trained with %s; using that", path, change)
        self.model = Transducer(dataclasses.replace(config, **differing))
        self.configure_model()  # a rebuilt model is compiled again where asked

    @rank_zero_only
    def on_train_start(self) -> None:
        log.info(
            "model: %s preset, %.2fM parameters, %d output classes",
            self.hparams.preset,
            self.model.num_parameters() / 1e6,
            self.model.config.num_classes,
        )


def _counts_any(batch: dict[str, Any]) -> bool:
    # Whether any utterance counts (TransducerDataset), from the host list where there is one.
    if "host_counted" in batch:
        return any(batch["host_counted"])
    return "counted" not in batch or bool(batch["counted"].any())


def _whole_unscaled_gradients(plugin: object) -> bool:
    # Whether the gradients in the hooks are whole (not sharded) and not loss-scaled.
    from lightning.pytorch.plugins import precision as p

    plain = (p.Precision, p.MixedPrecision, p.HalfPrecision, p.DoublePrecision)
    return type(plugin) in plain and getattr(plugin, "scaler", None) is None
