"""Batched greedy and beam search: equal to one-utterance references, batch-invariant, capped;
beam search's scores are the exact RNN-T log-probabilities of the alignments it merged."""

from __future__ import annotations

import math
from itertools import product

import pytest
import torch

from rnnt.decoding import beam_search, beam_search_nbest, greedy_search, transcribe_ids
from rnnt.loss import rnnt_loss
from rnnt.models.transducer import Transducer, TransducerConfig, config_from_preset

NUM_CLASSES = 9


def _model(**overrides) -> Transducer:
    torch.manual_seed(0)
    options = dict(
        d_model=32,
        num_layers=1,
        num_heads=2,
        ff_mult=2,
        subsampling_channels=8,
        pred_embed_dim=16,
        pred_hidden_dim=24,
        pred_num_layers=2,
        joiner_dim=32,
    )
    options.update(overrides)
    return Transducer(config_from_preset("tiny", NUM_CLASSES, **options)).eval()


def _encoder_out(lengths: list[int], dim: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    encoder_out = torch.zeros(len(lengths), max(lengths), dim)
    for row, length in enumerate(lengths):
        encoder_out[row, :length] = 2 * torch.randn(length, dim, generator=generator)
    return encoder_out, torch.tensor(lengths)


def _reference_greedy(model: Transducer, encoder_out: torch.Tensor, max_symbols: int) -> list[int]:
    """One utterance ``(T', D)``, one token at a time, no batching tricks."""
    decoder, joiner = model.decoder, model.joiner
    state = decoder.initial_state(1, encoder_out.device)
    output, state = decoder.step(torch.zeros(1, dtype=torch.long), state)
    hypothesis = []
    for frame in encoder_out:
        for _ in range(max_symbols):
            token = int(
                joiner(joiner.encoder_proj(frame), joiner.predictor_proj(output[0])).argmax()
            )
            if token == 0:
                break
            hypothesis.append(token)
            output, state = decoder.step(torch.tensor([token]), state)
    return hypothesis


@pytest.mark.parametrize("max_symbols", [1, 2, 5])
def test_greedy_equals_one_utterance_reference(max_symbols):
    model = _model()
    encoder_out, lengths = _encoder_out([20, 7, 13, 1])
    hypotheses = greedy_search(model, encoder_out, lengths, max_symbols)
    with torch.no_grad():
        for row, length in enumerate(lengths.tolist()):
            expected = _reference_greedy(model, encoder_out[row, :length], max_symbols)
            assert hypotheses[row] == expected
    assert any(hypotheses)  # the untrained model emits something: the test is not vacuous


def test_greedy_alone_equals_in_padded_batch():
    model = _model()
    audio_lengths = [16_000, 5_000, 11_111]
    generator = torch.Generator().manual_seed(1)
    audio = torch.zeros(3, 16_000)
    for row, length in enumerate(audio_lengths):
        audio[row, :length] = 0.1 * torch.randn(length, generator=generator)
    lengths = torch.tensor(audio_lengths)
    batched = transcribe_ids(model, audio, lengths)
    for row, length in enumerate(audio_lengths):
        alone = transcribe_ids(model, audio[row : row + 1, :length], lengths[row : row + 1])
        assert alone == [batched[row]]
    assert any(batched)


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_max_symbols_per_frame_is_respected(max_symbols):
    model = _model()
    with torch.no_grad():  # blank never wins: every frame emits the most it may
        model.joiner.output.bias[0] = -1e4
    encoder_out, lengths = _encoder_out([6, 3])
    hypotheses = greedy_search(model, encoder_out, lengths, max_symbols)
    assert [len(ids) for ids in hypotheses] == [6 * max_symbols, 3 * max_symbols]
    assert all(0 not in ids for ids in hypotheses)


def test_blank_only_model_gives_empty_hypotheses():
    model = _model()
    with torch.no_grad():
        model.joiner.output.bias[0] = 1e4
    encoder_out, lengths = _encoder_out([6, 3])
    assert greedy_search(model, encoder_out, lengths) == [[], []]


def test_greedy_restores_training_mode_and_needs_positive_cap():
    model = _model().train()
    encoder_out, lengths = _encoder_out([4])
    greedy_search(model, encoder_out, lengths)
    assert model.decoder.training and model.joiner.training
    with pytest.raises(ValueError, match="max_symbols_per_frame=0"):
        greedy_search(model, encoder_out, lengths, 0)


# --- beam search -----------------------------------------------------------------------------------

BLANK_BIAS = 0.7  # the untrained joiner's distribution is flat: this mixes blanks and tokens


def _beam_model(**overrides) -> Transducer:
    model = _model(**overrides)
    with torch.no_grad():
        model.joiner.output.bias[0] += BLANK_BIAS
    return model


def _reference_beam(
    model: Transducer, encoder_out: torch.Tensor, beam: int, max_symbols: int
) -> tuple[list[int], torch.Tensor, dict[tuple[int, ...], torch.Tensor]]:
    """One utterance ``(T', D)``: the search as written in the docstring, with plain dicts.

    Returns the best ids, their score and every surviving sequence's score.
    """
    decoder, joiner = model.decoder, model.joiner
    num_classes = joiner.output.out_features
    cache: dict[tuple[int, ...], tuple] = {}

    def prediction(sequence: tuple[int, ...]) -> tuple:
        if sequence not in cache:
            if sequence:
                state = prediction(sequence[:-1])[1]
            else:
                state = decoder.initial_state(1, encoder_out.device)
            previous = sequence[-1] if sequence else 0
            output, state = decoder.step(torch.tensor([previous]), state)
            cache[sequence] = (joiner.predictor_proj(output[0]), state)
        return cache[sequence]

    def log_add(scores: list[torch.Tensor]) -> torch.Tensor:
        return torch.logsumexp(torch.stack(scores), dim=0)

    hypotheses = {(): torch.tensor(0.0)}  # sequence -> score, between frames
    for frame in encoder_out:
        frame_proj = joiner.encoder_proj(frame)
        pool = [(sequence, score, False) for sequence, score in hypotheses.items()]
        for _ in range(max_symbols):
            if all(done for _, _, done in pool):
                break
            candidates: dict[tuple, list[torch.Tensor]] = {}
            for sequence, score, done in pool:
                if done:
                    candidates.setdefault((sequence, True), []).append(score)
                    continue
                log_probs = joiner(frame_proj, prediction(sequence)[0]).log_softmax(dim=-1)
                candidates.setdefault((sequence, True), []).append(score + log_probs[0])
                for token in range(1, num_classes):
                    key = (sequence + (token,), False)
                    candidates.setdefault(key, []).append(score + log_probs[token])
            merged = [(key, log_add(scores)) for key, scores in candidates.items()]
            merged.sort(key=lambda item: -float(item[1]))
            pool = [(sequence, score, done) for (sequence, done), score in merged[:beam]]
        hypotheses = {}
        for sequence, score, _ in pool:
            hypotheses.setdefault(sequence, []).append(score)
        hypotheses = {sequence: log_add(scores) for sequence, scores in hypotheses.items()}
    best = max(hypotheses, key=lambda sequence: float(hypotheses[sequence]))
    return list(best), hypotheses[best], hypotheses


def _exact_log_prob(model: Transducer, encoder_out: torch.Tensor, tokens: list[int]) -> float:
    """log P(tokens | encoder_out (T', D)) summed over every alignment: minus the RNN-T loss."""
    targets = torch.tensor([tokens or [1]])  # (1, U), one padding token when U = 0
    target_lengths = torch.tensor([len(tokens)])
    joiner = model.joiner
    with torch.no_grad():
        predictor_proj = joiner.predictor_proj(model.decoder(targets, target_lengths))
        logits = joiner(
            joiner.encoder_proj(encoder_out)[None, :, None], predictor_proj[:, None]
        )  # (1, T', U + 1, V)
        loss = rnnt_loss(
            logits, targets, torch.tensor([len(encoder_out)]), target_lengths, reduction="sum"
        )
    return -float(loss)


@pytest.mark.parametrize("max_symbols", [1, 2, 5])
def test_beam_size_one_equals_greedy(max_symbols):
    model = _beam_model()
    encoder_out, lengths = _encoder_out([20, 7, 13, 1, 16], seed=3)
    greedy = greedy_search(model, encoder_out, lengths, max_symbols)
    assert beam_search(model, encoder_out, lengths, 1, max_symbols) == greedy
    # Not vacuous: some frames emit several tokens, and some utterances differ from others.
    assert sum(map(len, greedy)) > max(lengths.tolist()) // 2
    assert len({tuple(ids) for ids in greedy}) > 2


@pytest.mark.parametrize(("beam", "max_symbols"), [(2, 1), (4, 2), (4, 5), (8, 3)])
def test_beam_equals_one_utterance_reference(beam, max_symbols):
    model = _beam_model()
    encoder_out, lengths = _encoder_out([14, 5, 9, 1], seed=4)
    nbest = beam_search_nbest(model, encoder_out, lengths, beam, max_symbols)
    hypotheses = beam_search(model, encoder_out, lengths, beam, max_symbols)
    greedy = greedy_search(model, encoder_out, lengths, max_symbols)
    with torch.no_grad():
        for row, length in enumerate(lengths.tolist()):
            ids, _, final = _reference_beam(model, encoder_out[row, :length], beam, max_symbols)
            assert hypotheses[row] == ids == nbest[row][0][0]
            # The whole final beam, not only its best: same sequences, same merged scores.
            assert {tuple(ids): score for ids, score in nbest[row]} == pytest.approx(
                {sequence: float(score) for sequence, score in final.items()}, abs=1e-4
            )
            scores = [score for _, score in nbest[row]]
            assert scores == sorted(scores, reverse=True)
    if beam >= 4:  # the beam is a different search, not greedy in disguise
        assert hypotheses != greedy


def test_merging_log_adds_the_alignments_of_one_sequence():
    # Two classes with fixed probabilities: blank 0.4, token 0.6 at every frame and history.
    # With one token per frame and two frames: P([]) = 0.16, P([1, 1]) = 0.36 and
    # P([1]) = 0.6 * 0.4 + 0.4 * 0.6 = 0.48 over its two alignments, each below 0.36. At the
    # last frame the candidates are [1, 1] (0.36), [1] by either alignment (0.24 each) and []
    # (0.16): a beam of 3 keeps both alignments of [1] (and drops []), and merging them makes
    # [1] win.
    torch.manual_seed(0)
    model = Transducer(config_from_preset("tiny", 2, d_model=8, num_layers=1, num_heads=2))
    with torch.no_grad():
        model.joiner.output.weight.zero_()
        model.joiner.output.bias.copy_(torch.tensor([0.4, 0.6]).log())
    encoder_out, lengths = torch.randn(1, 2, 8), torch.tensor([2])
    assert greedy_search(model, encoder_out, lengths, 1) == [[1, 1]]
    (best, score), *_ = beam_search_nbest(model, encoder_out, lengths, 1, 1)[0]
    assert best == [1, 1] and score == pytest.approx(math.log(0.36), abs=1e-6)
    nbest = dict(
        (tuple(ids), score)
        for ids, score in beam_search_nbest(model, encoder_out, lengths, 3, 1)[0]
    )
    assert list(nbest) == [(1,), (1, 1)]
    assert list(nbest.values()) == pytest.approx([math.log(0.48), math.log(0.36)])


def test_unpruned_beam_scores_are_exact_sequence_log_probabilities():
    # Three classes, two frames, at most four tokens a frame: a beam of 2048 never prunes, so
    # every sequence ends in the final beam, and one shorter than the cap is scored over all
    # its alignments: exactly its RNN-T probability (minus the loss). Without merging, each
    # would carry the score of one alignment only.
    max_symbols = 4
    config = _model().config.to_dict()
    config.update(num_classes=3, d_model=8, pred_embed_dim=8, pred_hidden_dim=8, joiner_dim=8)
    torch.manual_seed(0)
    model = Transducer(TransducerConfig.from_dict(config)).eval()
    encoder_out, lengths = _encoder_out([2], dim=8, seed=5)
    nbest = beam_search_nbest(model, encoder_out, lengths, 2048, max_symbols)[0]
    scores = {tuple(ids): score for ids, score in nbest}
    assert len(scores) == sum(2**length for length in range(2 * max_symbols + 1))
    short = [s for length in range(max_symbols) for s in product([1, 2], repeat=length)]
    exact = {tokens: _exact_log_prob(model, encoder_out[0], list(tokens)) for tokens in short}
    assert {tokens: scores[tokens] for tokens in short} == pytest.approx(exact, abs=1e-5)
    assert max(exact.values()) <= nbest[0][1] + 1e-5


def test_beam_alone_equals_in_padded_batch():
    model = _model()
    audio_lengths = [16_000, 5_000, 11_111, 8_000]
    generator = torch.Generator().manual_seed(2)
    audio = torch.zeros(len(audio_lengths), 16_000)
    for row, length in enumerate(audio_lengths):
        audio[row, :length] = 0.1 * torch.randn(length, generator=generator)
    lengths = torch.tensor(audio_lengths)
    batched = transcribe_ids(model, audio, lengths, beam_size=4)
    for row, length in enumerate(audio_lengths):
        alone = transcribe_ids(
            model, audio[row : row + 1, :length], lengths[row : row + 1], beam_size=4
        )
        assert alone == [batched[row]]
    assert any(batched)
    assert transcribe_ids(model, audio, lengths, beam_size=1) == transcribe_ids(
        model, audio, lengths
    )


def test_beam_restores_training_mode_and_checks_its_options():
    model = _beam_model().train()
    encoder_out, lengths = _encoder_out([4])
    beam_search(model, encoder_out, lengths, 3)
    assert model.decoder.training and model.joiner.training
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="beam_size"):
            beam_search(model, encoder_out, lengths, bad)
    with pytest.raises(ValueError, match="beam_size=0"):
        transcribe_ids(model, torch.zeros(1, 1600), torch.tensor([1600]), beam_size=0)
    with pytest.raises(ValueError, match="max_symbols_per_frame=0"):
        beam_search(model, encoder_out, lengths, 2, 0)


def test_beam_of_utterances_without_frames_is_empty():
    model = _beam_model()
    encoder_out, lengths = _encoder_out([3, 1], seed=6)
    assert beam_search(model, encoder_out[:, :0], torch.tensor([0, 0]), 4) == [[], []]
    hypotheses = beam_search(model, encoder_out, torch.tensor([3, 0]), 4)
    assert hypotheses[1] == []
