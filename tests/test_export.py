"""ONNX export for sherpa-onnx: each module equals PyTorch, and sherpa-onnx transcribes with it:
exactly like `rnnt transcribe` for a "sherpa"-style model, nearly for a "kaldi"-style one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rnnt.checkpoint import MODEL_CONFIG_KEY, STATE_DICT_PREFIX, TOKENIZER_KEY, load_checkpoint
from rnnt.constants import BLANK_PIECE, SHERPA_MAX_SYMBOLS_PER_FRAME, SHERPA_MODEL_TYPE
from rnnt.data.tokenizer import Tokenizer
from rnnt.decoding import greedy_search, transcribe_ids
from rnnt.export import export_onnx, feature_map, sherpa_modules
from rnnt.models.features import LogMelFrontend
from rnnt.models.mel import slaney_mel_banks
from rnnt.models.transducer import Transducer, config_from_preset
from tests.tiny import TINY_MODEL

ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (pip install .[export])"
)
pytest.importorskip("onnx", reason="onnx is not installed (pip install .[export])")

ATOL = 1e-4
EMITTING_FRAMES = 0.25  # share of frames where the random test model emits a first token


def _audio(corpus: Path, split: str) -> list[torch.Tensor]:
    lines = (corpus / f"{split}.jsonl").read_text().splitlines()
    paths = [corpus / json.loads(line)["audio_filepath"] for line in lines]
    return [torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in paths]


def _random_model(tokenizer: Tokenizer, audio: list[torch.Tensor], **overrides) -> Transducer:
    """A random tiny model whose blank bias makes it emit at about EMITTING_FRAMES of frames.

    Untrained, it would emit the most tokens allowed at every frame; a fixed blank bias gives
    transcripts with both blanks and tokens, which is what the comparisons need.
    """
    torch.manual_seed(0)
    config = config_from_preset(
        "tiny", tokenizer.num_classes, **TINY_MODEL, spec_augment=False, **overrides
    )
    model = Transducer(config).eval()
    with torch.no_grad():
        margins = []
        start = model.decoder.step(
            torch.zeros(1, dtype=torch.long), model.decoder.initial_state(1, "cpu")
        )
        for samples in audio:
            encoder_out, _ = model.encode(samples.view(1, -1), torch.tensor([samples.numel()]))
            logits = model.joiner(
                model.joiner.encoder_proj(encoder_out[0]), model.joiner.predictor_proj(start[0])
            )
            blank = config.blank_id
            others = torch.cat((logits[:, :blank], logits[:, blank + 1 :]), dim=1)
            margins.append(others.max(dim=1).values - logits[:, blank])
        model.joiner.output.bias[config.blank_id] += torch.quantile(
            torch.cat(margins), 1.0 - EMITTING_FRAMES
        )
    return model


def _save_checkpoint(model: Transducer, tokenizer: Tokenizer, path: Path) -> Path:
    torch.save(
        {
            "state_dict": {STATE_DICT_PREFIX + k: v for k, v in model.state_dict().items()},
            MODEL_CONFIG_KEY: model.config.to_dict(),
            TOKENIZER_KEY: tokenizer.model_bytes,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def exported(tiny_corpus, tmp_path_factory):
    """(checkpoint path, written paths) of a random tiny model calibrated on the corpus."""
    folder = tmp_path_factory.mktemp("export")
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    model = _random_model(tokenizer, _audio(tiny_corpus, "val"))
    checkpoint = _save_checkpoint(model, tokenizer, folder / "model.ckpt")
    return checkpoint, export_onnx(checkpoint, folder / "onnx")


@pytest.fixture(scope="module")
def modules(exported):
    model, tokenizer = load_checkpoint(exported[0])
    return model, tokenizer, *sherpa_modules(model)


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("lengths", "frames"), [((37,), 37), ((90, 61, 8), 90)])
def test_onnx_encoder_matches_pytorch_for_any_batch_and_length(exported, modules, lengths, frames):
    encoder = modules[2]
    torch.manual_seed(len(lengths))
    features = torch.randn(len(lengths), modules[0].config.n_mels, frames) - 8.0
    feature_lengths = torch.tensor(lengths)
    onnx_out, onnx_lengths = _session(exported[1]["encoder"]).run(
        None, {"features": features.numpy(), "feature_lengths": feature_lengths.numpy()}
    )
    with torch.no_grad():
        expected, expected_lengths = encoder(features, feature_lengths)
    assert onnx_lengths.tolist() == expected_lengths.tolist()
    for row, length in enumerate(expected_lengths.tolist()):
        np.testing.assert_allclose(
            onnx_out[row, :, :length], expected[row, :, :length].numpy(), atol=ATOL
        )


@pytest.mark.parametrize(
    ("contexts", "style"), [([8, 2], "sliding"), ([[4, 3], [4, 1], [-1, -1]], "chunked")]
)
def test_export_of_a_streaming_configuration_matches_pytorch(
    contexts, style, tiny_corpus, tmp_path
):
    """Limited attention context (sliding, or chunked contexts: the export is at the first),
    causal convolutions, 8x subsampling, a 2-layer LSTM."""
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    overrides = {**TINY_MODEL, "attention_context_size": contexts, "causal_conv": True}
    overrides["attention_context_style"] = style
    config = config_from_preset(
        "tiny", tokenizer.num_classes, **overrides, subsampling_factor=8, pred_num_layers=2
    )
    torch.manual_seed(1)
    checkpoint = _save_checkpoint(Transducer(config), tokenizer, tmp_path / "model.ckpt")
    paths = export_onnx(checkpoint, tmp_path / "onnx")
    model, _ = load_checkpoint(checkpoint)
    encoder, decoder, _ = sherpa_modules(model)
    features, feature_lengths = torch.randn(2, config.n_mels, 203) - 8.0, torch.tensor([203, 77])
    onnx_out, onnx_lengths = _session(paths["encoder"]).run(
        None, {"features": features.numpy(), "feature_lengths": feature_lengths.numpy()}
    )
    state = torch.randn(2, 2, config.pred_hidden_dim)
    targets, target_lengths = (
        torch.tensor([[3], [0]], dtype=torch.int32),
        torch.ones(2, dtype=torch.int32),
    )
    onnx_decoded, _, onnx_h, _ = _session(paths["decoder"]).run(
        None,
        {
            "targets": targets.numpy(),
            "target_lengths": target_lengths.numpy(),
            "h": state.numpy(),
            "c": state.numpy(),
        },
    )
    with torch.no_grad():
        expected, expected_lengths = encoder(features, feature_lengths)
        decoded, _, h, _ = decoder(targets, target_lengths, state, state)
    assert onnx_lengths.tolist() == expected_lengths.tolist() == [26, 10]
    for row, length in enumerate(expected_lengths.tolist()):
        np.testing.assert_allclose(onnx_out[row, :, :length], expected[row, :, :length], atol=ATOL)
    np.testing.assert_allclose(onnx_decoded, decoded.numpy(), atol=ATOL)
    np.testing.assert_allclose(onnx_h, h.numpy(), atol=ATOL)


def test_onnx_decoder_matches_pytorch_with_state_carried(exported, modules):
    model, decoder = modules[0], modules[3]
    session = _session(exported[1]["decoder"])
    shape = (model.config.pred_num_layers, 3, model.config.pred_hidden_dim)
    h, c = torch.randn(shape), torch.randn(shape)
    onnx_state = (h.numpy(), c.numpy())
    for step in range(3):  # the state each step returns feeds the next one
        targets = torch.tensor(
            [[model.config.num_classes - 1], [step], [5 + step]], dtype=torch.int32
        )
        lengths = torch.ones(3, dtype=torch.int32)
        out, _, *onnx_state = session.run(
            None,
            {
                "targets": targets.numpy(),
                "target_lengths": lengths.numpy(),
                "h": onnx_state[0],
                "c": onnx_state[1],
            },
        )
        with torch.no_grad():
            expected, _, h, c = decoder(targets, lengths, h, c)
        np.testing.assert_allclose(out, expected.numpy(), atol=ATOL)
        np.testing.assert_allclose(onnx_state[0], h.numpy(), atol=ATOL)
        np.testing.assert_allclose(onnx_state[1], c.numpy(), atol=ATOL)


def test_onnx_joiner_matches_pytorch_with_blank_last(exported, modules):
    model, joiner = modules[0], modules[4]
    torch.manual_seed(3)
    encoder_out = torch.randn(4, model.config.joiner_dim, 1)
    decoder_out = torch.randn(4, model.config.joiner_dim, 1)
    (logits,) = _session(exported[1]["joiner"]).run(
        None, {"encoder_out": encoder_out.numpy(), "decoder_out": decoder_out.numpy()}
    )
    with torch.no_grad():
        wrapped = joiner(encoder_out, decoder_out)
        ours = model.joiner(encoder_out[:, :, 0], decoder_out[:, :, 0])  # (N, V), blank first
    assert logits.shape == (4, 1, 1, model.config.num_classes)
    np.testing.assert_allclose(logits, wrapped.numpy(), atol=ATOL)
    np.testing.assert_allclose(logits[:, 0, 0, -1], ours[:, 0].numpy(), atol=ATOL)
    np.testing.assert_allclose(logits[:, 0, 0, :-1], ours[:, 1:].numpy(), atol=ATOL)


def test_tokens_txt_lists_every_piece_then_blank_last(exported, modules):
    tokenizer = modules[1]
    lines = exported[1]["tokens"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == tokenizer.num_classes
    assert lines[-1] == f"{BLANK_PIECE} {tokenizer.num_classes - 1}"
    for sherpa_id, line in enumerate(lines[:-1]):
        assert line == f"{tokenizer.id_to_piece(sherpa_id + 1)} {sherpa_id}"


def test_encoder_metadata_has_what_sherpa_reads(exported, modules):
    config = modules[0].config
    metadata = _session(exported[1]["encoder"]).get_modelmeta().custom_metadata_map
    assert metadata["vocab_size"] == str(config.num_classes - 1)
    assert metadata["subsampling_factor"] == str(config.subsampling_factor)
    assert metadata["normalize_type"] == ""
    assert metadata["pred_rnn_layers"] == str(config.pred_num_layers)
    assert metadata["pred_hidden"] == str(config.pred_hidden_dim)
    assert metadata["feat_dim"] == str(config.n_mels)
    # the training features, spelled out (sherpa-onnx computes exactly these)
    assert metadata["feature_style"] == config.frontend_style == "sherpa"
    assert metadata["feature_mel_scale"].startswith("slaney")
    assert (
        metadata["feature_low_freq_hz"] == "0" and metadata["feature_remove_dc_offset"] == "false"
    )


def test_sherpa_style_encoder_takes_sherpa_features_as_they_are(modules):
    assert modules[0].config.frontend_style == "sherpa"
    assert isinstance(modules[2].feature_map, torch.nn.Identity)


def test_feature_map_brings_sherpa_features_close_to_kaldi_features(tiny_corpus):
    kaldi, sherpa = LogMelFrontend(style="kaldi"), LogMelFrontend(style="sherpa")
    weight, bias = feature_map(kaldi.fbank._fb, slaney_mel_banks(fft_length=kaldi.fbank.fft_length))
    before, after = [], []
    for samples in _audio(tiny_corpus, "test"):
        lengths = torch.tensor([samples.numel()])
        ours, theirs = (
            kaldi(samples.view(1, -1), lengths)[0][0],
            sherpa(samples.view(1, -1), lengths)[0][0],
        )
        scale = ours.std(dim=0)  # errors in units of each bin's spread over the utterance
        before.append(((theirs - ours) / scale).pow(2).mean())
        after.append(((theirs @ weight.T + bias - ours) / scale).pow(2).mean())
    rms_before, rms_after = torch.stack(before).mean().sqrt(), torch.stack(after).mean().sqrt()
    assert rms_after < 0.5 and rms_after < 0.5 * rms_before, (rms_before, rms_after)


def _sherpa_tokens(paths: dict[str, Path], audio: list[torch.Tensor]) -> list[list[str]]:
    """sherpa-onnx's token pieces for each utterance, with the exported files."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="sherpa-onnx is not installed")
    recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(paths["encoder"]),
        decoder=str(paths["decoder"]),
        joiner=str(paths["joiner"]),
        tokens=str(paths["tokens"]),
        model_type=SHERPA_MODEL_TYPE,
        num_threads=1,
    )
    tokens = []
    for samples in audio:
        stream = recognizer.create_stream()
        stream.accept_waveform(16_000, samples.numpy())
        recognizer.decode_stream(stream)
        tokens.append(list(stream.result.tokens))
    return tokens


def _token_error_rate(
    tokenizer: Tokenizer, sherpa_tokens: list[list[str]], our_ids: list[list[int]]
) -> float:
    """Edit distance between sherpa's pieces and our token ids, per token of ours."""
    from torchmetrics.functional.text import word_error_rate

    # sherpa-onnx shows SentencePiece's word-start mark as a space
    ids = {
        tokenizer.id_to_piece(i).replace("\u2581", " "): i for i in range(1, tokenizer.num_classes)
    }
    hypotheses = [" ".join(str(ids[piece]) for piece in tokens) for tokens in sherpa_tokens]
    references = [" ".join(str(i) for i in utterance) for utterance in our_ids]
    assert sum(len(utterance) for utterance in our_ids) > 20, "the test model should emit tokens"
    return float(word_error_rate(hypotheses, references))


def test_sherpa_onnx_transcribes_raw_audio_exactly_like_rnnt(tiny_corpus, exported, modules):
    """A "sherpa"-style model: sherpa-onnx, computing its own features from the raw audio,
    gives the token ids of our greedy search on our own front end's features.

    The two compute the same features up to float rounding (kaldi-native-fbank vs lhotse,
    ~1e-5), so only an exact near-tie could flip a token: we allow at most 1 % of tokens.
    """
    model, tokenizer = modules[:2]
    audio = _audio(tiny_corpus, "test")
    sherpa_tokens = _sherpa_tokens(exported[1], audio)
    our_ids = [
        transcribe_ids(
            model,
            samples.view(1, -1),
            torch.tensor([samples.numel()]),
            max_symbols_per_frame=SHERPA_MAX_SYMBOLS_PER_FRAME,
        )[0]
        for samples in audio
    ]
    assert _token_error_rate(tokenizer, sherpa_tokens, our_ids) <= 0.01, (sherpa_tokens, our_ids)


def test_kaldi_style_export_maps_sherpa_features_and_warns(tiny_corpus, tmp_path, caplog):
    """A "kaldi"-style model (every checkpoint from before frontend_style): the export warns,
    its encoder maps sherpa's features onto Kaldi's (``feature_map``), and sherpa-onnx gives
    the token ids of our greedy search on sherpa's features through that same map.

    Both sides then see the same features up to float rounding, so at most a near-tie may
    flip: token error rate <= 2 %. Against our own front end the transcripts differ (3.5 %
    WER on the trained demo model, README).
    """
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    model = _random_model(tokenizer, _audio(tiny_corpus, "val"), frontend_style="kaldi")
    checkpoint = _save_checkpoint(model, tokenizer, tmp_path / "model.ckpt")
    with caplog.at_level("WARNING", logger="rnnt.export"):
        paths = export_onnx(checkpoint, tmp_path / "onnx")
    assert "frontend_style 'kaldi'" in caplog.text and "Retrain" in caplog.text
    model, _ = load_checkpoint(checkpoint)
    encoder = sherpa_modules(model)[0]
    assert isinstance(encoder.feature_map, torch.nn.Linear)

    features, feature_lengths = (
        torch.randn(2, model.config.n_mels, 64) - 8.0,
        torch.tensor([64, 41]),
    )
    onnx_out, _ = _session(paths["encoder"]).run(
        None, {"features": features.numpy(), "feature_lengths": feature_lengths.numpy()}
    )
    with torch.no_grad():
        expected, expected_lengths = encoder(features, feature_lengths)
    for row, length in enumerate(expected_lengths.tolist()):
        np.testing.assert_allclose(onnx_out[row, :, :length], expected[row, :, :length], atol=ATOL)

    audio = _audio(tiny_corpus, "test")
    sherpa_frontend = LogMelFrontend(style="sherpa")
    our_ids = []
    for samples in audio:
        lengths = torch.tensor([samples.numel()])
        with torch.no_grad():
            mel, mel_lengths = sherpa_frontend(samples.view(1, -1), lengths)
            mel = encoder.feature_map(mel)
            encoder_out, encoder_lengths = model.encoder(
                model.normalizer(mel, mel_lengths), mel_lengths
            )
            our_ids += greedy_search(
                model, encoder_out, encoder_lengths, SHERPA_MAX_SYMBOLS_PER_FRAME
            )
    assert _token_error_rate(tokenizer, _sherpa_tokens(paths, audio), our_ids) <= 0.02
