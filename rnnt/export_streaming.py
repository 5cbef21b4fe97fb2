"""Export a streaming checkpoint to ONNX for sherpa-onnx's online NeMo-transducer recognizer.

``export_streaming_onnx`` writes ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` and
``tokens.txt`` that ``sherpa_onnx.OnlineRecognizer.from_transducer(...)`` loads and runs chunk by
chunk. sherpa-onnx picks its NeMo path because the decoder has more than one output; that path
is the one for a stateful (LSTM) prediction network and an encoder with explicit caches, as
ours. Shapes: N streams, F mel bins, T_c feature frames of a chunk, n encoder frames of a chunk,
L Conformer blocks, S cached attention frames (the context's ``left``), D model dimension, k
depthwise kernel, C the flat cache's length, J joiner dimension.

The contract, as sherpa-onnx 2.0.x runs it (inputs and outputs in this order; it reads none of
the names):

- ``encoder.onnx``: ``(features (N, F, T_c) float32, feature_lengths (N,) int64,
  cache_last_channel (N, L, S, 2D) float32, cache_last_time (N, 1, 1, C) float32,
  cache_last_channel_len (N,) int64)`` to ``(encoder_out (N, J, n), encoder_lengths (N,), and
  the three caches for the next chunk)``. sherpa starts every stream from zero caches, feeds
  ``window_size`` feature frames per call and moves on ``chunk_shift`` frames; both are the
  chunk (``T_c = factor * n``, no overlap), so every call is one whole chunk of
  :class:`rnnt.streaming.StreamingSession`. A call runs only once one frame more than the
  chunk is ready (10 ms later than ours), and the last partial chunk never runs: append
  ``chunk_ms`` plus 10 ms of silence before ``input_finished()``. Greedy search then emits at
  most 10 tokens per frame (``SHERPA_MAX_SYMBOLS_PER_FRAME``).
- The caches, packed into the fixed shapes sherpa keeps per stream (the ``cache_*_dim``
  metadata): ``cache_last_channel[:, l, :, :D]`` the attention keys of block ``l`` over the
  last S frames, heads side by side, rotated at their positions relative to the next chunk
  (-S .. -1); ``[..., D:]`` their values; ``cache_last_channel_len`` how many of the S are real
  (the newest; fewer at the start). ``cache_last_time`` is flat: each block's last ``k - 1``
  depthwise-convolution inputs ``(D, k - 1)``, then each striding stage's last input frame.
  Rotating keys relative to the chunk, not at absolute positions as
  :class:`rnnt.models.streaming_encoder.StreamingEncoder` does, changes the scores only by
  rounding and lets streams at different positions share one batch.
- ``decoder.onnx`` and ``joiner.onnx`` and ``tokens.txt``: as the offline export's
  (:mod:`rnnt.export`): blank is the last class, the joiner's projections run in the encoder
  and the decoder.
- Metadata: ``window_size``, ``chunk_shift``, ``cache_last_channel_dim1..3``,
  ``cache_last_time_dim1..3``, ``vocab_size`` (blank not counted), ``subsampling_factor``,
  ``pred_rnn_layers``, ``pred_hidden``, ``normalize_type`` (empty: CMVN is in the graph), the
  ``feature_*`` description of the training features (the offline export's) and of sherpa's
  (``feature_sherpa_online``), ``chunk_ms`` and ``attention_context``.

Features: sherpa-onnx's online NeMo recognizer computes its log-mel with a Hann window and mel
filters up to 8 kHz (``SHERPA_ONLINE_*`` constants), whatever the model says, where its
offline one and our ``"sherpa"`` front end use Kaldi's povey window and stop 400 Hz below. So
the encoder graph first maps sherpa's features onto the model's (``online_feature_map``:
``rnnt.export.feature_map`` between the two filter banks, plus the log of the two windows'
energy ratio): on the demo test audio the features then differ by 0.07 of each bin's spread
(0.25 unmapped), and the transcripts differ slightly from ``rnnt transcribe --streaming``'s
(README). ``sherpa_online_frontend`` computes sherpa's features, for tests and measurements.

The model must stream (causal convolutions; a context ``[left, 0]`` or a chunked one, the one
``rnnt.streaming.chunk_context`` picks for ``chunk_ms``, as ``rnnt transcribe --streaming``
does) with a limited left context (``left >= 0``: the cache has a fixed size).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rnnt.checkpoint import load_checkpoint
from rnnt.constants import (
    ONNX_OPSET,
    SHERPA_ONLINE_MEL_HIGH_FREQ_HZ,
    SHERPA_ONLINE_TAIL_EXTRA_MS,
    SHERPA_ONLINE_WINDOW_TYPE,
    STREAMING_CHUNK_MS,
)
from rnnt.export import (
    encoder_metadata,
    export_onnx,
    feature_map,
    onnx_export,
)
from rnnt.models.contexts import context_allows
from rnnt.models.encoder import apply_rotary, rotary_tables
from rnnt.models.features import LogMelFrontend
from rnnt.models.streaming_encoder import block_chunk, subsample_chunk
from rnnt.models.transducer import Transducer
from rnnt.streaming import chunk_context, chunk_feature_frames

CACHE_NAMES = ["cache_last_channel", "cache_last_time", "cache_last_channel_len"]


def sherpa_online_frontend(n_mels: int) -> LogMelFrontend:
    """The log-mel frames sherpa-onnx's online NeMo recognizer computes (2.0.x): the
    ``"sherpa"`` style's Slaney filters from 0 Hz, but up to ``SHERPA_ONLINE_MEL_HIGH_FREQ_HZ``
    and through a Hann window."""
    frontend = LogMelFrontend(
        n_mels=n_mels, high_freq_hz=SHERPA_ONLINE_MEL_HIGH_FREQ_HZ, style="sherpa"
    )
    # lhotse keeps the analysis window (win_length,) as wav2win._window
    frontend.fbank.wav2win._window = torch.hann_window(frontend.win_length, periodic=False)
    return frontend


def online_feature_map(model: Transducer) -> nn.Linear:
    """Affine map of sherpa's online log-mel ``(..., F)`` onto the model's own features.

    The filters are mapped by ``rnnt.export.feature_map``; a frame's energy through a window
    is about the sum of the window's squares times the signal's power, so the other window
    adds the log of that ratio to every bin.
    """
    ours, online = model.frontend.fbank, sherpa_online_frontend(model.config.n_mels).fbank
    weight, bias = feature_map(ours._fb, online._fb, model.frontend.sample_rate)
    energy = (
        ours.wav2win._window.double().pow(2).sum() / online.wav2win._window.double().pow(2).sum()
    )
    linear = nn.Linear(model.config.n_mels, model.config.n_mels)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias + energy.log().float())
    return linear


class SherpaStreamingEncoder(nn.Module):
    """One chunk of sherpa's features ``(N, F, T_c)`` and the packed caches to projected
    encoder frames ``(N, J, n)`` and the caches after the chunk (module docstring).

    Args:
        model: a streaming :class:`Transducer` (put in eval mode; its layers are shared).
        context: the attention context to stream at, ``[left, right]`` with ``left >= 0``.
        chunk_frames: feature frames per call, a multiple of the subsampling factor times the
            context's chunk.

    Raises ``ValueError`` for an unlimited left context (no fixed-size cache).
    """

    def __init__(self, model: Transducer, context: list[int], chunk_frames: int) -> None:
        super().__init__()
        if context[0] < 0:
            raise ValueError(
                f"attention context {context} has an unlimited left context (-1): a streaming "
                "export needs caches of a fixed size; train with a limited left context, e.g. "
                "--model.attention_context_size '[[32, 7], [-1, -1]]' (configs/streaming.yaml)."
            )
        model = model.eval()
        self.feature_map, self.normalizer = online_feature_map(model), model.normalizer
        self.encoder, self.encoder_proj = model.encoder, model.joiner.encoder_proj
        self.context, self.chunked = list(context), model.encoder.chunked
        self.chunk_frames = chunk_frames
        self.frames = chunk_frames // self.encoder.subsampling_factor  # n
        self.slots = max(context[0], 1)  # S (one never-valid slot for left = 0)
        first = self.encoder.blocks[0]
        self.num_heads, self.head_dim = first.attention.num_heads, first.attention.head_dim
        self.conv_width = first.convolution.kernel_size - 1
        self.stage_shapes = []  # (channels, bins) of each striding stage's input
        channels, bins = 1, model.config.n_mels
        for stage in self.encoder.subsampling.stages:
            self.stage_shapes.append((channels, bins))
            channels, bins = stage[0].out_channels, (bins + 1) // 2
        queries = torch.arange(self.frames)
        keys = torch.arange(-self.slots, self.frames)
        self.register_buffer("allowed", context_allows(queries, keys, context, self.chunked))
        cos, sin = rotary_tables(torch.tensor([-self.frames]), self.head_dim)
        self.register_buffer("shift_cos", cos)  # rotate by -n: next chunk's relative positions
        self.register_buffer("shift_sin", sin)

    def cache_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        """Shapes of ``cache_last_channel``, ``cache_last_time``, ``cache_last_channel_len``."""
        blocks, d_model = len(self.encoder.blocks), self.encoder.d_model
        flat = blocks * d_model * self.conv_width
        flat += sum(channels * bins for channels, bins in self.stage_shapes)
        return [
            (batch_size, blocks, self.slots, 2 * d_model),
            (batch_size, 1, 1, flat),
            (batch_size,),
        ]

    def initial_cache(self, batch_size: int) -> list[torch.Tensor]:
        """Zero caches, as sherpa-onnx starts each stream."""
        channel, time, length = self.cache_shapes(batch_size)
        return [torch.zeros(channel), torch.zeros(time), torch.zeros(length, dtype=torch.long)]

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        cache_last_channel: torch.Tensor,
        cache_last_time: torch.Tensor,
        cache_last_channel_len: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """``features (N, F, T_c)`` log-mel (sherpa's), ``feature_lengths (N,)`` (= T_c) and the
        caches to ``encoder_out (N, J, n)``, ``encoder_lengths (N,)`` and the next caches."""
        d_model, width, batch = self.encoder.d_model, self.conv_width, features.size(0)
        mel = self.feature_map(features.transpose(1, 2))
        hidden = self.normalizer(mel, feature_lengths)  # per frame in eval
        conv_caches, offset = [], 0
        for _ in self.encoder.blocks:
            size = d_model * width
            conv_caches.append(
                cache_last_time[:, 0, 0, offset : offset + size].reshape(-1, d_model, width)
            )
            offset += size
        stage_caches = []
        for channels, bins in self.stage_shapes:
            size = channels * bins
            stage_caches.append(
                cache_last_time[:, 0, 0, offset : offset + size].reshape(-1, channels, 1, bins)
            )
            offset += size
        hidden, stage_caches = subsample_chunk(self.encoder.subsampling, hidden, stage_caches)
        # Slot j holds the frame at relative position j - S; the newest `len` slots are real.
        slot = torch.arange(self.slots, device=features.device).view(1, -1)
        real = slot >= self.slots - cache_last_channel_len.view(-1, 1)  # (N, S)
        real = torch.cat((real, real.new_ones(batch, self.frames)), dim=1)
        mask = self.allowed.unsqueeze(0) & real.unsqueeze(1)  # (N, n, S + n)
        mask = mask.unsqueeze(1)  # (N, 1, n, S + n): every head
        positions = torch.arange(self.frames, device=features.device)
        channel, time = [], []
        for index, block in enumerate(self.encoder.blocks):
            keys, values = self._heads(cache_last_channel[:, index])
            hidden, keys, values, conv = block_chunk(
                block, hidden, keys, values, conv_caches[index], positions, mask, -1
            )
            # rotated at positions relative to this chunk: re-rotate them to the next one's
            keys = apply_rotary(keys[:, :, -self.slots :], self.shift_cos, self.shift_sin)
            channel.append(
                torch.cat((self._merge(keys), self._merge(values[:, :, -self.slots :])), dim=-1)
            )
            time.append(conv.reshape(batch, -1))
        time += [stage.reshape(batch, -1) for stage in stage_caches]
        next_length = (cache_last_channel_len + self.frames).clamp(max=self.context[0])
        encoder_lengths = torch.div(
            feature_lengths, self.encoder.subsampling_factor, rounding_mode="floor"
        )
        return (
            self.encoder_proj(hidden).transpose(1, 2),
            encoder_lengths,
            torch.stack(channel, dim=1),
            torch.cat(time, dim=1).view(batch, 1, 1, -1),
            next_length,
        )

    def _heads(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, S, 2D)`` to keys and values ``(N, H, S, Dh)`` each."""
        shape = (packed.size(0), self.slots, 2, self.num_heads, self.head_dim)
        keys, values = packed.reshape(shape).permute(2, 0, 3, 1, 4).unbind(0)
        return keys, values

    def _merge(self, heads: torch.Tensor) -> torch.Tensor:
        """``(N, H, S, Dh)`` to ``(N, S, D)``."""
        return heads.transpose(1, 2).reshape(heads.size(0), self.slots, -1)


def streaming_metadata(model: Transducer, encoder: SherpaStreamingEncoder) -> dict[str, str]:
    """The streaming encoder's ONNX metadata: the offline export's and what sherpa-onnx's
    online NeMo recognizer reads (chunking and cache shapes)."""
    channel, time, _ = encoder.cache_shapes(1)
    chunk_ms = encoder.chunk_frames * 1000 * model.frontend.hop_length // model.frontend.sample_rate
    metadata = encoder_metadata(model)
    metadata.update(
        {
            "window_size": str(encoder.chunk_frames),
            "chunk_shift": str(encoder.chunk_frames),
            **{f"cache_last_channel_dim{i}": str(channel[i]) for i in (1, 2, 3)},
            **{f"cache_last_time_dim{i}": str(time[i]) for i in (1, 2, 3)},
            "chunk_ms": str(chunk_ms),
            "feature_sherpa_online": (
                f"{SHERPA_ONLINE_WINDOW_TYPE} window, mel filters up to "
                f"{SHERPA_ONLINE_MEL_HIGH_FREQ_HZ:g} Hz: mapped onto the above in the graph"
            ),
            "attention_context": str(encoder.context),
            "model_type": "rnnt-lightning conformer transducer, streaming",
        }
    )
    metadata["comment"] = (
        f"Streaming, {chunk_ms} ms chunks with caches (rnnt/export_streaming.py). Inputs are "
        "sherpa-onnx's online NeMo log-mel features, mapped approximately onto those the model "
        "was trained on; the graph applies the model's global CMVN. Blank is the last class. "
        f"Append {chunk_ms + SHERPA_ONLINE_TAIL_EXTRA_MS} ms of silence before input_finished() "
        "to decode the last chunk."
    )
    return metadata


def streaming_encoder(
    model: Transducer, chunk_ms: int = STREAMING_CHUNK_MS
) -> SherpaStreamingEncoder:
    """The encoder ``export_streaming_onnx`` writes, streaming ``chunk_ms`` chunks at the
    context ``rnnt.streaming.chunk_context`` picks for them.

    Raises the ``ValueError`` of :class:`rnnt.streaming.StreamingSession` for a chunk that is
    not whole encoder frames or a model that cannot stream at it, and one for an unlimited left
    context.
    """
    model = model.eval()
    chunk_frames = chunk_feature_frames(model, chunk_ms)
    context = chunk_context(model, chunk_ms)
    return SherpaStreamingEncoder(model, context, chunk_frames).eval()


def export_streaming_onnx(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    chunk_ms: int = STREAMING_CHUNK_MS,
    opset: int = ONNX_OPSET,
    weights: str | None = None,
) -> dict[str, Path]:
    """Write the streaming ``encoder.onnx`` and ``decoder.onnx``, ``joiner.onnx``,
    ``tokens.txt`` for sherpa-onnx's ``OnlineRecognizer`` (module docstring).

    Args:
        checkpoint_path: a checkpoint of ``rnnt fit`` of a streaming model.
        out_dir: folder to write into (created; existing files of these names are replaced).
        chunk_ms: audio per chunk, ms (a multiple of one encoder frame, 40 ms at 4x).
        opset: ONNX opset version.
        weights: ``"ema"``, ``"raw"`` or None: as ``rnnt.checkpoint.load_checkpoint``'s.

    Returns:
        ``{"encoder": path, "decoder": path, "joiner": path, "tokens": path}``.

    Raises ``ValueError`` (``streaming_encoder``) before writing anything.
    """
    model, _ = load_checkpoint(checkpoint_path, map_location="cpu", weights=weights)
    encoder = streaming_encoder(model, chunk_ms)  # refuses a model that cannot stream
    # decoder.onnx, joiner.onnx and tokens.txt are the offline export's; its encoder.onnx is
    # replaced by the streaming one.
    paths = export_onnx(checkpoint_path, out_dir, opset, weights=weights)
    import onnx  # (export_onnx has said how to install it where it is missing)

    # Two streams, the second past its start: the batch stays an input, the lengths are used.
    caches = encoder.initial_cache(2)
    caches[2][1] = 1
    features = torch.randn(2, model.config.n_mels, encoder.chunk_frames)
    lengths = torch.full((2,), encoder.chunk_frames)
    inputs = ["features", "feature_lengths", *CACHE_NAMES]
    outputs = ["encoder_out", "encoder_lengths", *(f"next_{name}" for name in CACHE_NAMES)]
    onnx_export(
        encoder,
        (features, lengths, *caches),
        paths["encoder"],
        inputs,
        outputs,
        {name: {0: "N"} for name in inputs + outputs},
        opset,
    )
    encoder_model = onnx.load(str(paths["encoder"]))
    for key, value in streaming_metadata(model, encoder).items():
        entry = encoder_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(encoder_model, str(paths["encoder"]))
    return paths
