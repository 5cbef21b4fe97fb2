"""Batched greedy search: equal to a one-utterance reference, batch-invariant, capped."""

from __future__ import annotations

import pytest
import torch

from rnnt.decoding import greedy_search
from rnnt.models.transducer import Transducer, config_from_preset

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
    batched = model.transcribe_ids(audio, lengths)
    for row, length in enumerate(audio_lengths):
        alone = model.transcribe_ids(audio[row : row + 1, :length], lengths[row : row + 1])
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
