"""Transducer: configuration, presets, loss and gradients, and learning (overfitting)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rnnt.checkpoint import (
    MODEL_CONFIG_KEY,
    STATE_DICT_PREFIX,
    TOKENIZER_KEY,
    load_checkpoint,
    stored_config,
)
from rnnt.constants import FRONTEND_STYLE, SAMPLE_RATE
from rnnt.data.tokenizer import Tokenizer
from rnnt.decoding import transcribe_ids
from rnnt.loss import fused_rnnt_loss
from rnnt.models.joiner import Joiner
from rnnt.models.transducer import PRESETS, Transducer, TransducerConfig, config_from_preset

SMALL = dict(
    d_model=32,
    num_layers=1,
    num_heads=2,
    ff_mult=2,
    subsampling_channels=8,
    pred_embed_dim=16,
    pred_hidden_dim=24,
    joiner_dim=32,
)


def _batch(num_classes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    audio_lengths = torch.tensor([16_000, 9_000, 12_500])
    audio = 0.1 * torch.randn(3, 16_000, generator=generator)
    audio[1, 9_000:] = 0
    audio[2, 12_500:] = 0
    target_lengths = torch.tensor([5, 2, 0])
    targets = torch.randint(1, num_classes, (3, 5), generator=generator)
    return audio, audio_lengths, targets, target_lengths


def test_config_round_trips_through_json():
    config = config_from_preset("small", 129, attention_context_size=(16, 0), causal_conv=True)
    restored = TransducerConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert restored.attention_context_size == [16, 0]


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        config_from_preset("huge", 129)
    with pytest.raises(ValueError, match="no field"):
        TransducerConfig.from_dict({"num_classes": 5, "d_modle": 3})
    with pytest.raises(ValueError, match="num_classes=1"):
        TransducerConfig(num_classes=1)


def test_frontend_style_defaults_to_sherpa_and_is_checked_by_name():
    config = config_from_preset("tiny", 7, **SMALL)
    assert config.frontend_style == FRONTEND_STYLE == "sherpa"
    assert Transducer(config).frontend.style == "sherpa"
    kaldi = config_from_preset("tiny", 7, **SMALL, frontend_style="kaldi")
    assert Transducer(kaldi).frontend.style == "kaldi"
    with pytest.raises(ValueError, match=r"frontend_style='htk'.*'sherpa', 'kaldi'"):
        config_from_preset("tiny", 7, frontend_style="htk")


def test_checkpoints_without_frontend_style_load_with_kaldi_features(tiny_corpus, tmp_path):
    """A checkpoint written before the field existed was trained on Kaldi features; a config
    built today without the key (presets, YAML) gets today's default."""
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    config = config_from_preset("tiny", tokenizer.num_classes, **SMALL, frontend_style="kaldi")
    model = Transducer(config).eval()
    stored = config.to_dict()
    del stored["frontend_style"]
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": {STATE_DICT_PREFIX + k: v for k, v in model.state_dict().items()},
            MODEL_CONFIG_KEY: stored,
            TOKENIZER_KEY: tokenizer.model_bytes,
        },
        path,
    )
    loaded, _ = load_checkpoint(path)
    assert loaded.config.frontend_style == "kaldi" and loaded.frontend.style == "kaldi"
    audio, audio_lengths, _, _ = _batch(tokenizer.num_classes)
    assert torch.equal(
        loaded.frontend(audio, audio_lengths)[0], model.frontend(audio, audio_lengths)[0]
    )
    assert TransducerConfig.from_dict(stored).frontend_style == "sherpa"
    assert stored_config({**stored, "frontend_style": "sherpa"}).frontend_style == "sherpa"


@pytest.mark.parametrize(("preset", "low", "high"), [("tiny", 1.0e6, 3.0e6), ("small", 8e6, 13e6)])
def test_preset_sizes(preset, low, high):
    count = Transducer(config_from_preset(preset, 129)).num_parameters()
    assert low <= count <= high
    assert set(PRESETS) == {"tiny", "small", "medium", "large"}


def test_loss_is_the_fused_loss_of_the_parts():
    torch.manual_seed(0)
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).eval()
    audio, audio_lengths, targets, target_lengths = _batch(7)
    loss = model(audio, audio_lengths, targets, target_lengths)
    with torch.no_grad():
        encoder_out, encoder_lengths = model.encode(audio, audio_lengths)
        decoder_out = model.decoder(targets, target_lengths)
        expected = fused_rnnt_loss(
            model.joiner.encoder_proj(encoder_out),
            model.joiner.predictor_proj(decoder_out),
            model.joiner.output.weight,
            model.joiner.output.bias,
            targets,
            encoder_lengths,
            target_lengths,
            activation=model.joiner.activation,
        )
        expected = expected + model.config.ctc_weight * model.ctc_loss(
            encoder_out, encoder_lengths, targets, target_lengths
        )
    assert loss.dim() == 0 and loss.dtype == torch.float32
    torch.testing.assert_close(loss.detach(), expected)


def test_ctc_loss_is_torch_ctc_and_off_when_weight_is_zero():
    torch.manual_seed(0)
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).eval()
    audio, audio_lengths, targets, target_lengths = _batch(7)
    with torch.no_grad():
        encoder_out, encoder_lengths = model.encode(audio, audio_lengths)
        log_probs = model.ctc_head(encoder_out).log_softmax(-1).transpose(0, 1)
        expected = torch.nn.functional.ctc_loss(
            log_probs, targets, encoder_lengths, target_lengths, reduction="none"
        ).mean()
        torch.testing.assert_close(
            model.ctc_loss(encoder_out, encoder_lengths, targets, target_lengths), expected
        )
    no_ctc = Transducer(config_from_preset("tiny", 7, **SMALL, ctc_weight=0.0))
    assert no_ctc.ctc_head is None


def test_host_lengths_give_the_same_loss_and_gradients_without_a_host_read():
    """The training path: lengths from the loader's host lists, targets checked by the
    dataset. In training mode (feature statistics, SpecAugment) it reads no device value."""
    import copy

    from rnnt.op_counts import count_ops

    torch.manual_seed(0)
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).train()
    assert model.ctc_head is not None  # the CTC term takes part
    other = copy.deepcopy(model)
    audio, audio_lengths, targets, target_lengths = _batch(7)
    torch.manual_seed(1)  # the same SpecAugment masks and dropout in both
    expected = model(audio, audio_lengths, targets, target_lengths)
    expected.backward()
    host_audio_lengths, host_target_lengths = audio_lengths.tolist(), target_lengths.tolist()
    torch.manual_seed(1)
    with count_ops() as counts:
        loss = other(
            audio,
            audio_lengths,
            targets,
            target_lengths,
            host_audio_lengths=host_audio_lengths,
            host_target_lengths=host_target_lengths,
            validate=False,
        )
        loss.backward()
    assert counts.host_reads == 0, counts.reads_by_kind
    torch.testing.assert_close(loss, expected)
    for (name, p), q in zip(model.named_parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    assert torch.equal(other.normalizer.mean, model.normalizer.mean)  # updated alike


def test_host_encoder_lengths_are_those_of_encode():
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).eval()
    samples = [80, 159, 160, 161, 479, 480, 640, 641, 12_345, 16_000]
    audio = torch.zeros(len(samples), max(samples))
    _, encoder_lengths = model.encode(audio, torch.tensor(samples))
    host = model.host_encoder_lengths(samples)
    assert host.device.type == "cpu" and torch.equal(host, encoder_lengths)


def test_the_ctc_term_gets_the_host_lengths(monkeypatch):
    """F.ctc_loss reads its lengths on the host: device tensors would be copied back to it
    (a sync on a GPU), so the training path hands it CPU tensors."""
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).eval()
    audio, audio_lengths, targets, target_lengths = _batch(7)
    seen = {}
    ctc_loss = torch.nn.functional.ctc_loss

    def spy(log_probs, targets, input_lengths, target_lengths, **kwargs):
        seen.update(input_lengths=input_lengths, target_lengths=target_lengths)
        return ctc_loss(log_probs, targets, input_lengths, target_lengths, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "ctc_loss", spy)
    encoder_out, encoder_lengths = model.encode(audio, audio_lengths)
    host = model.host_encoder_lengths(audio_lengths.tolist())
    model.loss(
        encoder_out,
        encoder_lengths,
        targets,
        target_lengths,
        host_encoder_lengths=host,
        host_target_lengths=target_lengths.tolist(),
        validate=False,
    )
    assert seen["input_lengths"] is host  # not the encoder's (device) lengths
    assert seen["target_lengths"].device.type == "cpu"
    assert seen["target_lengths"].tolist() == target_lengths.tolist()


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).train()
    loss = model(*_batch(7))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_loss_is_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(*_batch(7))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


def test_joiner_broadcasts_over_the_lattice():
    joiner = Joiner(encoder_dim=6, predictor_dim=5, joiner_dim=4, num_classes=3, activation="relu")
    encoder_proj = joiner.encoder_proj(torch.randn(2, 7, 6))
    predictor_proj = joiner.predictor_proj(torch.randn(2, 4, 5))
    logits = joiner(encoder_proj.unsqueeze(2), predictor_proj.unsqueeze(1))
    assert logits.shape == (2, 7, 4, 3)
    torch.testing.assert_close(logits[1, 3, 2], joiner(encoder_proj[1, 3], predictor_proj[1, 2]))
    with pytest.raises(ValueError, match="joiner_activation='gelu'"):
        Joiner(6, 5, 4, 3, activation="gelu")


def test_transcribe_ids_restores_training_mode():
    model = Transducer(config_from_preset("tiny", 7, **SMALL)).train()
    audio, audio_lengths, _, _ = _batch(7)
    hypotheses = transcribe_ids(model, audio, audio_lengths, max_symbols_per_frame=2)
    assert len(hypotheses) == 3 and model.training


def _tone_utterance(tokens: list[int]) -> torch.Tensor:
    """50 ms silence, then per token a 120 ms tone at 300 Hz x token and 40 ms silence."""
    pieces = [torch.zeros(int(0.05 * SAMPLE_RATE))]
    for token in tokens:
        samples = int(0.12 * SAMPLE_RATE)
        time_s = torch.arange(samples) / SAMPLE_RATE
        tone = torch.sin(2 * math.pi * 300.0 * token * time_s) * torch.hann_window(samples)
        pieces += [0.3 * tone, torch.zeros(int(0.04 * SAMPLE_RATE))]
    return torch.cat(pieces)


@pytest.fixture
def one_thread():
    # Tiny ops: one thread is as fast, and does not collapse when other jobs load the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_overfits_tone_utterances(one_thread):
    torch.manual_seed(0)
    num_classes = 7
    generator = torch.Generator().manual_seed(0)
    references = [
        torch.randint(1, num_classes, (int(n),), generator=generator).tolist()
        for n in torch.randint(3, 7, (4,), generator=generator)
    ]
    waves = [_tone_utterance(tokens) for tokens in references]
    audio = torch.zeros(4, max(len(w) for w in waves))
    targets = torch.zeros(4, max(len(r) for r in references), dtype=torch.long)
    for row, (wave, tokens) in enumerate(zip(waves, references, strict=True)):
        audio[row, : len(wave)] = wave
        targets[row, : len(tokens)] = torch.tensor(tokens)
    audio += 0.01 * torch.randn(audio.shape, generator=generator)
    audio_lengths = torch.tensor([len(w) for w in waves])
    target_lengths = torch.tensor([len(r) for r in references])

    config = config_from_preset(
        "tiny", num_classes, **{**SMALL, "num_layers": 2, "dropout": 0.0, "spec_augment": False}
    )
    model = Transducer(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first_loss = None
    for step in range(400):
        model.train()
        loss = model(audio, audio_lengths, targets, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first_loss = first_loss or loss.item()
        converged = step % 20 == 19 and loss.item() < 0.1 * first_loss
        if converged and transcribe_ids(model, audio, audio_lengths) == references:
            break
    assert loss.item() < 0.1 * first_loss
    assert transcribe_ids(model, audio, audio_lengths) == references
