"""The Conformer-Transducer: front end, encoder, prediction network and joiner in one module.

A plain ``nn.Module`` (no Lightning), so that inference and export never import the training
stack. Shapes: B batch, S samples (16 kHz), T' encoder frames, U target tokens, V classes
(vocabulary + blank), D encoder dimension, H prediction dimension.

Presets (``config_from_preset``); parameters counted by ``Transducer.num_parameters()``
(trainable; the front end has none) for V = 129 and V = 1025 output classes. All use 4x
subsampling, feed-forward 4 x d_model, a 1-layer LSTM prediction network and kernel-15
convolutions. CPU time: one forward + backward + Adam step of 32 utterances x 3 s.

======  =======  ======  =====  ========  ==========  ======  =======  =================
preset  d_model  layers  heads  sub. ch.  LSTM / J    V=129   V=1025   CPU step (2 cores)
======  =======  ======  =====  ========  ==========  ======  =======  =================
tiny    144      4       4      64        160 / 256   2.46M   2.84M    ~0.9 s
small   256      6       4      128       320 / 320   10.8M   11.3M    GPU
medium  384      8       6      192       512 / 512   31.2M   32.0M    GPU
large   512      17      8      256       640 / 640   109.4M  110.5M   GPU
======  =======  ======  =====  ========  ==========  ======  =======  =================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnt.constants import (
    ATTENTION_CONTEXT_SIZE,
    ATTENTION_CONTEXT_STYLE,
    BLANK_ID,
    CAUSAL_CONV,
    CONV_KERNEL_SIZE,
    CTC_WEIGHT,
    DROPOUT,
    FRONTEND_STYLE,
    JOINER_ACTIVATION,
    N_MELS,
    SUBSAMPLING_CHANNELS,
    SUBSAMPLING_FACTOR,
)
from rnnt.loss import fused_rnnt_loss
from rnnt.models.contexts import as_contexts, check_style
from rnnt.models.decoder import PredictionNetwork
from rnnt.models.encoder import ConformerEncoder
from rnnt.models.features import LogMelFrontend, check_frontend_style
from rnnt.models.joiner import Joiner
from rnnt.models.normalizer import FeatureNormalizer
from rnnt.models.specaugment import SpecAugment


@dataclass
class TransducerConfig:
    """Every hyper-parameter of a :class:`Transducer`, as plain JSON/YAML-serialisable types."""

    num_classes: int  # V: vocabulary size + 1 (blank)
    n_mels: int = N_MELS
    # "sherpa" (sherpa-onnx's NeMo log-mel, exact in exports) or "kaldi" (Kaldi fbank); a
    # checkpoint without this key predates it and is "kaldi" (rnnt.checkpoint.stored_config).
    frontend_style: str = FRONTEND_STYLE
    d_model: int = 144
    num_layers: int = 4
    num_heads: int = 4
    ff_mult: int = 4
    conv_kernel_size: int = CONV_KERNEL_SIZE
    subsampling_factor: int = SUBSAMPLING_FACTOR
    subsampling_channels: int = SUBSAMPLING_CHANNELS
    # [left, right], or a list of them (multi-lookahead; the first is the default)
    attention_context_size: list[int] | list[list[int]] = field(
        default_factory=lambda: list(ATTENTION_CONTEXT_SIZE)
    )
    # "sliding" or "chunked" (rnnt.models.contexts); a checkpoint without it is "sliding"
    attention_context_style: str = ATTENTION_CONTEXT_STYLE
    causal_conv: bool = CAUSAL_CONV
    dropout: float = DROPOUT
    pred_embed_dim: int = 160
    pred_hidden_dim: int = 160
    pred_num_layers: int = 1
    joiner_dim: int = 256
    joiner_activation: str = JOINER_ACTIVATION
    spec_augment: bool = True
    # memory budget of one chunk of the fused loss, bytes; None: the device's default
    loss_chunk_bytes: int | None = None
    ctc_weight: float = CTC_WEIGHT
    blank_id: int = BLANK_ID

    def __post_init__(self) -> None:
        contexts = as_contexts(self.attention_context_size)
        listed = isinstance(self.attention_context_size[0], (list, tuple))
        self.attention_context_size = contexts if listed else contexts[0]
        check_style(self.attention_context_style)
        if self.num_classes < 2:
            raise ValueError(
                f"TransducerConfig.num_classes={self.num_classes}: needs blank plus at least "
                "one token (num_classes = tokenizer vocab_size + 1)."
            )
        if not 0 <= self.blank_id < self.num_classes:
            raise ValueError(
                f"TransducerConfig.blank_id={self.blank_id} is outside [0, {self.num_classes})."
            )
        check_frontend_style(self.frontend_style)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (ints, floats, bools, strings, lists) for checkpoints and YAML."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TransducerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"TransducerConfig has no field(s) {unknown}; known fields: {sorted(known)}."
            )
        return cls(**values)


# Sizes for the model presets; every other field keeps its TransducerConfig default.
PRESETS: dict[str, dict[str, Any]] = {
    # Trains on 2 CPU cores in minutes (the demo).
    "tiny": {
        "d_model": 144,
        "num_layers": 4,
        "num_heads": 4,
        "ff_mult": 4,
        "subsampling_channels": 64,
        "pred_embed_dim": 160,
        "pred_hidden_dim": 160,
        "pred_num_layers": 1,
        "joiner_dim": 256,
    },
    "small": {
        "d_model": 256,
        "num_layers": 6,
        "num_heads": 4,
        "ff_mult": 4,
        "subsampling_channels": 128,
        "pred_embed_dim": 256,
        "pred_hidden_dim": 320,
        "pred_num_layers": 1,
        "joiner_dim": 320,
    },
    "medium": {
        "d_model": 384,
        "num_layers": 8,
        "num_heads": 6,
        "ff_mult": 4,
        "subsampling_channels": 192,
        "pred_embed_dim": 384,
        "pred_hidden_dim": 512,
        "pred_num_layers": 1,
        "joiner_dim": 512,
    },
    "large": {
        "d_model": 512,
        "num_layers": 17,
        "num_heads": 8,
        "ff_mult": 4,
        "subsampling_channels": 256,
        "pred_embed_dim": 512,
        "pred_hidden_dim": 640,
        "pred_num_layers": 1,
        "joiner_dim": 640,
    },
}


def config_from_preset(preset: str, num_classes: int, **overrides: Any) -> TransducerConfig:
    """The :class:`TransducerConfig` of ``preset`` for ``num_classes`` outputs, with overrides.

    Args:
        preset: one of ``PRESETS`` (``tiny``, ``small``, ``medium``, ``large``).
        num_classes: V, tokenizer vocabulary size + 1 (blank).
        overrides: any other ``TransducerConfig`` field, e.g. ``num_layers=8``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}.")
    return TransducerConfig.from_dict({**PRESETS[preset], **overrides, "num_classes": num_classes})


class Transducer(nn.Module):
    """Conformer-Transducer from raw 16 kHz audio to the RNN-T loss or token ids."""

    def __init__(self, config: TransducerConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = LogMelFrontend(n_mels=config.n_mels, style=config.frontend_style)
        self.normalizer = FeatureNormalizer(n_mels=config.n_mels)
        self.spec_augment = SpecAugment() if config.spec_augment else None
        self.encoder = ConformerEncoder(
            n_mels=config.n_mels,
            d_model=config.d_model,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            ff_mult=config.ff_mult,
            conv_kernel_size=config.conv_kernel_size,
            subsampling_factor=config.subsampling_factor,
            subsampling_channels=config.subsampling_channels,
            attention_context_size=config.attention_context_size,
            causal_conv=config.causal_conv,
            dropout=config.dropout,
            attention_context_style=config.attention_context_style,
        )
        self.decoder = PredictionNetwork(
            num_classes=config.num_classes,
            embed_dim=config.pred_embed_dim,
            hidden_dim=config.pred_hidden_dim,
            num_layers=config.pred_num_layers,
            dropout=config.dropout,
            blank_id=config.blank_id,
        )
        # An auxiliary CTC head on the encoder: it makes the encoder learn acoustics from the
        # first steps, where the transducer alone first learns a text prior (much faster
        # convergence on small data); unused at inference.
        self.ctc_head = (
            nn.Linear(config.d_model, config.num_classes) if config.ctc_weight > 0 else None
        )
        self.joiner = Joiner(
            encoder_dim=config.d_model,
            predictor_dim=config.pred_hidden_dim,
            joiner_dim=config.joiner_dim,
            num_classes=config.num_classes,
            activation=config.joiner_activation,
        )

    def num_parameters(self) -> int:
        """Trainable parameters (the log-mel front end has none)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def encode(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        max_audio_length: int | None = None,
        attention_context: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio to encoder frames.

        Args:
            audio: ``(B, S)`` float waveforms at 16 kHz in ``[-1, 1]``, padded.
            audio_lengths: ``(B,)`` valid samples.
            max_audio_length: ``max(audio_lengths)`` if the caller knows it on the host;
                else the front end reads it from the device.
            attention_context: the encoder's ``[left, right]`` for this call; None: its
                default (the first listed).

        Returns:
            ``encoder_out (B, T', D)`` (0 past each utterance) and ``encoder_lengths (B,)``.
            SpecAugment is applied in training mode only.
        """
        features, feature_lengths = self.frontend(audio, audio_lengths, max_audio_length)
        features = self.normalizer(features, feature_lengths)
        if self.spec_augment is not None:
            features = self.spec_augment(features, feature_lengths)
        return self.encoder(features, feature_lengths, attention_context)

    def forward(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
        *,
        host_audio_lengths: Sequence[int] | None = None,
        host_target_lengths: Sequence[int] | None = None,
        validate: bool = True,
        attention_context: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Training objective: mean RNN-T loss over utterances, plus ``ctc_weight`` times the
        auxiliary CTC loss when that is on (float32 scalar, nats per utterance).

        Args:
            audio: ``(B, S)`` float waveforms at 16 kHz, padded.
            audio_lengths: ``(B,)`` valid samples.
            targets: ``(B, U)`` token ids in ``[1, V)``, padded past ``target_lengths``.
            target_lengths: ``(B,)`` valid tokens.
            host_audio_lengths, host_target_lengths: the same lengths as B Python ints, where
                the caller has them on the host (the data loader does). With both and
                ``validate=False`` the objective reads no device value on the host: the
                padded frame count and the CTC lengths come from them.
            validate: check the targets' ids and the lengths' ranges in the loss (a host read
                of each); ``rnnt.data.dataset`` has checked a training batch already.
            attention_context: the encoder's ``[left, right]`` for this batch (multi-lookahead
                training draws one per batch); None: its default.
        """
        if targets.dim() != 2 or targets.size(0) != audio.size(0):
            raise ValueError(
                f"targets must be (B, U) with B = {audio.size(0)} like audio, got "
                f"{tuple(targets.shape)}."
            )
        longest = None if host_audio_lengths is None else max(host_audio_lengths, default=0)
        encoder_out, encoder_lengths = self.encode(audio, audio_lengths, longest, attention_context)
        host_encoder_lengths = None
        if host_audio_lengths is not None:
            host_encoder_lengths = self.host_encoder_lengths(host_audio_lengths)
        return self.loss(
            encoder_out,
            encoder_lengths,
            targets,
            target_lengths,
            host_encoder_lengths=host_encoder_lengths,
            host_target_lengths=host_target_lengths,
            validate=validate,
        )

    def host_encoder_lengths(self, audio_lengths: Sequence[int]) -> torch.Tensor:
        """``(B,)`` int64 CPU tensor: the ``encoder_lengths`` that :meth:`encode` gives for
        utterances of ``audio_lengths`` samples, computed on the host."""
        samples = torch.tensor(list(audio_lengths), dtype=torch.int64)
        return self.encoder.subsampling.output_lengths(self.frontend.num_frames(samples))

    def loss(
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
        *,
        host_encoder_lengths: torch.Tensor | None = None,
        host_target_lengths: Sequence[int] | None = None,
        validate: bool = True,
    ) -> torch.Tensor:
        """The training objective of :meth:`forward` from encoder frames ``(B, T', D)``.

        Lets validation encode once for both the loss and greedy decoding. The host lengths
        (``host_encoder_lengths`` from :meth:`host_encoder_lengths`) serve the CTC term.
        """
        targets = targets.to(encoder_out.device)
        target_lengths = target_lengths.to(encoder_out.device)
        decoder_out = self.decoder(targets, target_lengths)
        loss = fused_rnnt_loss(
            self.joiner.encoder_proj(encoder_out),
            self.joiner.predictor_proj(decoder_out),
            self.joiner.output.weight,
            self.joiner.output.bias,
            targets,
            encoder_lengths,
            target_lengths,
            blank=self.config.blank_id,
            activation=self.joiner.activation,
            chunk_bytes=self.config.loss_chunk_bytes,
            validate=validate,
        )
        if self.ctc_head is None:
            return loss
        if host_encoder_lengths is not None:
            encoder_lengths = host_encoder_lengths
        if host_target_lengths is not None:
            target_lengths = torch.tensor(list(host_target_lengths), dtype=torch.int64)
        return loss + self.config.ctc_weight * self.ctc_loss(
            encoder_out, encoder_lengths, targets, target_lengths
        )

    def ctc_loss(
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Mean CTC loss of the auxiliary head over utterances (float32, nats per utterance).

        ``encoder_out (B, T', D)``, ``targets (B, U)``; blank is the transducer's blank.
        Utterances too short for their targets contribute zero instead of infinity. The
        ``(B,)`` lengths may be CPU tensors: ``F.ctc_loss`` reads them on the host, so device
        ones would be copied back, a sync on a GPU.
        """
        with torch.autocast(encoder_out.device.type, enabled=False):
            log_probs = self.ctc_head(encoder_out.float()).log_softmax(dim=-1)
            losses = F.ctc_loss(
                log_probs.transpose(0, 1),
                targets,
                encoder_lengths,
                target_lengths,
                blank=self.config.blank_id,
                reduction="none",
                zero_infinity=True,
            )
        return losses.mean()
