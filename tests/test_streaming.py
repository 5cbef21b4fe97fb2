"""Streaming: chunked features, encoder, greedy and beam decoding (ids, frames, confidences)
equal the full-utterance path."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnt.decoding import (
    beam_search_alignments,
    beam_search_nbest,
    greedy_alignments,
    greedy_search,
    transcribe_ids,
)
from rnnt.models.encoder import ConformerEncoder
from rnnt.models.features import LogMelFrontend, LogMelStream
from rnnt.models.streaming_encoder import StreamingEncoder
from rnnt.models.transducer import Transducer, config_from_preset
from rnnt.streaming import StreamingSession, streaming_transcribe
from tests.tiny import TINY_MODEL

N_MELS = 16
AUDIO_SAMPLES = 16_000 + 4_321  # 1.27 s: not a multiple of a hop, a block or a chunk


def _pieces(total: int, seed: int, largest: int = 5_000) -> list[slice]:
    """Random consecutive slices covering ``range(total)`` (the sizes a caller might feed)."""
    generator = torch.Generator().manual_seed(seed)
    slices, start = [], 0
    while start < total:
        size = int(torch.randint(1, largest, (1,), generator=generator))
        slices.append(slice(start, start + size))
        start += size
    return slices


def _audio(samples: int = AUDIO_SAMPLES, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(samples, generator=torch.Generator().manual_seed(seed))


def _model(left: int = 3, **overrides) -> Transducer:
    """A random tiny streaming Transducer whose greedy output mixes tokens and blanks."""
    torch.manual_seed(0)
    options = {**TINY_MODEL, "num_layers": 2, "attention_context_size": [left, 0]}
    config = config_from_preset("tiny", 20, **{**options, "causal_conv": True, **overrides})
    model = Transducer(config).eval()
    with torch.inference_mode():
        # Sharper logits, and blank made as likely as the best token on a typical frame.
        model.joiner.output.weight.mul_(8.0)
        encoder_out, _ = model.encode(_audio()[None], torch.tensor([AUDIO_SAMPLES]))
        start, _ = model.decoder.step(
            torch.zeros(1, dtype=torch.long), model.decoder.initial_state(1, "cpu")
        )
        logits = model.joiner(
            model.joiner.encoder_proj(encoder_out[0]), model.joiner.predictor_proj(start)
        )
        margin = logits[:, 1:].max(dim=-1).values - logits[:, 0]
        model.joiner.output.bias[0] += margin.median()
    return model


@pytest.mark.parametrize("samples", [100, 399, 401, 4_000, 32_123])
def test_streamed_features_equal_full_utterance_features(samples):
    frontend = LogMelFrontend()
    audio = _audio(samples)
    full, _ = frontend(audio[None], torch.tensor([samples]))
    stream = LogMelStream(frontend)
    generator = torch.Generator().manual_seed(samples)
    frames = []
    for piece in _pieces(samples, seed=samples, largest=3_000):
        stream.push(audio[piece])
        ready = stream.frames_ready
        frames.append(stream.pop(int(torch.randint(0, ready + 1, (1,), generator=generator))))
    frames.append(stream.flush())
    # Equal up to float rounding of the filterbank's matrix product (rows batched differently).
    torch.testing.assert_close(torch.cat(frames), full[0], atol=1e-5, rtol=1e-6)


def test_feature_stream_frames_are_ready_once_their_window_has_arrived():
    stream = LogMelStream(LogMelFrontend())
    # Frame i reads samples up to i * 160 + 279: frame 0 needs 280, frame 1 needs 440.
    stream.push(torch.zeros(279))
    assert stream.frames_ready == 0
    stream.push(torch.zeros(1))
    assert stream.frames_ready == 1
    stream.push(torch.zeros(160))
    assert stream.frames_ready == 2
    assert stream.lookahead_samples == 120  # a frame reads 7.5 ms past its 10 ms hop


def test_feature_stream_keeps_only_the_samples_later_frames_read():
    stream = LogMelStream(LogMelFrontend())
    for _ in range(80):  # 5 s in pieces of 62.5 ms
        stream.push(torch.randn(1_000))
        stream.pop(stream.frames_ready)
    assert stream._samples.numel() <= stream.win_length


def _encoder(left: int = 0, factor: int = 4, **contexts) -> ConformerEncoder:
    """A random streaming encoder with context ``[left, 0]``, or the given ``contexts``."""
    torch.manual_seed(0)
    return ConformerEncoder(
        n_mels=N_MELS,
        d_model=32,
        num_layers=2,
        num_heads=2,
        ff_mult=2,
        conv_kernel_size=7,
        subsampling_factor=factor,
        subsampling_channels=8,
        **{"attention_context_size": [left, 0], **contexts},
        causal_conv=True,
    ).eval()


@pytest.mark.parametrize("left", [-1, 0, 2, 7])
@pytest.mark.parametrize(("factor", "chunk"), [(4, 1), (4, 3), (4, 8), (8, 2)])
def test_streamed_encoder_equals_full_forward(left, factor, chunk):
    encoder = _encoder(left, factor)
    features = torch.randn(1, 97, N_MELS, generator=torch.Generator().manual_seed(1))
    streaming = StreamingEncoder(encoder)
    with torch.inference_mode():
        full, lengths = encoder(features, torch.tensor([97]))
        cache = streaming.initial_cache(1, "cpu")
        outputs = []
        # Whole blocks of `chunk` encoder frames, then the last partial block (97 = 4 * 24 + 1).
        for start in range(0, 97, factor * chunk):
            encoder_out, cache = streaming(features[:, start : start + factor * chunk], cache)
            outputs.append(encoder_out)
    streamed = torch.cat(outputs, dim=1)
    assert streamed.shape == full.shape and cache.encoder_frames == int(lengths)
    torch.testing.assert_close(streamed, full, atol=1e-4, rtol=1e-4)


CHUNKED_CONTEXTS = [[4, 1], [6, 3], [-1, 7], [3, 0], [0, 2]]


@pytest.mark.parametrize("context", CHUNKED_CONTEXTS)
@pytest.mark.parametrize("chunks_per_call", [1, 2])
def test_streamed_encoder_equals_full_forward_at_each_chunked_context(context, chunks_per_call):
    # One encoder trained for several contexts streams at each, with the output of its full
    # forward masked at that context; the contexts do give different outputs.
    encoder = _encoder(attention_context_size=CHUNKED_CONTEXTS, attention_context_style="chunked")
    features = torch.randn(1, 97, N_MELS, generator=torch.Generator().manual_seed(1))
    streaming = StreamingEncoder(encoder, context)
    step = 4 * streaming.chunk * chunks_per_call
    assert streaming.chunk == context[1] + 1
    with torch.inference_mode():
        full, lengths = encoder(features, torch.tensor([97]), context)
        cache = streaming.initial_cache(1, "cpu")
        outputs = []
        for start in range(0, 97, step):
            encoder_out, cache = streaming(features[:, start : start + step], cache)
            outputs.append(encoder_out)
        others = [encoder(features, lengths, c)[0] for c in CHUNKED_CONTEXTS if c != context]
    streamed = torch.cat(outputs, dim=1)
    assert streamed.shape == full.shape and cache.encoder_frames == int(lengths)
    torch.testing.assert_close(streamed, full, atol=1e-4, rtol=1e-4)
    assert all((other - full).abs().max() > 1e-2 for other in others)
    if context[0] >= 0:  # the cache keeps the left context before the next chunk, no more
        assert all(keys.size(2) <= context[0] for keys in cache.keys)


def test_attention_cache_holds_at_most_the_left_context():
    streaming = StreamingEncoder(_encoder(left=5))
    cache = streaming.initial_cache(1, "cpu")
    with torch.inference_mode():
        for _ in range(4):
            _, cache = streaming(torch.randn(1, 12, N_MELS), cache)
    assert all(keys.size(2) == 5 for keys in cache.keys)
    assert all(conv.size(2) == 6 for conv in cache.convolution)  # kernel 7 - 1


def test_stream_cannot_continue_after_a_partial_block():
    streaming = StreamingEncoder(_encoder(left=2))
    with torch.inference_mode():
        _, cache = streaming(torch.randn(1, 6, N_MELS), streaming.initial_cache(1, "cpu"))
        with pytest.raises(ValueError, match="initial_cache"):
            streaming(torch.randn(1, 4, N_MELS), cache)


def _stream(session: StreamingSession, audio: torch.Tensor, seed: int) -> list[list[int]]:
    partials = [session.accept(audio[piece]) for piece in _pieces(audio.numel(), seed)]
    return [*partials, session.finish()]


@pytest.mark.parametrize(("left", "chunk_ms"), [(3, 40), (3, 120), (3, 320), (-1, 160)])
def test_session_encoder_frames_and_ids_equal_full_model(left, chunk_ms):
    model = _model(left)
    audio = _audio()
    with torch.inference_mode():
        encoder_out, lengths = model.encode(audio[None], torch.tensor([audio.numel()]))
        expected = greedy_search(model, encoder_out, lengths)[0]
    session = StreamingSession(model, chunk_ms=chunk_ms)
    chunks: list[torch.Tensor] = []
    advance = session.decoder.advance
    session.decoder.advance = lambda frames: chunks.append(frames[0]) or advance(frames)
    partials = _stream(session, audio, seed=chunk_ms)
    torch.testing.assert_close(torch.cat(chunks), encoder_out[0], atol=1e-4, rtol=1e-4)
    assert len(expected) > 10 and len(set(expected)) > 2  # a real transcript, not all blank
    assert partials[-1] == session.tokens == expected
    # Partial hypotheses only ever grow.
    for before, after in itertools.pairwise(partials):
        assert after[: len(before)] == before
    # Whole chunks in accept(), then the end's partial chunk in finish().
    assert all(frames.size(0) == chunk_ms // 40 for frames in chunks[:-1])
    assert len(session.chunk_seconds) == len(chunks)


MULTI_CONTEXTS = [[8, 1], [8, 3], [8, 7], [-1, -1]]


@pytest.mark.parametrize(
    ("chunk_ms", "context"),
    [(80, [8, 1]), (160, [8, 3]), (320, [8, 7]), (480, [8, 3]), (640, [8, 7])],
)
def test_session_streams_at_the_context_of_its_chunk_equal_to_the_masked_model(chunk_ms, context):
    # 80/160/320 ms are the chunks of the listed contexts (40 ms encoder frames); 480 ms is
    # three 160 ms chunks, 640 ms two of 320 ms: the largest listed chunk that divides it.
    model = _model(attention_context_size=MULTI_CONTEXTS, attention_context_style="chunked")
    audio = _audio()
    with torch.inference_mode():
        encoder_out, lengths = model.encode(
            audio[None], torch.tensor([audio.numel()]), attention_context=context
        )
        expected = greedy_search(model, encoder_out, lengths)[0]
        full, _ = model.encode(
            audio[None], torch.tensor([audio.numel()]), attention_context=[-1, -1]
        )
    session = StreamingSession(model, chunk_ms=chunk_ms)
    assert session.context == context
    chunks: list[torch.Tensor] = []
    advance = session.decoder.advance
    session.decoder.advance = lambda frames: chunks.append(frames[0]) or advance(frames)
    assert _stream(session, audio, seed=chunk_ms)[-1] == expected
    torch.testing.assert_close(torch.cat(chunks), encoder_out[0], atol=1e-4, rtol=1e-4)
    assert (full - encoder_out).abs().max() > 1e-2  # the context matters
    _, stats = streaming_transcribe(model, _Tokenizer(), audio, chunk_ms=chunk_ms)
    assert stats["attention_context"] == context


def test_a_chunk_that_no_listed_context_fits_is_refused_naming_those_that_do():
    model = _model(attention_context_size=[[8, 3], [8, 7]], attention_context_style="chunked")
    with pytest.raises(ValueError) as error:
        StreamingSession(model, chunk_ms=120)
    assert str(error.value) == (
        "a chunk of 120 ms does not fit this model's streaming contexts [[8, 3], [8, 7]] "
        "(chunked): it must be a multiple of one of 160, 320 ms."
    )


def test_max_symbols_per_frame_is_the_greedy_search_rule():
    model = _model()
    audio = _audio()
    with torch.inference_mode():
        encoder_out, lengths = model.encode(audio[None], torch.tensor([audio.numel()]))
        expected = greedy_search(model, encoder_out, lengths, max_symbols_per_frame=1)[0]
    session = StreamingSession(model, chunk_ms=80, max_symbols_per_frame=1)
    assert _stream(session, audio, seed=3)[-1] == expected


@pytest.mark.parametrize(
    ("context", "causal"), [([-1, -1], False), ([8, 2], True), ([8, -1], True), ([8, 0], False)]
)
def test_model_that_sees_the_future_cannot_stream(context, causal):
    model = _model(context[0], attention_context_size=context, causal_conv=causal)
    with pytest.raises(ValueError) as error:
        StreamingSession(model)
    message = str(error.value)
    assert f"attention_context_size={context}" in message
    assert f"causal_conv={causal}" in message
    assert "--model.attention_context_size" in message and "--model.causal_conv true" in message


@pytest.mark.parametrize("chunk_ms", [50, 20, 0, -40])
def test_chunk_must_be_whole_encoder_frames(chunk_ms):
    with pytest.raises(
        ValueError, match=rf"chunk_ms={chunk_ms} must be a positive multiple of 40 ms"
    ):
        StreamingSession(_model(), chunk_ms=chunk_ms)


@pytest.mark.parametrize("samples", [0, 70, 800, 3_000])
def test_audio_shorter_than_a_chunk_decodes_at_finish(samples):
    model = _model()
    audio = _audio(samples)
    session = StreamingSession(model, chunk_ms=320)
    assert session.accept(audio) == [] and session.chunk_seconds == []
    expected = []
    if samples >= 80:  # shorter audio has no feature frame at all
        expected = transcribe_ids(model, audio[None], torch.tensor([samples]))[0]
    assert session.finish() == expected
    assert len(session.chunk_seconds) == (1 if samples >= 80 else 0)


def test_accept_after_finish_is_an_error():
    session = StreamingSession(_model(), chunk_ms=80)
    session.accept(_audio(4_000))
    session.finish()
    assert session.finish() == session.tokens
    with pytest.raises(ValueError, match="after finish"):
        session.accept(_audio(100))


class _Tokenizer:
    """Every token is a word: its id."""

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))

    def id_to_piece(self, index: int) -> str:
        return f"\u2581{index}"


def test_streaming_transcribe_gives_text_and_latency():
    model = _model()
    audio = _audio()
    with torch.inference_mode():
        expected = transcribe_ids(model, audio[None], torch.tensor([audio.numel()]))[0]
    text, stats = streaming_transcribe(model, _Tokenizer(), audio, chunk_ms=320)
    assert text == " ".join(map(str, expected))
    assert stats["chunk_ms"] == 320
    assert stats["chunks"] == 4  # 1.27 s: three whole 320 ms chunks and the rest at the end
    assert stats["algorithmic_latency_ms"] == 327.5
    assert 0 < stats["compute_ms_mean"] <= stats["compute_ms_p95"]
    assert stats["real_time_factor"] > 0 and stats["audio_s"] == pytest.approx(1.27, abs=1e-3)


@pytest.mark.parametrize(("chunk_ms", "beam"), [(80, 4), (160, 4), (480, 2), (320, 1)])
def test_streaming_beam_search_equals_offline_beam_search_on_the_masked_model(chunk_ms, beam):
    model = _model(attention_context_size=MULTI_CONTEXTS, attention_context_style="chunked")
    audio = _audio()
    session = StreamingSession(model, chunk_ms=chunk_ms, beam_size=beam, hotwords=None)
    with torch.inference_mode():
        encoder_out, lengths = model.encode(
            audio[None], torch.tensor([audio.numel()]), attention_context=session.context
        )
        expected = beam_search_alignments(model, encoder_out, lengths, beam)[0]
        nbest = beam_search_nbest(model, encoder_out, lengths, beam)[0]
    partials = _stream(session, audio, seed=chunk_ms)
    assert partials[-1] == expected.ids == session.alignment.ids
    assert session.alignment.frames == expected.frames
    assert session.alignment.log_probs == pytest.approx(expected.log_probs, abs=1e-4)
    assert len(expected.ids) > 10
    if beam > 1:  # the stream ran beam search, not greedy: here they differ
        assert expected.ids == nbest[0][0] != greedy_search(model, encoder_out, lengths)[0]


def test_streaming_timestamps_equal_the_offline_ones():
    model = _model()
    audio = _audio()
    with torch.inference_mode():
        encoder_out, lengths = model.encode(audio[None], torch.tensor([audio.numel()]))
        expected = greedy_alignments(model, encoder_out, lengths)[0]
    session = StreamingSession(model, chunk_ms=120)
    _stream(session, audio, seed=5)
    assert session.alignment.frames == expected.frames and session.alignment.ids == expected.ids
    assert session.alignment.log_probs == pytest.approx(expected.log_probs, abs=1e-5)
    words = session.words(_Tokenizer())
    assert words and words[-1].end <= audio.numel() / 16_000 + 0.04
    assert all(0 < word.confidence <= 1 for word in words)
