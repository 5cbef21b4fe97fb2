"""Chunk-by-chunk forward of a :class:`ConformerEncoder` with caches, equal to its full forward.

Shapes: B batch, T_c feature frames of a chunk, n encoder frames of a chunk, F mel bins,
D model dimension, H heads, Dh head dimension, C subsampling channels.

An encoder streams when no frame sees the future past its own subsampling block: attention
context ``[left, 0]`` (``left >= 0`` or -1 = all the past) and causal depthwise
convolutions. Then, fed ``factor * n`` feature frames at a time, it gives the same ``n``
encoder frames as the full forward of the whole utterance, because every layer gets from the
cache exactly the past it reads there:

- each striding convolution (3 frames, stride 2) reads one input frame before the block:
  the cache holds the last input frame of each stage (zeros at the start, like the padding);
- each attention layer reads the keys and values of the last ``left`` frames (or all), cached
  already rotated at their absolute positions; the chunk's mask is the full forward's
  ``[left, 0]`` mask restricted to the chunk's rows;
- each causal depthwise convolution reads the ``kernel_size - 1`` GLU outputs before the
  chunk (zeros at the start, like its left padding).

The layers are the encoder's own; only the order of work changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rnnt.models.encoder import (
    ConformerBlock,
    ConformerEncoder,
    ConvolutionModule,
    ConvSubsampling,
    RotarySelfAttention,
)

STREAMING_TRAINING_HINT = (
    "train a streaming model with --model.attention_context_size '[32, 0]' "
    "--model.causal_conv true (configs/streaming.yaml)"
)


def check_streamable(encoder: ConformerEncoder) -> None:
    """Raise ``ValueError`` unless ``encoder`` sees no future (context ``[left, 0]``, causal
    convolutions); the message says what the model has and how to train one that streams."""
    left, right = encoder.attention_context_size
    causal = all(block.convolution.causal for block in encoder.blocks)
    if right != 0 or not causal:
        raise ValueError(
            "streaming needs an encoder that sees no future frames: attention_context_size "
            f"[left, 0] and causal_conv=True, but this model has attention_context_size="
            f"[{left}, {right}] and causal_conv={causal}; {STREAMING_TRAINING_HINT}."
        )


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

    Raises ``ValueError`` (see :func:`check_streamable`) for an encoder that sees the future.
    """

    def __init__(self, encoder: ConformerEncoder) -> None:
        super().__init__()
        check_streamable(encoder)
        self.encoder = encoder
        self.left_context = encoder.attention_context_size[0]

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
                chunks. ``T_c`` must be a multiple of the subsampling factor except in the
                stream's last chunk, which the full forward's zero padding completes.
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
                f"not a multiple of subsampling_factor={factor}); start from initial_cache()."
            )
        hidden, subsampling = _subsample(self.encoder.subsampling, features, cache.subsampling)
        hidden = self.encoder.dropout(hidden)
        position = cache.encoder_frames
        keys, values, convolution = [], [], []
        for index, block in enumerate(self.encoder.blocks):
            hidden, block_keys, block_values, block_conv = _block_step(
                block,
                hidden,
                cache.keys[index],
                cache.values[index],
                cache.convolution[index],
                position,
                self.left_context,
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
            finished=frames % factor != 0,
        )
        return hidden, new_cache


def _subsample(
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


def _block_step(
    block: ConformerBlock,
    hidden: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    conv_cache: torch.Tensor,
    position: int,
    left: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Conformer block on ``(B, n, D)`` chunk frames; returns them and the new caches."""
    hidden = hidden + 0.5 * block.feed_forward_in(hidden)
    attended, keys, values = _attention_step(block.attention, hidden, keys, values, position, left)
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
    position: int,
    left: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunk frames at absolute ``position ..`` attend to the cached past and the chunk."""
    frames = hidden.size(1)
    positions = torch.arange(position, position + frames, device=hidden.device)
    query, key, value = attention.project(hidden, positions)  # each (B, H, n, Dh)
    keys = torch.cat((keys, key), dim=2)
    values = torch.cat((values, value), dim=2)
    cached = keys.size(2) - frames
    key_frames = torch.arange(keys.size(2), device=hidden.device) - cached
    offset = key_frames.view(1, -1) - torch.arange(frames, device=hidden.device).view(-1, 1)
    mask = offset <= 0
    if left >= 0:
        mask &= offset >= -left
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
