"""Word timestamps and confidences: words from pieces, times from frames, greedy's alignments
equal a one-token-at-a-time reference."""

from __future__ import annotations

import math

import pytest
import torch

from rnnt.decoding import greedy_alignments, greedy_search
from rnnt.timestamps import (
    Alignment,
    EnergyMeter,
    WordTiming,
    block_energies,
    snap_to_speech,
    speech_stretches,
    word_timings,
)
from tests.test_decoding import _encoder_out, _model


class _Pieces:
    """A stand-in tokenizer over a fixed piece list (``decode`` joins and turns ``▁`` into spaces)."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def id_to_piece(self, index: int) -> str:
        return self.pieces[index]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids).replace("\u2581", " ").strip()


def test_words_start_at_a_boundary_piece_and_span_their_tokens_frames():
    tokenizer = _Pieces(["<blk>", "\u2581call", "\u2581bo", "b", "\u2581now", "\u2581"])
    alignment = Alignment(
        [1, 2, 3, 5, 4], [2, 10, 12, 14, 20], [math.log(0.9), math.log(0.5), math.log(0.8), 0, 0]
    )
    words = word_timings(tokenizer, alignment, 0.04, offset=1.0)
    assert [w.word for w in words] == ["call", "bob", "now"]  # the lone "▁" is dropped
    times = [t for w in words for t in (w.start, w.end)]
    assert times == pytest.approx([1.08, 1.12, 1.40, 1.52, 1.80, 1.84])
    assert [w.confidence for w in words] == pytest.approx([0.9, 0.5, 1.0])  # the weakest piece
    assert words[1].to_dict() == {"word": "bob", "start": 1.4, "end": 1.52, "confidence": 0.5}


def test_a_first_piece_without_boundary_still_starts_a_word():
    tokenizer = _Pieces(["<blk>", "ing", "\u2581go"])
    words = word_timings(tokenizer, Alignment([1, 2], [0, 3], [0.0, 0.0]), 0.04)
    assert words == [WordTiming("ing", 0.0, 0.04, 1.0), WordTiming("go", 0.12, 0.16, 1.0)]


def test_an_alignment_needs_one_frame_and_probability_per_token():
    with pytest.raises(ValueError, match="2 ids, 1 frames"):
        Alignment([1, 2], [0], [0.0, 0.0])


def _reference(model, encoder_out: torch.Tensor, max_symbols: int) -> Alignment:
    """One utterance ``(T', D)``, one token at a time, recording frame and log-probability."""
    decoder, joiner = model.decoder, model.joiner
    state = decoder.initial_state(1, encoder_out.device)
    output, state = decoder.step(torch.zeros(1, dtype=torch.long), state)
    ids, frames, log_probs = [], [], []
    for index, frame in enumerate(encoder_out):
        for _ in range(max_symbols):
            logits = joiner(joiner.encoder_proj(frame), joiner.predictor_proj(output[0]))
            token = int(logits.argmax())
            if token == 0:
                break
            ids.append(token)
            frames.append(index)
            log_probs.append(float(logits.log_softmax(-1)[token]))
            output, state = decoder.step(torch.tensor([token]), state)
    return Alignment(ids, frames, log_probs)


@pytest.mark.parametrize("max_symbols", [1, 2, 5])
def test_greedy_alignments_equal_a_one_token_at_a_time_reference(max_symbols):
    model = _model()
    encoder_out, lengths = _encoder_out([20, 7, 13, 1])
    alignments = greedy_alignments(model, encoder_out, lengths, max_symbols)
    assert [a.ids for a in alignments] == greedy_search(model, encoder_out, lengths, max_symbols)
    with torch.no_grad():
        for row, length in enumerate(lengths.tolist()):
            expected = _reference(model, encoder_out[row, :length], max_symbols)
            assert alignments[row].ids == expected.ids
            assert alignments[row].frames == expected.frames
            assert alignments[row].log_probs == pytest.approx(expected.log_probs, abs=1e-5)
    several = any(len(set(a.frames)) < len(a.frames) for a in alignments)
    assert several == (max_symbols > 1)  # frames with 2+ tokens, where they may have them


def _tone_bursts(spans: list[tuple[float, float]], seconds: float, rate: int = 16_000):
    """Silence with a 300 Hz tone over each ``(start, end)`` span (seconds)."""
    audio = torch.zeros(round(seconds * rate), dtype=torch.float64)
    for start, end in spans:
        times = torch.arange(round(start * rate), round(end * rate), dtype=torch.float64)
        audio[times.long()] = 0.3 * torch.sin(2 * math.pi * 300 * times / rate)
    return audio.float()


def test_speech_stretches_are_the_loud_spans_with_short_dips_bridged():
    spans = [(0.20, 0.55), (0.60, 0.90), (1.40, 1.75)]  # a 50 ms dip, then a 500 ms pause
    energies = block_energies(_tone_bursts(spans, 2.0), 16_000)
    assert energies.shape == (200,)
    stretches = speech_stretches(energies)
    assert len(stretches) == 2
    assert [t for stretch in stretches for t in stretch] == pytest.approx(
        [0.20, 0.90, 1.40, 1.75], abs=0.011
    )
    assert speech_stretches(block_energies(torch.zeros(16_000), 16_000)) == []  # silence
    noise = 0.1 * torch.randn(16_000, generator=torch.Generator().manual_seed(0))
    assert len(speech_stretches(block_energies(noise, 16_000))) <= 1  # no pauses in noise


def test_energy_meter_in_pieces_equals_the_whole():
    audio = _tone_bursts([(0.1, 0.4)], 0.777)
    meter = EnergyMeter(16_000)
    for start in range(0, audio.numel(), 999):
        meter.push(audio[start : start + 999])
    torch.testing.assert_close(meter.energies(), block_energies(audio, 16_000))


def test_snapping_stretches_words_to_the_speech_around_them():
    stretches = [(0.20, 0.90), (1.40, 1.75)]
    emitted = [
        WordTiming("early", 0.08, 0.20, 0.9),  # emitted before the speech starts
        WordTiming("two", 0.44, 0.52, 0.8),  # its sound goes on until the next word
        WordTiming("late", 1.44, 1.56, 0.7),  # ends before its sound does
    ]
    snapped = snap_to_speech(emitted, stretches)
    times = [t for word in snapped for t in (word.start, word.end)]
    assert times == pytest.approx([0.20, 0.44, 0.44, 0.90, 1.40, 1.75])
    assert [(w.word, w.confidence) for w in snapped] == [(w.word, w.confidence) for w in emitted]
    assert snap_to_speech(emitted, []) == emitted  # no pauses found: the emitted times stay
    piled = [WordTiming("a", 0.0, 0.04, 1.0), WordTiming("b", 0.04, 0.08, 1.0), emitted[2]]
    kept = snap_to_speech(piled, stretches)  # both before the first stretch: nowhere to go
    assert kept[:2] == piled[:2] and (kept[2].start, kept[2].end) == (1.40, 1.75)
