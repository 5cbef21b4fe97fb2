"""Streaming ONNX export for sherpa-onnx's OnlineRecognizer: the encoder's packed caches carry
what StreamingEncoder's do, and sherpa-onnx, fed chunk by chunk, gives StreamingSession's ids."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rnnt.checkpoint import load_checkpoint
from rnnt.cli import main
from rnnt.constants import SHERPA_MAX_SYMBOLS_PER_FRAME, SHERPA_ONLINE_TAIL_EXTRA_MS
from rnnt.data.tokenizer import Tokenizer
from rnnt.export_streaming import (
    export_streaming_onnx,
    online_feature_map,
    sherpa_online_frontend,
    streaming_encoder,
)
from rnnt.models.streaming_encoder import StreamingEncoder
from rnnt.models.transducer import Transducer, config_from_preset
from rnnt.streaming import StreamingSession
from tests.test_export import _audio, _random_model, _save_checkpoint, _token_error_rate
from tests.tiny import TINY_MODEL

ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (pip install .[export])"
)
pytest.importorskip("onnx", reason="onnx is not installed (pip install .[export])")

ATOL = 1e-4
# Chunked contexts of 160 and 320 ms (40 ms encoder frames) with 320 ms of left context, and
# the full context, as configs/streaming.yaml has at a larger scale.
CONTEXTS = [[8, 3], [8, 7], [-1, -1]]
STREAMING = {"attention_context_size": CONTEXTS, "attention_context_style": "chunked"}


@pytest.fixture(scope="module")
def streaming_checkpoint(tiny_corpus, tmp_path_factory) -> Path:
    """A random tiny streaming model calibrated to emit on the corpus, saved."""
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    model = _random_model(tokenizer, _audio(tiny_corpus, "val"), **STREAMING, causal_conv=True)
    folder = tmp_path_factory.mktemp("streaming")
    return _save_checkpoint(model, tokenizer, folder / "model.ckpt")


@pytest.fixture(scope="module")
def exports(streaming_checkpoint, tmp_path_factory):
    """``exports(chunk_ms)``: the written paths, one export per chunk size."""
    done: dict[int, dict[str, Path]] = {}

    def export(chunk_ms: int) -> dict[str, Path]:
        if chunk_ms not in done:
            out = tmp_path_factory.mktemp(f"onnx{chunk_ms}")
            done[chunk_ms] = export_streaming_onnx(streaming_checkpoint, out, chunk_ms)
        return done[chunk_ms]

    return export


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, features: torch.Tensor, caches: list[np.ndarray]) -> list[np.ndarray]:
    """One call of encoder.onnx: ``features (N, F, T_c)``; returns its five outputs."""
    names = [given.name for given in session.get_inputs()]
    lengths = np.full(features.size(0), features.size(2), dtype=np.int64)
    return session.run(None, dict(zip(names, [features.numpy(), lengths, *caches], strict=True)))


@pytest.mark.parametrize(("chunk_ms", "context"), [(160, [8, 3]), (320, [8, 7]), (640, [8, 7])])
def test_onnx_encoder_chunk_by_chunk_equals_streaming_encoder(
    streaming_checkpoint, exports, chunk_ms, context
):
    """Seven chunks (past the 8 frames of left context) through encoder.onnx with its caches
    equal our StreamingEncoder on the same features (mapped and normalised as in the graph);
    640 ms runs two 320 ms chunks of the context per call."""
    model, _ = load_checkpoint(streaming_checkpoint)
    encoder = streaming_encoder(model, chunk_ms)
    assert encoder.context == context
    session = _session(exports(chunk_ms)["encoder"])
    frames = encoder.chunk_frames
    features = torch.randn(1, model.config.n_mels, 7 * frames) - 8.0
    reference = StreamingEncoder(model.encoder, context)
    cache = reference.initial_cache(1, "cpu")
    caches = [cache.numpy() for cache in encoder.initial_cache(1)]
    with torch.no_grad():
        mel = encoder.feature_map(features.transpose(1, 2))
        normalised = model.normalizer(mel, torch.tensor([mel.size(1)]))
        for index in range(7):
            chunk = slice(index * frames, (index + 1) * frames)
            encoder_out, lengths, *caches = _run(session, features[:, :, chunk], caches)
            expected, cache = reference(normalised[:, chunk], cache)
            expected = model.joiner.encoder_proj(expected).transpose(1, 2)
            np.testing.assert_allclose(encoder_out, expected.numpy(), atol=ATOL)
            assert lengths.tolist() == [frames // 4]
            assert caches[2].tolist() == [min((index + 1) * frames // 4, context[0])]


def test_streams_at_different_positions_share_one_batch(streaming_checkpoint, exports):
    """As sherpa-onnx batches its streams: each row's caches give that row's output alone."""
    model, _ = load_checkpoint(streaming_checkpoint)
    encoder = streaming_encoder(model, 320)
    session = _session(exports(320)["encoder"])
    shape = (1, model.config.n_mels, encoder.chunk_frames)
    first = [torch.randn(shape) - 8.0 for _ in range(3)]
    second = [torch.randn(shape) - 8.0 for _ in range(2)]
    caches_first = [cache.numpy() for cache in encoder.initial_cache(1)]
    for chunk in first[:2]:
        _, _, *caches_first = _run(session, chunk, caches_first)
    alone_first = _run(session, first[2], caches_first)
    caches_second = [cache.numpy() for cache in encoder.initial_cache(1)]
    _, _, *caches_second = _run(session, second[0], caches_second)
    alone_second = _run(session, second[1], caches_second)
    stacked = [np.concatenate(pair) for pair in zip(caches_first, caches_second, strict=True)]
    together = _run(session, torch.cat((first[2], second[1])), stacked)
    for batched, one, other in zip(together, alone_first, alone_second, strict=True):
        np.testing.assert_allclose(batched, np.concatenate((one, other)), atol=ATOL)


class _MappedNormalizer(nn.Module):
    """The encoder graph's first steps: sherpa's features mapped, then the model's CMVN."""

    def __init__(self, feature_map: nn.Module, normalizer: nn.Module) -> None:
        super().__init__()
        self.feature_map, self.normalizer = feature_map, normalizer

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.normalizer(self.feature_map(features), lengths)


def _as_sherpa_runs_it(model: Transducer) -> Transducer:
    """The model with sherpa-onnx's online features and the export's map onto its own."""
    twin = copy.deepcopy(model)
    twin.frontend = sherpa_online_frontend(model.config.n_mels)
    twin.normalizer = _MappedNormalizer(online_feature_map(model), model.normalizer)
    return twin


def _sherpa_pieces(paths: dict[str, Path], audio: torch.Tensor) -> list[str]:
    """sherpa-onnx's OnlineRecognizer on ``audio`` fed in 10 ms pieces: its token pieces."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="sherpa-onnx is not installed")
    recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
        encoder=str(paths["encoder"]),
        decoder=str(paths["decoder"]),
        joiner=str(paths["joiner"]),
        tokens=str(paths["tokens"]),
        num_threads=1,
    )
    stream = recognizer.create_stream()
    for start in range(0, audio.numel(), 160):
        stream.accept_waveform(16_000, audio[start : start + 160].numpy())
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    return list(recognizer.tokens(stream))


@pytest.mark.parametrize("chunk_ms", [160, 320])
def test_sherpa_online_recognizer_gives_the_streaming_session_ids(
    tiny_corpus, streaming_checkpoint, exports, chunk_ms
):
    """sherpa-onnx, fed 10 ms pieces, gives the ids of StreamingSession given the same audio
    and sherpa's features (their map in the graph), with sherpa's greedy rule (at most 10
    tokens per frame).

    Both get the tail sherpa needs: it runs a chunk only once a frame more than the chunk is
    ready and never runs a partial one, so the audio ends with a chunk and 10 ms of silence
    that both decode as whole chunks. (Without it, StreamingSession.finish() decodes the last
    partial chunk on its own frames and the transcripts may differ at the end: README.) The
    two compute the features up to float rounding (kaldi-native-fbank vs lhotse, ~1e-5), so
    only an exact near-tie of this random model may flip a token: one utterance at most, and
    1 % of the tokens, as for the offline export.
    """
    model, tokenizer = load_checkpoint(streaming_checkpoint)
    twin = _as_sherpa_runs_it(model)
    tail = torch.zeros(16 * (chunk_ms + SHERPA_ONLINE_TAIL_EXTRA_MS))
    sherpa, ours = [], []
    for samples in _audio(tiny_corpus, "test"):
        padded = torch.cat((samples, tail))
        sherpa.append(_sherpa_pieces(exports(chunk_ms), padded))
        session = StreamingSession(twin, chunk_ms, SHERPA_MAX_SYMBOLS_PER_FRAME)
        ours.append(session.accept(padded))
    identical = [ids == _ids(tokenizer, pieces) for pieces, ids in zip(sherpa, ours, strict=True)]
    assert sum(identical) >= len(identical) - 1, identical
    assert _token_error_rate(tokenizer, sherpa, ours) <= 0.01


def _ids(tokenizer: Tokenizer, pieces: list[str]) -> list[int]:
    # sherpa-onnx shows SentencePiece's word-start mark as a space
    ids = {
        tokenizer.id_to_piece(i).replace("\u2581", " "): i for i in range(1, tokenizer.num_classes)
    }
    return [ids[piece] for piece in pieces]


def test_encoder_metadata_has_what_sherpa_online_reads(streaming_checkpoint, exports):
    model, _ = load_checkpoint(streaming_checkpoint)
    session = _session(exports(160)["encoder"])
    metadata = session.get_modelmeta().custom_metadata_map
    config = model.config
    assert metadata["window_size"] == metadata["chunk_shift"] == "16"  # 160 ms of 10 ms frames
    assert metadata["vocab_size"] == str(config.num_classes - 1)
    assert metadata["subsampling_factor"] == "4" and metadata["normalize_type"] == ""
    assert metadata["pred_rnn_layers"] == str(config.pred_num_layers)
    assert metadata["pred_hidden"] == str(config.pred_hidden_dim)
    assert metadata["attention_context"] == "[8, 3]" and metadata["chunk_ms"] == "160"
    inputs = session.get_inputs()
    assert inputs[0].shape == ["N", config.n_mels, 16]  # sherpa reads feat_dim from here
    for given, name in ((inputs[2], "cache_last_channel"), (inputs[3], "cache_last_time")):
        dims = [metadata[f"{name}_dim{i}"] for i in (1, 2, 3)]
        assert [str(side) for side in given.shape[1:]] == dims
    assert inputs[2].shape[1:] == [config.num_layers, 8, 2 * config.d_model]
    # sherpa picks its NeMo path by the decoder's outputs: more than one
    assert len(_session(exports(160)["decoder"]).get_outputs()) == 4


def test_online_feature_map_brings_sherpa_online_features_close(tiny_corpus, streaming_checkpoint):
    model, _ = load_checkpoint(streaming_checkpoint)
    online, feature_map = sherpa_online_frontend(model.config.n_mels), online_feature_map(model)
    before, after = [], []
    for samples in _audio(tiny_corpus, "test"):
        lengths = torch.tensor([samples.numel()])
        with torch.no_grad():
            ours = model.frontend(samples.view(1, -1), lengths)[0][0]
            theirs = online(samples.view(1, -1), lengths)[0][0]
            mapped = feature_map(theirs)
        scale = ours.std(dim=0)  # in units of each bin's spread over the utterance
        before.append(((theirs - ours) / scale).pow(2).mean())
        after.append(((mapped - ours) / scale).pow(2).mean())
    rms_before, rms_after = torch.stack(before).mean().sqrt(), torch.stack(after).mean().sqrt()
    assert rms_after < 0.15 and rms_after < 0.5 * rms_before, (rms_before, rms_after)


def _model(tiny_corpus, **overrides) -> Transducer:
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    config = config_from_preset("tiny", tokenizer.num_classes, **{**TINY_MODEL, **overrides})
    return Transducer(config)


@pytest.mark.parametrize(
    ("overrides", "chunk_ms"),
    [
        ({"attention_context_size": [-1, -1], "causal_conv": False}, 320),  # sees the future
        ({**STREAMING, "causal_conv": True}, 120),  # no context's chunk fits 120 ms
        ({**STREAMING, "causal_conv": True}, 50),  # not whole encoder frames
    ],
)
def test_what_streaming_session_refuses_is_refused_with_its_error(
    tiny_corpus, tmp_path, overrides, chunk_ms
):
    model = _model(tiny_corpus, **overrides)
    checkpoint = _save_checkpoint(
        model, Tokenizer.load(tiny_corpus / "tokenizer.model"), tmp_path / "model.ckpt"
    )
    with pytest.raises(ValueError) as session_error:
        StreamingSession(model, chunk_ms)
    with pytest.raises(ValueError) as export_error:
        export_streaming_onnx(checkpoint, tmp_path / "onnx", chunk_ms)
    assert str(export_error.value) == str(session_error.value)
    assert not (tmp_path / "onnx").exists()


def test_an_unlimited_left_context_is_refused(tiny_corpus, tmp_path):
    model = _model(tiny_corpus, attention_context_size=[-1, 0], causal_conv=True)
    checkpoint = _save_checkpoint(
        model, Tokenizer.load(tiny_corpus / "tokenizer.model"), tmp_path / "model.ckpt"
    )
    StreamingSession(model, 320)  # streams in PyTorch: its cache grows
    with pytest.raises(ValueError, match=r"\[-1, 0\] has an unlimited left context"):
        export_streaming_onnx(checkpoint, tmp_path / "onnx", 320)


def test_rnnt_export_streaming_writes_the_chunk_asked_for(streaming_checkpoint, tmp_path, capsys):
    out = tmp_path / "onnx"
    main(["export", "--checkpoint", str(streaming_checkpoint), "--out", str(out), "--streaming",
          "--chunk-ms", "160"])  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{name}: {out / file}" for name, file in (
        ("encoder", "encoder.onnx"), ("decoder", "decoder.onnx"), ("joiner", "joiner.onnx"),
        ("tokens", "tokens.txt"))]  # fmt: skip
    metadata = _session(out / "encoder.onnx").get_modelmeta().custom_metadata_map
    assert metadata["window_size"] == "16" and metadata["attention_context"] == "[8, 3]"


def test_rnnt_export_streaming_refuses_an_offline_model_in_one_line(tiny_corpus, tmp_path, capsys):
    model = _model(tiny_corpus, attention_context_size=[-1, -1], causal_conv=False)
    checkpoint = _save_checkpoint(
        model, Tokenizer.load(tiny_corpus / "tokenizer.model"), tmp_path / "model.ckpt"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "onnx"),
              "--streaming"])  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("rnnt export: error: streaming needs an encoder")
    assert "causal_conv=False" in lines[0] and "--model.causal_conv true" in lines[0]
