"""Batched greedy and beam search: equal to one-utterance references, batch-invariant, capped;
label-looping greedy equals the frame loop it replaced token for token, with a bounded number
of host reads; beam search's scores are the exact RNN-T log-probabilities of the alignments it
merged."""

from __future__ import annotations

import math
from itertools import product

import pytest
import torch

from rnnt.constants import MAX_SYMBOLS_PER_FRAME
from rnnt.decoding import beam_search, beam_search_nbest, greedy_search, transcribe_ids
from rnnt.greedy import LOOKAHEAD_FRAMES, greedy_host_reads_bound
from rnnt.loss import rnnt_loss
from rnnt.models.transducer import Transducer, TransducerConfig, config_from_preset
from rnnt.op_counts import count_ops
from tests.frame_loop_greedy import frame_loop_greedy_search

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


# --- label looping against the frame loop ---------------------------------------------------------

# Blank logit biases of the random model and what they make greedy search do (tokens per frame
# at max_symbols 5, asserted below): nearly always a token, so max_symbols_per_frame ends most
# frames; a mix; mostly blank, with runs of blank longer than LOOKAHEAD_FRAMES.
EMISSION_BIASES = {"many": (-1.0, 3.0, 5.0), "mixed": (0.7, 0.5, 3.0), "few": (1.6, 0.02, 0.5)}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("emission", sorted(EMISSION_BIASES))
def test_label_looping_equals_frame_loop_on_random_models(seed, emission):
    bias, low, high = EMISSION_BIASES[emission]
    model = _model()
    with torch.no_grad():
        model.joiner.output.bias[0] = bias
    frames = 37  # not a multiple of LOOKAHEAD_FRAMES
    lengths = [frames, 0, 1, LOOKAHEAD_FRAMES - 1, LOOKAHEAD_FRAMES + 1, frames - 1]
    encoder_out, encoder_lengths = _encoder_out(lengths, seed=10 + seed)
    for max_symbols in range(1, 6):
        expected = frame_loop_greedy_search(model, encoder_out, encoder_lengths, max_symbols)
        assert greedy_search(model, encoder_out, encoder_lengths, max_symbols) == expected
    rate = sum(map(len, expected)) / sum(lengths)
    assert low <= rate <= high, rate  # the regime the bias is meant to give
    short_out, short_lengths = _encoder_out([3, 2], seed=seed)  # fewer frames than the lookahead
    assert greedy_search(model, short_out, short_lengths, 2) == frame_loop_greedy_search(
        model, short_out, short_lengths, 2
    )


def _synthetic_alignment_batch(generator: torch.Generator, count: int, prototypes: torch.Tensor):
    """Encoder frames ``(count, T', D)`` spelling token sequences: each token is 1-2 frames of
    its prototype, after 0-12 frames of the blank prototype (runs longer than the lookahead);
    frames carry noise. Returns frames, frame lengths, padded targets, their lengths, the ids."""
    sequences, frame_ids = [], []
    for _ in range(count):
        length = int(torch.randint(1, 9, (), generator=generator))
        tokens = torch.randint(1, NUM_CLASSES, (length,), generator=generator).tolist()
        ids = []
        for token in tokens:
            ids += [0] * int(torch.randint(0, 13, (), generator=generator))
            ids += [token] * int(torch.randint(1, 3, (), generator=generator))
        ids += [0] * int(torch.randint(0, 6, (), generator=generator))
        sequences.append(tokens)
        frame_ids.append(ids)
    encoder_out = torch.zeros(count, max(map(len, frame_ids)), prototypes.size(1))
    targets = torch.ones(count, max(map(len, sequences)), dtype=torch.long)
    for row, (ids, tokens) in enumerate(zip(frame_ids, sequences, strict=True)):
        noise = 0.5 * torch.randn(len(ids), prototypes.size(1), generator=generator)
        encoder_out[row, : len(ids)] = prototypes[ids] + noise
        targets[row, : len(tokens)] = torch.tensor(tokens)
    frame_lengths = torch.tensor([len(ids) for ids in frame_ids])
    return encoder_out, frame_lengths, targets, torch.tensor(list(map(len, sequences))), sequences


@pytest.fixture(scope="module")
def trained_model():
    """The test model's prediction network and joiner trained (100 Adam steps of 8, ~2 s)
    to read token sequences off synthetic encoder frames: peaked outputs, long blank runs."""
    model = _model(dropout=0.0, pred_num_layers=1).train()
    prototypes = 2 * torch.randn(NUM_CLASSES, 32, generator=torch.Generator().manual_seed(99))
    generator = torch.Generator().manual_seed(1)
    joiner = model.joiner
    parameters = [*model.decoder.parameters(), *joiner.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=2e-2)
    for _ in range(100):
        encoder_out, frame_lengths, targets, target_lengths, _ = _synthetic_alignment_batch(
            generator, 8, prototypes
        )
        predictor_proj = joiner.predictor_proj(model.decoder(targets, target_lengths))
        logits = joiner(joiner.encoder_proj(encoder_out)[:, :, None], predictor_proj[:, None])
        loss = rnnt_loss(logits, targets, frame_lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), prototypes


def test_label_looping_equals_frame_loop_on_a_trained_model(trained_model):
    model, prototypes = trained_model
    generator = torch.Generator().manual_seed(2)
    encoder_out, frame_lengths, _, _, sequences = _synthetic_alignment_batch(
        generator, 12, prototypes
    )
    for max_symbols in (1, 2, MAX_SYMBOLS_PER_FRAME):
        expected = frame_loop_greedy_search(model, encoder_out, frame_lengths, max_symbols)
        assert greedy_search(model, encoder_out, frame_lengths, max_symbols) == expected
    # Not vacuous: the model reads the sequences (a random one gets none right).
    assert sum(ids == tokens for ids, tokens in zip(expected, sequences, strict=True)) >= 4


def test_greedy_host_reads_are_bounded_whatever_the_frames():
    model = _model()
    assert greedy_host_reads_bound(MAX_SYMBOLS_PER_FRAME) == 34  # as greedy_search's docstring
    # (bias, max_symbols): every try a token, so every frame ends at the cap (the most steps);
    # mostly tokens; a mix; mostly blank; never a token.
    cases = ((-1e4, 2), (-1.0, 5), (0.7, 5), (1.6, 5), (1e4, 5))
    for (bias, max_symbols), frames in product(cases, (16, 128)):
        with torch.no_grad():
            model.joiner.output.bias[0] = bias
        lengths = [frames, frames // 2, 1, frames - 5]
        encoder_out, encoder_lengths = _encoder_out(lengths, seed=frames)
        with count_ops() as counts:
            hypotheses = greedy_search(model, encoder_out, encoder_lengths, max_symbols)
        assert counts.host_reads <= greedy_host_reads_bound(max_symbols), counts.reads_by_kind
        assert counts.host_reads <= 9  # the estimate keeps them few in practice
        if bias == 1e4:  # one check after the first chunk of steps, one read of the ids
            assert hypotheses == [[]] * 4 and counts.host_reads == 2
        if bias == -1e4:
            assert list(map(len, hypotheses)) == [max_symbols * n for n in lengths]
    # The counter sees the reads: the frame loop reads once per frame and symbol.
    encoder_out, encoder_lengths = _encoder_out([64, 30])
    with count_ops() as counts:
        frame_loop_greedy_search(model, encoder_out, encoder_lengths, MAX_SYMBOLS_PER_FRAME)
    assert counts.host_reads > 64


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
