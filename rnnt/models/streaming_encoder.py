"""Chunk-by-chunk forward of a :class:`ConformerEncoder` with caches, equal to its full forward.

Shapes: B batch, T_c feature frames of a chunk, n encoder frames of a chunk, F mel bins,
D model dimension, H heads, Dh head dimension, C subsampling channels.

An encoder streams when no frame sees the future past its own chunk: causal depthwise
convolutions and an attention context ``[left, 0]`` (``left >= 0`` or -1 = all the past), or
a chunked context of ``C = right + 1`` frames (:mod:`rnnt.models.contexts`). Then, fed
``factor * n`` feature frames at a time (``n`` a multiple of ``C``), it gives the same ``n``
encoder frames as the full forward of the whole utterance at that context, because every
layer gets from the cache exactly the past it reads there:

- each striding convolution (3 frames, stride 2) reads one input frame before the block:
  the cache holds the last input frame of each stage (zeros at the start, like the padding);
- each attention layer reads the keys and values of the last ``left`` frames before the
  chunk (or all), cached already rotated at their absolute positions; the chunk's mask is the
  full forward's mask restricted to the chunk's rows (one rule for both:
  :func:`rnnt.models.contexts.context_allows`);
- each causal depthwise convolution reads the ``kernel_size - 1`` GLU outputs before the
  chunk (zeros at the start, like its left padding).

The layers are the encoder's own; only the order of work changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rnnt.models.contexts import context_allows, streaming_chunk
from rnnt.models.encoder import (
    ConformerBlock,
    ConformerEncoder,
    ConvolutionModule,
    ConvSubsampling,
    RotarySelfAttention,
)

STREAMING_TRAINING_HINT = (
    "train a streaming model with --model.attention_context_style chunked "
    "--model.attention_context_size '[[32, 7], [32, 3], [32, 15]]' --model.causal_conv true "
    "(configs/streaming.yaml)"
)


def streaming_context(
    encoder: ConformerEncoder, chunk_frames: int | None = None, frame_ms: float | None = None
) -> list[int]:
    """The context of ``encoder`` to stream with, in chunks of ``chunk_frames`` encoder frames.

    Among the encoder's contexts that stream (:func:`rnnt.models.contexts.streaming_chunk`),
    the one whose chunk is ``chunk_frames``, else the one with the largest chunk dividing it;
    ``chunk_frames=None``: the first context that streams.

    Raises ``ValueError`` for an encoder that sees the future (the message says what the model
    has and how to train one that streams) or whose chunks do not fit ``chunk_frames`` (it
    names the chunk sizes that do, in ms where ``frame_ms``, one encoder frame, is given).
    """
    contexts = encoder.attention_contexts
    causal = all(block.convolution.causal for block in encoder.blocks)
    chunks = {}
    for context in contexts:
        chunk = streaming_chunk(context, encoder.chunked)
        if chunk is not None and causal:
            chunks.setdefault(chunk, context)
    style = "chunked" if encoder.chunked else "sliding"
    if not chunks:
        raise ValueError(
            "streaming needs an encoder that sees no future frames past its chunk: causal_conv="
            "True and an attention context [left, 0] or a chunked one, but this model has "
            f"attention_context_size={_listed(contexts)} ({style}) and causal_conv={causal}; "
            f"{STREAMING_TRAINING_HINT}."
        )
    if chunk_frames is None:
        return next(iter(chunks.values()))
    if chunk_frames in chunks:
        return chunks[chunk_frames]
    fitting = [chunk for chunk in chunks if chunk_frames % chunk == 0]
    if not fitting:
        unit = " encoder frames" if frame_ms is None else " ms"
        scale = 1 if frame_ms is None else frame_ms
        sizes = ", ".join(f"{chunk * scale:g}" for chunk in sorted(chunks))
        raise ValueError(
            f"a chunk of {chunk_frames * scale:g}{unit} does not fit this model's streaming "
            f"contexts {_listed(contexts)} ({style}): it must be a multiple of one of "
            f"{sizes}{unit}."
        )
    return chunks[max(fitting)]


def _listed(contexts: list[list[int]]) -> list[int] | list[list[int]]:
    return contexts[0] if len(contexts) == 1 else contexts


@dataclass
class EncoderCache:
    """What a streaming encoder carries from one chunk to the next (one stream per batch row).

    Attributes:
        subsampling: per striding stage, its last input frame ``(B, C_in, 1, F_in)``; empty
            before the first chunk (zeros).
        keys: per block, rotated attention keys of the cached past frames ``(B, H, K, Dh)``,
            ``K <= left`` (all past frames when ``left = -1``).
        values: per block, the matching values ``(B, H, K, Dh)``.
        convolution: per block, the last ``kernel_size - 1`` GLU outputs ``(B, D, k - 1)``.
        feature_frames: feature frames consumed so far.
        encoder_frames: encoder frames given so far: the absolute position of the next one.
    """

    subsampling: list[torch.Tensor]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    convolution: list[torch.Tensor]
    feature_frames: int = 0
    encoder_frames: int = 0
    finished: bool = False  # the last chunk was partial: the stream has ended


class StreamingEncoder(nn.Module):
    """Runs a streaming-capable :class:`ConformerEncoder` chunk by chunk (its layers, shared).

    Args:
        encoder: the encoder.
        context: which of its attention contexts to stream at; None: the first that streams.

    Raises ``ValueError`` (see :func:`streaming_context`) for an encoder that sees the future
    or a ``context`` that does not stream.
    """

    def __init__(self, encoder: ConformerEncoder, context: list[int] | None = None) -> None:
        super().__init__()
        default = streaming_context(encoder)  # raises for an encoder that cannot stream
        context = default if context is None else list(context)
        chunk = streaming_chunk(context, encoder.chunked)
        if chunk is None:
            raise ValueError(f"attention context {context} sees past its chunk: it cannot stream.")
        self.chunk = chunk  # encoder frames: every chunk but the last is a multiple of it
        self.encoder = encoder
        self.context = context

    @property
    def subsampling_factor(self) -> int:
        return self.encoder.subsampling_factor

    def initial_cache(self, batch_size: int, device: torch.device | str) -> EncoderCache:
        """The cache before the first chunk: zeros where the full forward pads with zeros.

        The subsampling's caches start empty and are zeros of the right size at the first
        chunk (their mel bins follow from the features).
        """
        zeros = self.encoder.blocks[0].norm.weight.new_zeros
        keys, values, convolution = [], [], []
        for block in self.encoder.blocks:
            attention: RotarySelfAttention = block.attention
            keys.append(
                zeros(batch_size, attention.num_heads, 0, attention.head_dim, device=device)
            )
            values.append(keys[-1].clone())
            conv: ConvolutionModule = block.convolution
            width = conv.kernel_size - 1
            convolution.append(zeros(batch_size, self.encoder.d_model, width, device=device))
        return EncoderCache([], keys, values, convolution)

    def forward(
        self, features: torch.Tensor, cache: EncoderCache
    ) -> tuple[torch.Tensor, EncoderCache]:
        """Encode the next chunk of a stream.

        Args:
            features: ``(B, T_c, F)`` normalised log-mel frames that follow those of earlier
                chunks. ``T_c`` must be a multiple of the subsampling factor times the
                context's chunk (:attr:`chunk` encoder frames) except in the stream's last
                chunk, which the full forward's zero padding completes.
            cache: the cache :meth:`initial_cache` or the previous call returned.

        Returns:
            ``encoder_out (B, ceil(T_c / factor), D)``, the frames the full forward gives at
            these positions, and the cache for the next chunk.
        """
        factor = self.subsampling_factor
        frames = features.size(1)
        if cache.finished:
            raise ValueError(
                "StreamingEncoder: the previous chunk was the stream's last (its length was "
                f"not a multiple of {factor * self.chunk} feature frames: subsampling_factor="
                f"{factor} x {self.chunk} frames of the context's chunk); start from "
                "initial_cache()."
            )
        hidden, subsampling = subsample_chunk(self.encoder.subsampling, features, cache.subsampling)
        hidden = self.encoder.dropout(hidden)
        position = cache.encoder_frames
        # Every layer caches the same past frames: one mask and one set of positions serve all.
        positions = torch.arange(position, position + hidden.size(1), device=hidden.device)
        cached = cache.keys[0].size(2)
        key_positions = torch.arange(
            position - cached, position + hidden.size(1), device=hidden.device
        )
        mask = context_allows(positions, key_positions, self.context, self.encoder.chunked)
        keys, values, convolution = [], [], []
        for index, block in enumerate(self.encoder.blocks):
            hidden, block_keys, block_values, block_conv = block_chunk(
                block,
                hidden,
                cache.keys[index],
                cache.values[index],
                cache.convolution[index],
                positions,
                mask,
                self.context[0],
            )
            keys.append(block_keys)
            values.append(block_values)
            convolution.append(block_conv)
        new_cache = EncoderCache(
            subsampling=subsampling,
            keys=keys,
            values=values,
            convolution=convolution,
            feature_frames=cache.feature_frames + frames,
            encoder_frames=position + hidden.size(1),
            finished=frames % (factor * self.chunk) != 0,
        )
        return hidden, new_cache


def subsample_chunk(
    subsampling: ConvSubsampling, features: torch.Tensor, cache: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(B, T_c, F)`` to ``(B, ceil(T_c / factor), D)`` and the stages' new caches.

    The chunk is zero padded to whole blocks and each stage's input past the valid frames is
    zeroed, as the full forward does past an utterance's length.
    """
    factor = subsampling.factor
    valid = features.size(1)
    padded = -(-valid // factor) * factor
    hidden = F.pad(features, (0, 0, 0, padded - valid)).unsqueeze(1)  # (B, 1, T, F)
    new_cache = []
    for index, stage in enumerate(subsampling.stages):
        if valid < hidden.size(2):
            hidden = torch.cat((hidden[:, :, :valid], hidden[:, :, valid:].mul(0)), dim=2)
        previous = cache[index] if cache else torch.zeros_like(hidden[:, :, :1])
        hidden = torch.cat((previous, hidden), dim=2)
        new_cache.append(hidden[:, :, -1:])
        # Time comes padded by the cache, so the striding convolution pads mel bins only.
        conv: nn.Conv2d = stage[0]
        hidden = F.conv2d(
            hidden,
            conv.weight,
            conv.bias,
            stride=conv.stride,
            padding=(0, conv.padding[1]),
            groups=conv.groups,
        )
        hidden = stage[1:](hidden)
        valid = (valid + 1) // 2
    batch, channels, frames, bins = hidden.shape
    hidden = hidden.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins)
    return subsampling.output(hidden[:, :valid]), new_cache


def block_chunk(
    block: ConformerBlock,
    hidden: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    conv_cache: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor,
    left: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Conformer block on ``(B, n, D)`` chunk frames; returns them and the new caches."""
    hidden = hidden + 0.5 * block.feed_forward_in(hidden)
    attended, keys, values = _attention_step(
        block.attention, hidden, keys, values, positions, mask, left
    )
    hidden = hidden + attended
    convolved, conv_cache = _convolution_step(block.convolution, hidden, conv_cache)
    hidden = hidden + convolved
    hidden = hidden + 0.5 * block.feed_forward_out(hidden)
    return block.norm(hidden), keys, values, conv_cache


def _attention_step(
    attention: RotarySelfAttention,
    hidden: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor,
    left: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunk frames at absolute ``positions (n,)`` attend to the cached past and the chunk, as
    ``mask (n, K + n)`` (``context_allows``) lets them."""
    query, key, value = attention.project(hidden, positions)  # each (B, H, n, Dh)
    keys = torch.cat((keys, key), dim=2)
    values = torch.cat((values, value), dim=2)
    attended = attention.attend(query, keys, values, mask)
    if left >= 0:  # the next chunk's first frame reads at most `left` past frames
        start = max(keys.size(2) - left, 0)
        keys, values = keys[:, :, start:], values[:, :, start:]
    return attended, keys, values


def _convolution_step(
    conv: ConvolutionModule, hidden: torch.Tensor, cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal convolution module on ``(B, n, D)`` with the last GLU outputs ``(B, D, k - 1)``."""
    hidden = torch.cat((cache, conv.gate(hidden)), dim=2)  # (B, D, k - 1 + n)
    cache = hidden[:, :, hidden.size(2) - cache.size(2) :]
    return conv.convolve(hidden), cache
