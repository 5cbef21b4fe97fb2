"""The resumable beam search: chunk by chunk equals one call, its alignments are greedy's at
beam 1, each token's log-probability is the joiner's at the frame it names, and hotword
biasing adds exactly the boost of completed phrases."""

from __future__ import annotations

import pytest
import torch

from rnnt.beam import BeamSearch
from rnnt.decoding import (
    beam_search,
    beam_search_alignments,
    beam_search_nbest,
    greedy_alignments,
)
from rnnt.greedy import decoding_mode
from rnnt.hotwords import HotwordGraph
from rnnt.models.transducer import Transducer, TransducerConfig
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
            pieces.compact()  # as a stream does: results then read the history
            start += size
        assert not pieces.parents and whole.parents  # compacted: no back-pointers left
        expected, got = whole.best(4)[0], pieces.best(4)[0]
    assert [(a.ids, a.frames) for a, _ in got] == [(a.ids, a.frames) for a, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected])
    offline = beam_search_nbest(model, encoder_out, torch.tensor([12]), 4, 3)[0]
    assert [ids for ids, _ in offline] == [a.ids for a, _ in got]
    assert len(got) > 1 and got[0][0].ids


def _unpruned_model():
    """Three classes, a beam that never prunes on two frames (as test_decoding's exact test)."""
    config = _model().config.to_dict()
    config.update(num_classes=3, d_model=8, pred_embed_dim=8, pred_hidden_dim=8, joiner_dim=8)
    torch.manual_seed(0)
    return Transducer(TransducerConfig.from_dict(config)).eval()


def _occurrences(sequence: tuple[int, ...], phrase: tuple[int, ...]) -> int:
    size = len(phrase)
    return sum(sequence[i : i + size] == phrase for i in range(len(sequence) - size + 1))


def test_hotword_bonus_is_kept_for_completed_phrases_and_taken_back_from_partial_ones():
    # Unpruned, every sequence survives: its biased score is its exact score plus the boost of
    # each completed occurrence of the phrase, and nothing for a prefix left unfinished (the
    # sequences ending in 1, or with a 1 followed by 1, earned +0.7 for a while).
    model, max_symbols, boost = _unpruned_model(), 4, 0.7
    encoder_out, lengths = _encoder_out([2], dim=8, seed=5)
    graph = HotwordGraph.from_ids([([1, 2], boost)], num_classes=3)
    nbest = beam_search_nbest(model, encoder_out, lengths, 2048, max_symbols)[0]
    plain = {tuple(ids): score for ids, score in nbest}
    biased = beam_search_nbest(model, encoder_out, lengths, 2048, max_symbols, graph)[0]
    assert len(biased) == len(plain)
    for ids, score in biased:
        bonus = 2 * boost * _occurrences(tuple(ids), (1, 2))
        assert score == pytest.approx(plain[tuple(ids)] + bonus, abs=1e-4)
    assert any(_occurrences(tuple(ids), (1, 2)) for ids, _ in biased)
    assert any(ids and ids[-1] == 1 for ids, _ in biased)  # unfinished matches were scored


def test_a_boosted_phrase_wins_the_beam_and_streaming_keeps_it():
    model = _beam_model()
    encoder_out, lengths = _encoder_out([16], seed=4)
    plain = beam_search(model, encoder_out, lengths, 4, 2)[0]
    phrase = [token for token in range(1, 9) if token not in plain][:1] * 2  # absent from it
    graph = HotwordGraph.from_ids([(phrase, 6.0)], num_classes=9)
    biased = beam_search(model, encoder_out, lengths, 4, 2, graph)[0]
    assert any(biased[i : i + 2] == phrase for i in range(len(biased) - 1))
    assert biased != plain
    # Resumed chunk by chunk with the same graph: the same result.
    with decoding_mode(model) as (decoder, joiner):
        search = BeamSearch(decoder, joiner, 0, 4, 2, 1, "cpu", graph)
        for start in range(0, 16, 3):
            search.advance(encoder_out[:, start : start + 3])
        assert search.best()[0][0][0].ids == biased
