"""Export a checkpoint to ONNX for sherpa-onnx's offline NeMo-transducer recognizer.

``export_onnx`` writes ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` and ``tokens.txt``
that ``sherpa_onnx.OfflineRecognizer.from_transducer(..., model_type="nemo_transducer")``
loads. Shapes: N batch, F mel bins, T feature frames, T' encoder frames, U tokens, J joiner
dimension, H prediction dimension, L LSTM layers, V classes (blank included).

The contract, as sherpa-onnx 2.0.x runs it:

- ``encoder.onnx``: ``(features (N, F, T) float32, feature_lengths (N,) int64)`` to
  ``(encoder_out (N, J, T') float32, encoder_lengths (N,) int64)``; its metadata carries
  ``vocab_size`` (V - 1: NeMo does not count blank), ``subsampling_factor``,
  ``normalize_type`` (empty: no per-utterance normalisation), ``pred_rnn_layers``,
  ``pred_hidden`` and ``feat_dim``.
- ``decoder.onnx``: ``(targets (N, U) int32, target_lengths (N,) int32, h (L, N, H),
  c (L, N, H))`` to ``(decoder_out (N, J, U), target_lengths, h, c)``; sherpa starts from
  zero states and blank.
- ``joiner.onnx``: ``(encoder_out (N, J, T), decoder_out (N, J, U))`` to logits
  ``(N, T, U, V)``; sherpa calls it with T = U = 1.
- Blank is the *last* class (V - 1), as in NeMo; ours is ``BLANK_ID`` (0). The export
  reorders the classes (joiner rows, decoder inputs, tokens.txt): sherpa id ``j`` is model id
  ``sherpa_to_model_ids(V, blank)[j]``, i.e. model ids without blank in order, then blank.
- The joiner's two input projections run once per frame or token inside the encoder and the
  decoder, so the joiner that sherpa calls per step only adds, activates and projects.

Features: sherpa-onnx computes the NeMo flavour's log-mel itself and no metadata key changes
it: Kaldi fbank with Slaney mel filters of unit area from 0 Hz and no DC-offset removal. A
model trained with ``frontend_style="sherpa"`` (the default) computes exactly these, so its
encoder graph takes them as they are (then our global CMVN): sherpa-onnx and ``rnnt
transcribe`` see the same features and give the same transcripts. A ``"kaldi"`` model (HTK mel
filters from 20 Hz, DC offset removed; every checkpoint from before the option) gets an
approximate map from sherpa's features onto its own in the graph (``feature_map``: an affine
map per frame, interpolating the log spectral density between filter centres); what one filter
bank cannot say about the other (chiefly the narrow filters below ~300 Hz) and the DC offset
remain, and on the demo model transcripts differed by 3.5 % WER. Retrain with
``frontend_style: sherpa`` for exact exports.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnnt.checkpoint import load_checkpoint
from rnnt.constants import (
    BLANK_PIECE,
    DITHER,
    EXPORT_DECODER_FILE,
    EXPORT_ENCODER_FILE,
    EXPORT_JOINER_FILE,
    EXPORT_TOKENS_FILE,
    HOP_LENGTH_S,
    MEL_HIGH_FREQ_HZ,
    MEL_LOW_FREQ_HZ,
    ONNX_OPSET,
    PREEMPHASIS,
    SAMPLE_RATE,
    SHERPA_MEL_LOW_FREQ_HZ,
    WIN_LENGTH_S,
    WINDOW_TYPE,
)
from rnnt.data.tokenizer import Tokenizer
from rnnt.models.joiner import ACTIVATIONS
from rnnt.models.mel import slaney_mel_banks
from rnnt.models.transducer import Transducer

log = logging.getLogger(__name__)


def feature_map(
    model_banks: torch.Tensor, sherpa_banks: torch.Tensor, sample_rate: int = SAMPLE_RATE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine map ``ours = sherpa @ weight.T + bias`` between two log filter-bank features.

    A filter's energy is about the spectral density at its centre frequency times the
    filter's area. So the log density at each of sherpa's filter centres is its log energy
    minus the log of its area; it is interpolated linearly (in Hz) at each of our filter
    centres, and the log of our filter's area is added back. Outside sherpa's first and last
    centres the nearest one is used.

    Args:
        model_banks: ``(K, F)`` our filters over the ``K`` FFT bins.
        sherpa_banks: ``(K, F)`` sherpa's filters over the same bins.

    Returns:
        ``weight (F, F)`` (each row two interpolation weights summing to 1) and ``bias (F,)``.
    """
    ours, theirs = model_banks.double().numpy(), sherpa_banks.double().numpy()
    hz = np.arange(ours.shape[0]) * sample_rate / (2 * (ours.shape[0] - 1))
    our_centres = (hz @ ours) / ours.sum(axis=0)
    their_centres = (hz @ theirs) / theirs.sum(axis=0)
    identity = np.eye(theirs.shape[1])
    weight = np.stack(
        [np.interp(our_centres, their_centres, identity[j]) for j in range(theirs.shape[1])],
        axis=1,
    )
    bias = np.log(ours.sum(axis=0)) - weight @ np.log(theirs.sum(axis=0))
    return torch.from_numpy(weight).float(), torch.from_numpy(bias).float()


def sherpa_to_model_ids(num_classes: int, blank_id: int) -> torch.Tensor:
    """``(V,)`` model id of each sherpa id: model ids without blank in order, then blank."""
    ids = [index for index in range(num_classes) if index != blank_id] + [blank_id]
    return torch.tensor(ids, dtype=torch.long)


class SherpaEncoder(nn.Module):
    """Sherpa's log-mel ``(N, F, T)`` to projected encoder frames ``(N, J, T')``.

    Maps the features onto the model's (``feature_map``: identity for a ``"sherpa"``-style
    model, an approximate affine map for a ``"kaldi"`` one), normalises them with the model's
    global CMVN, encodes and applies the joiner's encoder projection.
    """

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        n_mels = model.config.n_mels
        self.feature_map: nn.Module = nn.Identity()
        if model.config.frontend_style != "sherpa":
            fbank = model.frontend.fbank  # lhotse's; _fb is its (K, F) mel matrix
            weight, bias = feature_map(fbank._fb, slaney_mel_banks(n_mels, fbank.fft_length))
            self.feature_map = nn.Linear(n_mels, n_mels)
            with torch.no_grad():
                self.feature_map.weight.copy_(weight)
                self.feature_map.bias.copy_(bias)
        self.normalizer = model.normalizer
        self.encoder = model.encoder
        self.encoder_proj = model.joiner.encoder_proj

    def forward(
        self, features: torch.Tensor, feature_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``features (N, F, T)``, ``feature_lengths (N,)`` int64 to ``encoder_out (N, J, T')``
        and ``encoder_lengths (N,)`` int64 (frames past a length are meaningless)."""
        mel = self.feature_map(features.transpose(1, 2))
        normalised = self.normalizer(mel, feature_lengths)
        encoded, encoder_lengths = self.encoder(normalised, feature_lengths)
        return self.encoder_proj(encoded).transpose(1, 2), encoder_lengths


class SherpaDecoder(nn.Module):
    """Prediction network over sherpa ids, with explicit LSTM state, projected to J."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        config = model.config
        self.register_buffer(
            "to_model_id", sherpa_to_model_ids(config.num_classes, config.blank_id)
        )
        self.embedding = model.decoder.embedding
        self.lstm = model.decoder.lstm
        self.predictor_proj = model.joiner.predictor_proj

    def forward(
        self,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``targets (N, U)`` int32 sherpa ids, ``target_lengths (N,)``, state ``h, c (L, N, H)``
        to ``decoder_out (N, J, U)``, ``target_lengths`` and the state after the U tokens."""
        embedded = self.embedding(self.to_model_id[targets.long()])
        output, (h, c) = self.lstm(embedded, (h, c))
        return self.predictor_proj(output).transpose(1, 2), target_lengths, h, c


class SherpaJoiner(nn.Module):
    """Joiner on projected inputs, with classes in sherpa's order (blank last)."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        config = model.config
        order = sherpa_to_model_ids(config.num_classes, config.blank_id)
        self.activation = ACTIVATIONS[model.joiner.activation]
        output = model.joiner.output
        self.output = nn.Linear(output.in_features, output.out_features)
        with torch.no_grad():
            self.output.weight.copy_(output.weight[order])
            self.output.bias.copy_(output.bias[order])

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """``encoder_out (N, J, T)`` and ``decoder_out (N, J, U)`` to logits ``(N, T, U, V)``."""
        encoder_frames = encoder_out.transpose(1, 2).unsqueeze(2)  # (N, T, 1, J)
        decoder_frames = decoder_out.transpose(1, 2).unsqueeze(1)  # (N, 1, U, J)
        return self.output(self.activation(encoder_frames + decoder_frames))


def sherpa_modules(model: Transducer) -> tuple[SherpaEncoder, SherpaDecoder, SherpaJoiner]:
    """The three modules ``export_onnx`` writes; they share (and put in eval mode) the
    model's own layers."""
    model = model.eval()
    return (
        SherpaEncoder(model).eval(),
        SherpaDecoder(model).eval(),
        SherpaJoiner(model).eval(),
    )


def tokens_text(tokenizer: Tokenizer, num_classes: int, blank_id: int) -> str:
    """``tokens.txt``: one ``piece sherpa_id`` line per class, ``<blk>`` last."""
    order = sherpa_to_model_ids(num_classes, blank_id).tolist()
    lines = []
    for sherpa_id, model_id in enumerate(order):
        piece = BLANK_PIECE if model_id == blank_id else tokenizer.id_to_piece(model_id)
        lines.append(f"{piece} {sherpa_id}\n")
    return "".join(lines)


def feature_metadata(frontend_style: str, n_mels: int) -> dict[str, str]:
    """The training front end's settings as ``feature_*`` metadata strings."""
    sherpa = frontend_style == "sherpa"
    return {
        "feature_style": frontend_style,
        "feature_sample_rate": str(SAMPLE_RATE),
        "feature_window_ms": f"{1000 * WIN_LENGTH_S:g}",
        "feature_hop_ms": f"{1000 * HOP_LENGTH_S:g}",
        "feature_window_type": WINDOW_TYPE,
        "feature_preemphasis": f"{PREEMPHASIS:g}",
        "feature_remove_dc_offset": str(not sherpa).lower(),
        "feature_mel_bins": str(n_mels),
        "feature_mel_scale": "slaney, unit area" if sherpa else "htk (kaldi)",
        "feature_low_freq_hz": f"{SHERPA_MEL_LOW_FREQ_HZ if sherpa else MEL_LOW_FREQ_HZ:g}",
        "feature_high_freq_hz": f"{MEL_HIGH_FREQ_HZ:g}",
        "feature_dither": f"{DITHER:g}",
        "feature_snip_edges": "false",
        "feature_log_floor": "float32 epsilon",
        "feature_sample_scale": "[-1, 1]",
    }


def encoder_metadata(model: Transducer) -> dict[str, str]:
    """The encoder's ONNX metadata that sherpa-onnx reads (plus a description)."""
    config = model.config
    if config.frontend_style == "sherpa":
        features = "the features the model was trained on (frontend_style sherpa)"
    else:
        features = "mapped approximately onto the Kaldi fbank the model was trained on"
    return {
        "vocab_size": str(config.num_classes - 1),  # NeMo's count leaves blank out
        "subsampling_factor": str(config.subsampling_factor),
        "normalize_type": "",  # global CMVN is inside the graph
        "pred_rnn_layers": str(config.pred_num_layers),
        "pred_hidden": str(config.pred_hidden_dim),
        "feat_dim": str(config.n_mels),
        # The features the model was trained on, spelled out for any runtime (sherpa-onnx
        # computes exactly these for a NeMo transducer; it reads feat_dim and sample rate).
        **feature_metadata(config.frontend_style, config.n_mels),
        "model_type": "rnnt-lightning conformer transducer",
        "comment": (
            f"Inputs are sherpa-onnx's NeMo log-mel features (Slaney mel from 0 Hz), {features}; "
            "the graph applies the model's global CMVN. Blank is the last class."
        ),
    }


def export_onnx(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    opset: int = ONNX_OPSET,
    weights: str | None = None,
) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` and ``tokens.txt``.

    Args:
        checkpoint_path: a checkpoint of ``rnnt fit`` (weights, config and tokenizer).
        out_dir: folder to write into (created; existing files of these names are replaced).
        opset: ONNX opset version.
        weights: ``"ema"``, ``"raw"`` or None: as ``rnnt.checkpoint.load_checkpoint``'s.

    Returns:
        ``{"encoder": path, "decoder": path, "joiner": path, "tokens": path}``.
    """
    try:
        import onnx
    except ImportError as error:
        raise ImportError(
            "rnnt export needs the onnx package: pip install 'rnnt-lightning[export]' "
            "(onnx, onnxruntime and sherpa-onnx)"
        ) from error

    model, tokenizer = load_checkpoint(checkpoint_path, map_location="cpu", weights=weights)
    config = model.config
    if config.frontend_style != "sherpa":
        log.warning(
            "%s was trained with frontend_style %r: sherpa-onnx computes other log-mel "
            "features, which the export maps onto the model's approximately, so sherpa-onnx's "
            "transcripts will differ slightly from `rnnt transcribe`'s. Retrain with "
            "frontend_style sherpa (the default) for an exact export.",
            checkpoint_path,
            config.frontend_style,
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "encoder": out / EXPORT_ENCODER_FILE,
        "decoder": out / EXPORT_DECODER_FILE,
        "joiner": out / EXPORT_JOINER_FILE,
        "tokens": out / EXPORT_TOKENS_FILE,
    }
    encoder, decoder, joiner = sherpa_modules(model)
    # Two utterances of different lengths, so that nothing is traced as a constant length.
    frames = 8 * config.subsampling_factor
    features = torch.randn(2, config.n_mels, frames)
    feature_lengths = torch.tensor([frames, frames - config.subsampling_factor - 1])
    onnx_export(
        encoder,
        (features, feature_lengths),
        paths["encoder"],
        ["features", "feature_lengths"],
        ["encoder_out", "encoder_lengths"],
        {
            "features": {0: "N", 2: "T"},
            "feature_lengths": {0: "N"},
            "encoder_out": {0: "N", 2: "T_out"},
            "encoder_lengths": {0: "N"},
        },
        opset,
    )
    state = torch.zeros(config.pred_num_layers, 2, config.pred_hidden_dim)
    onnx_export(
        decoder,
        (torch.zeros(2, 1, dtype=torch.int32), torch.ones(2, dtype=torch.int32), state, state),
        paths["decoder"],
        ["targets", "target_lengths", "h", "c"],
        ["decoder_out", "decoder_lengths", "next_h", "next_c"],
        {
            "targets": {0: "N", 1: "U"},
            "target_lengths": {0: "N"},
            "h": {1: "N"},
            "c": {1: "N"},
            "decoder_out": {0: "N", 2: "U"},
            "decoder_lengths": {0: "N"},
            "next_h": {1: "N"},
            "next_c": {1: "N"},
        },
        opset,
    )
    onnx_export(
        joiner,
        (torch.randn(2, config.joiner_dim, 1), torch.randn(2, config.joiner_dim, 1)),
        paths["joiner"],
        ["encoder_out", "decoder_out"],
        ["logits"],
        {
            "encoder_out": {0: "N", 2: "T"},
            "decoder_out": {0: "N", 2: "U"},
            "logits": {0: "N", 1: "T", 2: "U"},
        },
        opset,
    )
    encoder_model = onnx.load(str(paths["encoder"]))
    for key, value in encoder_metadata(model).items():
        entry = encoder_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(encoder_model, str(paths["encoder"]))
    paths["tokens"].write_text(
        tokens_text(tokenizer, config.num_classes, config.blank_id), encoding="utf-8"
    )
    return paths


def onnx_export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    """``module(*args)`` to ONNX at ``path`` by the TorchScript exporter (it handles the LSTM and
    dynamic lengths on every torch >= 2.4; from 2.5 on it needs ``dynamo=False``)."""
    options = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter's notes on its own deprecation, on tracing and on constant folding are
        # for its developers; the LSTM-batch note does not apply (h and c are inputs).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            **options,
        )
