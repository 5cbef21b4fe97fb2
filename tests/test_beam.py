"""The resumable beam search: chunk by chunk equals one call, its alignments are greedy's at
beam 1 and each token's log-probability is the joiner's at the frame it names."""

from __future__ import annotations

import pytest
import torch

from rnnt.beam import BeamSearch
from rnnt.decoding import beam_search_alignments, beam_search_nbest, greedy_alignments
from rnnt.greedy import decoding_mode
from tests.test_decoding import _beam_model, _encoder_out, _model


def _token_log_prob(model, encoder_out: torch.Tensor, history: list[int], frame: int, token: int):
    """log P(token | frame, history) straight from the model, one utterance ``(T', D)``."""
    decoder, joiner = model.decoder, model.joiner
    with torch.no_grad():
        state = decoder.initial_state(1, encoder_out.device)
        output, state = decoder.step(torch.zeros(1, dtype=torch.long), state)
        for previous in history:
            output, state = decoder.step(torch.tensor([previous]), state)
        logits = joiner(joiner.encoder_proj(encoder_out[frame]), joiner.predictor_proj(output[0]))
    return float(logits.log_softmax(-1)[token])


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_beam_one_alignments_equal_greedy_alignments(max_symbols):
    model = _beam_model()
    encoder_out, lengths = _encoder_out([20, 7, 13, 1], seed=3)
    greedy = greedy_alignments(model, encoder_out, lengths, max_symbols)
    beam = beam_search_alignments(model, encoder_out, lengths, 1, max_symbols)
    for ours, reference in zip(beam, greedy, strict=True):
        assert ours.ids == reference.ids and ours.frames == reference.frames
        assert ours.log_probs == pytest.approx(reference.log_probs, abs=1e-5)
    assert sum(len(a.ids) for a in greedy) > 10


@pytest.mark.parametrize("beam", [1, 4])
def test_each_token_carries_its_frame_and_joiner_log_probability(beam):
    model = _beam_model()
    encoder_out, lengths = _encoder_out([16, 9], seed=4)
    for row, alignment in enumerate(beam_search_alignments(model, encoder_out, lengths, beam, 2)):
        assert alignment.frames == sorted(alignment.frames)
        assert all(0 <= frame < lengths[row] for frame in alignment.frames)
        for position, (token, frame) in enumerate(
            zip(alignment.ids, alignment.frames, strict=True)
        ):
            expected = _token_log_prob(
                model, encoder_out[row], alignment.ids[:position], frame, token
            )
            assert alignment.log_probs[position] == pytest.approx(expected, abs=1e-5)
        assert alignment.ids  # not vacuous


@pytest.mark.parametrize("cuts", [[1] * 12, [3, 5, 4], [8, 0, 4]])
def test_searching_chunk_by_chunk_equals_one_call(cuts):
    model = _model()
    encoder_out, _ = _encoder_out([12], seed=5)
    with decoding_mode(model) as (decoder, joiner):
        whole = BeamSearch(decoder, joiner, 0, 4, 3, 1, "cpu")
        whole.advance(encoder_out)
        pieces = BeamSearch(decoder, joiner, 0, 4, 3, 1, "cpu")
        start = 0
        for size in cuts:
            pieces.advance(encoder_out[:, start : start + size])
            start += size
        expected, got = whole.best(4)[0], pieces.best(4)[0]
    assert [(a.ids, a.frames) for a, _ in got] == [(a.ids, a.frames) for a, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected])
    offline = beam_search_nbest(model, encoder_out, torch.tensor([12]), 4, 3)[0]
    assert [ids for ids, _ in offline] == [a.ids for a, _ in got]
    assert len(got) > 1 and got[0][0].ids
