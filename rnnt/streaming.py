"""Streaming recognition: audio in pieces in, partial token ids out, chunk by chunk.

A :class:`StreamingSession` buffers the audio it is given and, each time a chunk of
``chunk_ms`` has arrived (plus the few samples the last feature window reaches past it),
computes that chunk's log-mel frames, runs the encoder on them with its caches
(:class:`rnnt.models.streaming_encoder.StreamingEncoder`) and continues greedy decoding (or
modified beam search, optionally biased towards hotwords) from where the previous chunk
stopped. The encoder frames equal those of the full forward
(``Transducer.encode``) of the whole utterance at the context streamed at, so the final ids
equal :func:`rnnt.decoding.greedy_search`'s on them. This needs a model that sees no future
frames past the chunk (causal convolutions; an attention context ``[left, 0]`` or a chunked
one); others are refused with a ``ValueError`` saying how to train one.

Shapes: S samples (16 kHz), T_c feature frames of a chunk, n encoder frames of a chunk,
D encoder dimension, H prediction dimension, J joiner dimension.

It sits beside :mod:`rnnt.decoding`, above the model: it uses the model's parts, and the
model never imports it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from rnnt.beam import BeamSearch, check_beam_size
from rnnt.constants import MAX_SYMBOLS_PER_FRAME, STREAMING_CHUNK_MS, STREAMING_FEED_MS
from rnnt.models.features import LogMelStream
from rnnt.models.streaming_encoder import StreamingEncoder, streaming_context
from rnnt.timestamps import (
    Alignment,
    EnergyMeter,
    WordTiming,
    frame_seconds,
    snap_to_speech,
    speech_stretches,
    word_timings,
)

if TYPE_CHECKING:
    from rnnt.data.tokenizer import Tokenizer
    from rnnt.hotwords import HotwordGraph
    from rnnt.models.transducer import Transducer


def chunk_feature_frames(model: Transducer, chunk_ms: int) -> int:
    """Feature frames of a ``chunk_ms`` chunk: a whole number (>= 1) of encoder frames.

    Raises ``ValueError`` naming ``chunk_ms`` and the multiple it must be (40 ms for 10 ms
    frames and 4x subsampling).
    """
    frontend = model.frontend
    factor = model.encoder.subsampling_factor
    frame_ms = 1000 * frontend.hop_length / frontend.sample_rate
    block_ms = frame_ms * factor
    frames = chunk_ms / frame_ms
    if isinstance(chunk_ms, bool) or chunk_ms <= 0 or frames != int(frames) or frames % factor:
        raise ValueError(
            f"chunk_ms={chunk_ms} must be a positive multiple of {block_ms:g} ms (one encoder "
            f"frame: {factor} feature frames of {frame_ms:g} ms), e.g. {8 * block_ms:g}."
        )
    return int(frames)


def chunk_context(model: Transducer, chunk_ms: int) -> list[int]:
    """The attention context ``model`` streams ``chunk_ms`` chunks at (``streaming_context``).

    Raises ``ValueError`` for a chunk that is not whole encoder frames, a model that cannot
    stream, or a chunk none of its contexts fits (naming those that do).
    """
    frames = chunk_feature_frames(model, chunk_ms) // model.encoder.subsampling_factor
    return streaming_context(model.encoder, frames, frame_ms=chunk_ms / frames)


class _GreedyStream:
    """Greedy transducer decoding of one stream, continued across chunks.

    The rule of :func:`rnnt.decoding.greedy_search`: at each encoder frame emit the argmax
    class; a token advances the prediction network and the frame is tried again, at most
    ``max_symbols_per_frame`` times; blank moves on to the next frame. Each token's frame
    (counted from the start of the stream) and log-probability are kept for timestamps.
    """

    def __init__(self, model: Transducer, max_symbols_per_frame: int) -> None:
        if max_symbols_per_frame < 1:
            raise ValueError(f"max_symbols_per_frame={max_symbols_per_frame} must be >= 1.")
        self.decoder, self.joiner = model.decoder, model.joiner
        self.blank = model.config.blank_id
        self.max_symbols = max_symbols_per_frame
        device = self.joiner.output.weight.device
        self.state = self.decoder.initial_state(1, device)
        start = torch.full((1,), self.blank, device=device)
        self.predictor_proj = self._advance(start)  # (1, J)
        self.ids: list[int] = []
        self.frames: list[int] = []
        self.log_probs: list[float] = []
        self.frames_seen = 0

    def _advance(self, token: torch.Tensor) -> torch.Tensor:
        decoder_out, self.state = self.decoder.step(token, self.state)  # (1, H)
        return self.joiner.predictor_proj(decoder_out)

    def advance(self, encoder_out: torch.Tensor) -> None:
        """Decode the encoder frames ``(1, n, D)`` of the next chunk."""
        encoder_proj = self.joiner.encoder_proj(encoder_out[0])  # (n, J)
        for frame in range(encoder_proj.size(0)):
            for _ in range(self.max_symbols):
                logits = self.joiner(encoder_proj[frame : frame + 1], self.predictor_proj)
                token = logits.argmax(dim=-1)  # (1,)
                if int(token) == self.blank:
                    break
                self.ids.append(int(token))
                self.frames.append(self.frames_seen + frame)
                self.log_probs.append(float(logits.float().log_softmax(-1)[0, token]))
                self.predictor_proj = self._advance(token)
        self.frames_seen += encoder_proj.size(0)

    def best(self, final: bool) -> Alignment:
        """The alignment decoded so far (``final`` changes nothing: greedy never revises)."""
        return Alignment(list(self.ids), list(self.frames), list(self.log_probs))


class _BeamStream:
    """Modified beam search of one stream, continued across chunks (:class:`BeamSearch` with
    one utterance): the hypotheses carry over, so the final result equals the offline
    search's on the same encoder frames."""

    def __init__(self, model: Transducer, beam_size: int, max_symbols: int, hotwords) -> None:
        device = model.joiner.output.weight.device
        graph = None if hotwords is None else hotwords.to(device)
        self.search = BeamSearch(
            model.decoder, model.joiner, model.config.blank_id, beam_size, max_symbols, 1,
            device, graph,
        )  # fmt: skip

    def advance(self, encoder_out: torch.Tensor) -> None:
        self.search.advance(encoder_out)
        self.search.compact()  # reading results then costs this chunk's rounds, not all

    def best(self, final: bool) -> Alignment:
        """The best hypothesis now; before ``final`` a later chunk may still revise it."""
        return self.search.best(1, final=final)[0][0][0]


class StreamingSession:
    """Recognise one utterance as its audio arrives.

    Args:
        model: a :class:`Transducer` with causal convolutions and an attention context
            ``[left, 0]`` or chunked ones (else ``ValueError``); it is put in eval mode.
        chunk_ms: audio per encoder chunk, a multiple of one encoder frame (40 ms for 10 ms
            frames and 4x subsampling; else ``ValueError``). Of a model trained at several
            contexts, the session streams at the one whose chunk is ``chunk_ms``, else the
            largest whose chunk divides it (``streaming_context``): its output equals the
            full forward at that context (``Transducer.encode(..., attention_context=)``).
        max_symbols_per_frame: most tokens emitted at one encoder frame (as in greedy search).
        beam_size: 1 decodes greedily; more runs modified beam search with that many
            hypotheses, continued across chunks (its final ids equal
            :func:`rnnt.decoding.beam_search`'s on the full forward at the same context;
            partial results are the best hypothesis so far, which later chunks may revise).
        hotwords: phrases to bias the beam search towards (beam search runs even at
            ``beam_size=1``), or None.

    Attributes:
        tokens: the token ids decoded so far (blank removed).
        alignment: those tokens with the encoder frame (from the stream's start) and
            log-probability of each (:meth:`words` turns them into timed words).
        chunk_seconds: compute time of each chunk run so far (features, encoder, decoding),
            seconds; the last entry is :meth:`finish`'s partial chunk if it had frames.
        context: the model's attention context the session streams at.
        lookahead_ms: audio past a chunk's end needed before it can run (the feature
            window's reach: 7.5 ms), so a chunk's first sample waits
            ``chunk_ms + lookahead_ms`` (the algorithmic latency).
    """

    def __init__(
        self,
        model: Transducer,
        chunk_ms: int = STREAMING_CHUNK_MS,
        max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
        beam_size: int = 1,
        hotwords: HotwordGraph | None = None,
    ) -> None:
        check_beam_size(beam_size)
        self.model = model.eval()
        self.chunk_ms = chunk_ms
        self.chunk_frames = chunk_feature_frames(model, chunk_ms)
        context = chunk_context(model, chunk_ms)
        self.encoder = StreamingEncoder(model.encoder, context)
        self.context = context
        self.features = LogMelStream(model.frontend)
        self.energy = EnergyMeter(model.frontend.sample_rate)  # for the words' pauses
        self.lookahead_ms = 1000 * self.features.lookahead_samples / model.frontend.sample_rate
        device = model.joiner.output.weight.device
        with torch.inference_mode():
            self.cache = self.encoder.initial_cache(1, device)
            if beam_size == 1 and hotwords is None:
                self.decoder = _GreedyStream(model, max_symbols_per_frame)
            else:
                self.decoder = _BeamStream(model, beam_size, max_symbols_per_frame, hotwords)
        self.alignment = Alignment([], [], [])
        self.chunk_seconds: list[float] = []
        self.finished = False

    def accept(self, samples: torch.Tensor) -> list[int]:
        """Take the next ``samples (S,)`` (float32, 16 kHz, any length) and run every chunk
        now complete; returns all token ids so far (a partial hypothesis)."""
        if self.finished:
            raise ValueError("StreamingSession.accept after finish(); start a new session.")
        with torch.inference_mode():
            self.features.push(samples)
            self.energy.push(samples)
            while self.features.frames_ready >= self.chunk_frames:
                started = time.perf_counter()
                self._run(self.features.pop(self.chunk_frames))
                self.chunk_seconds.append(time.perf_counter() - started)
        return self.tokens

    def finish(self) -> list[int]:
        """The audio has ended: run the rest (the end's feature frames, a last partial
        chunk); returns the final token ids. Later calls return them again."""
        if not self.finished:
            self.finished = True
            with torch.inference_mode():
                started = time.perf_counter()
                rest = self.features.flush()
                if rest.size(0) > 0:
                    self._run(rest)
                    self.chunk_seconds.append(time.perf_counter() - started)
                self.alignment = self.decoder.best(final=True)
        return self.tokens

    @property
    def tokens(self) -> list[int]:
        """The token ids decoded so far (a copy)."""
        return list(self.alignment.ids)

    def words(self, tokenizer: Tokenizer) -> list[WordTiming]:
        """The words decoded so far with their start and end (seconds from the stream's
        start, refined by the pauses of the audio so far: :func:`rnnt.timestamps.snap_to_speech`)
        and confidence (:func:`rnnt.timestamps.word_timings`)."""
        words = word_timings(tokenizer, self.alignment, frame_seconds(self.model))
        return snap_to_speech(words, speech_stretches(self.energy.energies()))

    def _run(self, features: torch.Tensor) -> None:
        """Normalise, encode and decode ``(T_c, F)`` feature frames of the next chunk."""
        lengths = torch.tensor([features.size(0)], device=features.device)
        features = self.model.normalizer(features.unsqueeze(0), lengths)  # per frame in eval
        encoder_out, self.cache = self.encoder(features, self.cache)
        self.decoder.advance(encoder_out)
        self.alignment = self.decoder.best(final=False)


def streaming_transcribe(
    model: Transducer,
    tokenizer: Tokenizer,
    audio: torch.Tensor,
    chunk_ms: int = STREAMING_CHUNK_MS,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
    hotwords: HotwordGraph | None = None,
) -> tuple[str, dict[str, Any]]:
    """Transcribe ``audio (S,)`` (float32, 16 kHz) as a stream, with latency figures.

    The audio is handed to a :class:`StreamingSession` (greedy, or beam search with
    ``beam_size`` hypotheses and ``hotwords``) by :func:`feed`, as a microphone would.

    Returns:
        The text and :func:`latency_stats`.
    """
    session = StreamingSession(model, chunk_ms, max_symbols_per_frame, beam_size, hotwords)
    return tokenizer.decode(feed(session, audio)), latency_stats(session, audio)


def feed(session: StreamingSession, audio: torch.Tensor) -> list[int]:
    """Hand ``audio (S,)`` to ``session`` in pieces of ``STREAMING_FEED_MS`` as fast as it
    takes them, then finish it; returns the final token ids."""
    piece = session.model.frontend.sample_rate * STREAMING_FEED_MS // 1000
    for start in range(0, audio.numel(), piece):
        session.accept(audio[start : start + piece])
    return session.finish()


def latency_stats(session: StreamingSession, audio: torch.Tensor) -> dict[str, Any]:
    """What streaming ``audio (S,)`` through ``session`` cost: ``chunk_ms``;
    ``attention_context`` streamed at; ``chunks`` run; ``audio_s`` seconds; ``compute_ms_mean``
    and ``compute_ms_p95`` per chunk; ``real_time_factor`` (compute time / audio time);
    ``algorithmic_latency_ms`` (chunk plus feature-window look-ahead: how long a chunk's first
    sample waits for the chunk to be complete)."""
    seconds = torch.tensor(session.chunk_seconds or [0.0], dtype=torch.float64)
    audio_s = audio.numel() / session.model.frontend.sample_rate
    return {
        "chunk_ms": session.chunk_ms,
        "attention_context": session.context,
        "chunks": len(session.chunk_seconds),
        "audio_s": round(audio_s, 3),
        "compute_ms_mean": 1000 * float(seconds.mean()),
        "compute_ms_p95": 1000 * float(seconds.quantile(0.95)),
        "real_time_factor": float(seconds.sum()) / max(audio_s, 1e-9),
        "algorithmic_latency_ms": session.chunk_ms + session.lookahead_ms,
    }
