"""Conformer encoder with a limited attention context, ready for streaming.

Shapes: B batch, T feature frames (10 ms), T' encoder frames after subsampling, F mel bins,
D model dimension, H heads.

Every part is built so that a chunked forward with caches (``StreamingEncoder`` in
``rnnt/models/streaming_encoder.py``) gives the same output as the full forward, and so that
padding never reaches valid frames:

- the subsampling looks no further ahead than its own block: encoder frame ``t'`` reads
  feature frames ``factor * t' - (factor - 1) .. factor * t' + (factor - 1)``, so a chunk of
  ``factor * n`` feature frames (plus a small left cache) gives ``n`` encoder frames;
- attention uses rotary position embeddings (relative, no absolute table to outgrow) and an
  additive mask of padding and the ``[left, right]`` context limit, one for all layers
  (``rnnt.models.masks.attention_mask``; without a limit it masks keys only, ``(B, 1, 1, T')``,
  which SDPA's memory-efficient kernel takes as it is);
- the convolution module normalises with LayerNorm (per frame, unlike BatchNorm) and its
  depthwise convolution may be causal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rnnt.constants import (
    ATTENTION_CONTEXT_SIZE,
    ATTENTION_CONTEXT_STYLE,
    CAUSAL_CONV,
    CONV_KERNEL_SIZE,
    DROPOUT,
    ROPE_BASE,
    SUBSAMPLING_CHANNELS,
    SUBSAMPLING_FACTOR,
)
from rnnt.models.contexts import as_contexts, check_style
from rnnt.models.masks import attention_dtype, attention_mask, padding_mask

SUBSAMPLING_FACTORS = (4, 8)
_SUBSAMPLING_KERNEL = 3  # every striding convolution: 3 frames x 3 bins, stride 2


class ConvSubsampling(nn.Module):
    """Striding 2-D convolutions over (time, mel) that shorten time by ``factor`` (4 or 8).

    The first convolution is a full 3x3 from one channel; each further halving is a
    depthwise 3x3 plus a pointwise convolution (cheap on a CPU). Each 3x3 stride-2 layer maps
    ``T`` frames to ``ceil(T / 2)``, output ``t`` reading inputs ``2t - 1 .. 2t + 1``; so
    encoder frame ``t'`` sees feature frames up to the end of its own block of ``factor``
    frames and no further. Inputs past each utterance's length are zeroed before every
    striding layer, so valid frames see the zeros an unpadded utterance is padded with.
    """

    def __init__(
        self,
        n_mels: int,
        d_model: int,
        factor: int = SUBSAMPLING_FACTOR,
        channels: int = SUBSAMPLING_CHANNELS,
    ) -> None:
        super().__init__()
        if factor not in SUBSAMPLING_FACTORS:
            raise ValueError(
                f"subsampling_factor={factor} is not supported; use one of {SUBSAMPLING_FACTORS}."
            )
        self.factor = factor
        kernel, padding = _SUBSAMPLING_KERNEL, _SUBSAMPLING_KERNEL // 2
        stages = [
            nn.Sequential(nn.Conv2d(1, channels, kernel, stride=2, padding=padding), nn.SiLU())
        ]
        for _ in range(factor.bit_length() - 2):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(
                        channels, channels, kernel, stride=2, padding=padding, groups=channels
                    ),
                    nn.Conv2d(channels, channels, 1),
                    nn.SiLU(),
                )
            )
        self.stages = nn.ModuleList(stages)
        out_bins = n_mels
        for _ in stages:
            out_bins = (out_bins + 1) // 2
        self.output = nn.Linear(channels * out_bins, d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames ``ceil(T / factor)`` for ``T`` feature frames, ``(B,)``."""
        return torch.div(lengths + self.factor - 1, self.factor, rounding_mode="floor")

    def forward(
        self, features: torch.Tensor, feature_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, F)`` features to ``(B, T', D)`` frames and ``(B,)`` lengths ``ceil(T/factor)``."""
        hidden = features.unsqueeze(1)  # (B, 1, T, F)
        lengths = feature_lengths
        for stage in self.stages:
            valid = padding_mask(lengths, hidden.size(2)).view(hidden.size(0), 1, -1, 1)
            hidden = stage(hidden.masked_fill(~valid, 0.0))
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        batch, channels, frames, bins = hidden.shape
        hidden = hidden.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins)
        return self.output(hidden), lengths


class FeedForward(nn.Module):
    """Pre-norm feed-forward: LayerNorm, Linear D->ff_mult*D, SiLU, dropout, Linear, dropout."""

    def __init__(self, d_model: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.hidden = nn.Linear(d_model, ff_mult * d_model)
        self.output = nn.Linear(ff_mult * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T', D)`` to ``(B, T', D)`` (the residual branch, not yet added)."""
        hidden = self.dropout(F.silu(self.hidden(self.norm(hidden))))
        return self.dropout(self.output(hidden))


def rotary_tables(
    positions: torch.Tensor, head_dim: int, base: float = ROPE_BASE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``(T', head_dim / 2)`` of rotary embeddings at ``positions``.

    Streaming later passes absolute positions of a chunk; only differences matter to the
    attention scores.
    """
    inverse_frequency = base ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    angles = positions.float().unsqueeze(1) * inverse_frequency.unsqueeze(0)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the last dim of ``x (B, H, T', Dh)``."""
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
    return rotated.to(x.dtype)


class RotarySelfAttention(nn.Module):
    """Multi-head self-attention with rotary position embeddings on queries and keys."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads != 0 or (d_model // num_heads) % 2 != 0:
            raise ValueError(
                f"d_model={d_model} must split into num_heads={num_heads} heads of an even "
                "size (rotary embeddings rotate pairs); change d_model or num_heads."
            )
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.output = nn.Linear(d_model, d_model)
        self.attention_dropout = dropout
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T', D)`` and an :func:`attention_mask` (or a bool mask, True = attend)
        broadcasting to ``(B, H, T', T')``, to ``(B, T', D)``."""
        positions = torch.arange(hidden.size(1), device=hidden.device)
        query, key, value = self.project(hidden, positions)
        return self.attend(query, key, value, mask)

    def project(
        self, hidden: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries and keys rotated to ``positions (T',)``, and values, each ``(B, H, T', Dh)``."""
        batch, frames, _ = hidden.shape
        qkv = self.qkv(self.norm(hidden)).view(batch, frames, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        cos, sin = rotary_tables(positions, self.head_dim)
        return apply_rotary(query, cos, sin), apply_rotary(key, cos, sin), value

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Queries ``(B, H, T', Dh)`` over keys/values ``(B, H, K, Dh)`` with a mask (bool, True
        = attend, or additive) broadcasting to ``(B, H, T', K)``, to the output ``(B, T', D)``."""
        if mask.dtype != torch.bool and mask.dtype != query.dtype:
            mask = mask.to(query.dtype)  # an additive mask must match the queries
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        batch, _, frames, _ = query.shape
        attended = attended.transpose(1, 2).reshape(batch, frames, -1)
        return self.dropout(self.output(attended))


class ConvolutionModule(nn.Module):
    """Pointwise-GLU, depthwise convolution, LayerNorm, SiLU, pointwise (Conformer).

    Padded frames are zeroed before the depthwise convolution, so valid frames see the same
    zeros an unpadded utterance gets from the convolution's own padding. ``causal=True``
    pads on the left only: frame ``t`` sees frames ``t - kernel_size + 1 .. t``.
    """

    def __init__(self, d_model: int, kernel_size: int, causal: bool, dropout: float) -> None:
        super().__init__()
        if kernel_size < 1 or (not causal and kernel_size % 2 == 0):
            raise ValueError(
                f"conv_kernel_size={kernel_size} must be a positive odd number for a "
                "symmetric (non-causal) convolution; use an odd size or causal_conv=True."
            )
        self.kernel_size = kernel_size
        self.causal = causal
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``(B, T', D)`` and ``(B, T')`` bool valid frames to ``(B, T', D)``."""
        hidden = self.gate(hidden).masked_fill(~valid.unsqueeze(1), 0.0)  # (B, D, T')
        if self.causal:
            hidden = F.pad(hidden, (self.kernel_size - 1, 0))
        else:
            half = (self.kernel_size - 1) // 2
            hidden = F.pad(hidden, (half, half))
        return self.convolve(hidden)

    def gate(self, hidden: torch.Tensor) -> torch.Tensor:
        """LayerNorm, pointwise and GLU: ``(B, T', D)`` to the depthwise input ``(B, D, T')``."""
        return F.glu(self.pointwise_in(self.norm(hidden)), dim=-1).transpose(1, 2)

    def convolve(self, padded: torch.Tensor) -> torch.Tensor:
        """Depthwise convolution of ``(B, D, T' + kernel_size - 1)`` (context included) and the
        rest of the module, to ``(B, T', D)``."""
        hidden = self.depthwise(padded).transpose(1, 2)
        hidden = self.pointwise_out(F.silu(self.depthwise_norm(hidden)))
        return self.dropout(hidden)


class ConformerBlock(nn.Module):
    """Half feed-forward, self-attention, convolution, half feed-forward, LayerNorm."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_mult: int,
        conv_kernel_size: int,
        causal_conv: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.feed_forward_in = FeedForward(d_model, ff_mult, dropout)
        self.attention = RotarySelfAttention(d_model, num_heads, dropout)
        self.convolution = ConvolutionModule(d_model, conv_kernel_size, causal_conv, dropout)
        self.feed_forward_out = FeedForward(d_model, ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """``(B, T', D)`` with an :func:`attention_mask` and valid frames ``(B, T')``."""
        hidden = hidden + 0.5 * self.feed_forward_in(hidden)
        hidden = hidden + self.attention(hidden, mask)
        hidden = hidden + self.convolution(hidden, valid)
        hidden = hidden + 0.5 * self.feed_forward_out(hidden)
        return self.norm(hidden)


class ConformerEncoder(nn.Module):
    """Log-mel frames to encoder frames: convolutional subsampling, then Conformer blocks.

    Args:
        n_mels: F, mel bins of the input.
        d_model: D, model dimension.
        num_layers: Conformer blocks.
        num_heads: attention heads (``D / num_heads`` must be even).
        ff_mult: feed-forward hidden size as a multiple of D.
        conv_kernel_size: depthwise convolution kernel (odd unless causal).
        subsampling_factor: 4 or 8.
        subsampling_channels: channels of the subsampling convolutions.
        attention_context_size: ``[left, right]`` encoder frames each frame attends to; -1 =
            unlimited on that side; or a list of such contexts, the first the default
            (:mod:`rnnt.models.contexts`). ``[k, 0]`` with ``causal_conv`` gives a streaming
            encoder, as does any chunked context.
        attention_context_style: ``sliding`` or ``chunked``: how ``[left, right]`` reads.
        causal_conv: depthwise convolutions see no future frames.
        dropout: dropout probability everywhere.
    """

    def __init__(
        self,
        n_mels: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ff_mult: int,
        conv_kernel_size: int = CONV_KERNEL_SIZE,
        subsampling_factor: int = SUBSAMPLING_FACTOR,
        subsampling_channels: int = SUBSAMPLING_CHANNELS,
        attention_context_size: Sequence[int] | Sequence[Sequence[int]] = tuple(
            ATTENTION_CONTEXT_SIZE
        ),
        causal_conv: bool = CAUSAL_CONV,
        dropout: float = DROPOUT,
        attention_context_style: str = ATTENTION_CONTEXT_STYLE,
    ) -> None:
        super().__init__()
        check_style(attention_context_style)
        self.attention_contexts = as_contexts(attention_context_size)
        self.attention_context_size = self.attention_contexts[0]  # the default
        self.chunked = attention_context_style == "chunked"
        self.subsampling = ConvSubsampling(
            n_mels, d_model, subsampling_factor, subsampling_channels
        )
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ff_mult, conv_kernel_size, causal_conv, dropout)
            for _ in range(num_layers)
        )
        self.d_model = d_model

    @property
    def subsampling_factor(self) -> int:
        return self.subsampling.factor

    def use_context(self, context: Sequence[int]) -> None:
        """Make ``context``, one of :attr:`attention_contexts`, the default of later calls
        (e.g. the full context ``[-1, -1]`` of a multi-lookahead model, offline). Raises
        ``ValueError`` naming the listed contexts for another."""
        context = [int(side) for side in context]
        if context not in self.attention_contexts:
            listed = self.attention_contexts
            raise ValueError(
                f"attention context {context} is not one this model was trained at: {listed}."
            )
        self.attention_context_size = context

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        context: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            features: ``(B, T, F)`` log-mel frames, padded.
            feature_lengths: ``(B,)`` valid frames.
            context: the attention context ``[left, right]`` to use (in the encoder's style);
                None: the default, the first of ``attention_contexts``.

        Returns:
            ``encoder_out (B, T', D)`` (0 on padded frames) and ``encoder_lengths (B,)`` =
            ``ceil(feature_lengths / subsampling_factor)``, ``T' = ceil(T / factor)``.
        """
        hidden, lengths = self.subsampling(features, feature_lengths.to(features.device))
        frames = hidden.size(1)
        valid = padding_mask(lengths, frames)
        context = self.attention_context_size if context is None else context
        mask = attention_mask(lengths, frames, context, attention_dtype(hidden), self.chunked)
        hidden = self.dropout(hidden)
        for block in self.blocks:
            hidden = block(hidden, mask, valid)
        return hidden.masked_fill(~valid.unsqueeze(-1), 0.0), lengths
