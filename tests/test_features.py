"""Log-mel front end (sherpa-onnx's NeMo features or Kaldi's fbank, padding-invariant) and
its Slaney mel filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lhotse.features.kaldi.layers import Wav2LogFilterBank

from rnnt.constants import (
    FRONTEND_STYLE,
    FRONTEND_STYLES,
    HOP_LENGTH_S,
    MEL_HIGH_FREQ_HZ,
    MEL_LOW_FREQ_HZ,
    N_MELS,
    SAMPLE_RATE,
    SHERPA_MEL_LOW_FREQ_HZ,
    WIN_LENGTH_S,
)
from rnnt.models.features import LogMelFrontend
from rnnt.models.mel import slaney_mel_banks
from tests.audio_batches import LENGTHS
from tests.audio_batches import random_audio_batch as _batch


def _kaldi_reference() -> Wav2LogFilterBank:
    return Wav2LogFilterBank(
        sampling_rate=SAMPLE_RATE,
        frame_length=WIN_LENGTH_S,
        frame_shift=HOP_LENGTH_S,
        dither=0.0,
        snip_edges=False,
        low_freq=MEL_LOW_FREQ_HZ,
        high_freq=MEL_HIGH_FREQ_HZ,
        num_filters=N_MELS,
    )


def test_frame_counts_match_unpadded_filterbank():
    frontend = LogMelFrontend(style="kaldi")
    reference = _kaldi_reference()
    audio, lengths = _batch(LENGTHS)
    features, feature_lengths = frontend(audio, lengths)
    assert features.shape == (len(LENGTHS), max(feature_lengths), N_MELS)
    for row, length in enumerate(LENGTHS):
        alone = reference(audio[row : row + 1, :length])
        assert feature_lengths[row] == alone.size(1) == (length + 80) // 160


def test_kaldi_style_batched_features_equal_unpadded_lhotse_fbank():
    frontend = LogMelFrontend(style="kaldi")
    reference = _kaldi_reference()
    audio, lengths = _batch(LENGTHS)
    features, feature_lengths = frontend(audio, lengths)
    for row, length in enumerate(LENGTHS):
        alone = reference(audio[row : row + 1, :length])[0]
        valid = features[row, : feature_lengths[row]]
        torch.testing.assert_close(valid, alone, atol=1e-5, rtol=1e-5)
        assert torch.all(features[row, feature_lengths[row] :] == 0)


@pytest.mark.parametrize("style", FRONTEND_STYLES)
@pytest.mark.parametrize("extra_padding", [0, 1, 37, 400, 5_000])
def test_features_do_not_depend_on_trailing_padding(extra_padding, style):
    frontend = LogMelFrontend(style=style)
    audio, lengths = _batch([12_345])
    alone, _ = frontend(audio, lengths)
    padded, padded_lengths = frontend(torch.nn.functional.pad(audio, (0, extra_padding)), lengths)
    assert padded_lengths.tolist() == [alone.size(1)]
    torch.testing.assert_close(padded, alone, atol=0, rtol=0)


def test_features_are_float32_under_autocast():
    frontend = LogMelFrontend()
    audio, lengths = _batch([8_000, 4_000])
    plain, _ = frontend(audio, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _ = frontend(audio.bfloat16(), lengths)
    assert autocast.dtype == torch.float32
    # Only the bf16 rounding of the input waveform may differ.
    assert (autocast - plain).abs().mean() < 0.05


@pytest.mark.parametrize("style", FRONTEND_STYLES)
def test_frontend_has_no_parameters_and_no_state(style):
    frontend = LogMelFrontend(style=style)
    assert sum(p.numel() for p in frontend.parameters()) == 0
    assert frontend.state_dict() == {}


# Independent float64 references, written from the definitions (no lhotse, no rnnt code).
def _slaney_reference(n_mels: int, low_hz: float, high_hz: float) -> np.ndarray:
    """``(257, n_mels)`` librosa-style filters: triangles in Hz between edges equally spaced on
    Slaney's mel scale (3 mel per 200 Hz below 1 kHz, 27 mel per factor 6.4 above), each of
    area 1 (peak 2 / (right - left))."""

    def to_mel(hz):
        return np.where(
            hz < 1000, 3 * hz / 200, 15 + 27 * np.log(np.maximum(hz, 1000) / 1000) / np.log(6.4)
        )

    def to_hz(mel):
        return np.where(mel < 15, 200 * mel / 3, 1000 * 6.4 ** ((mel - 15) / 27))

    edges = to_hz(np.linspace(to_mel(low_hz), to_mel(high_hz), n_mels + 2))
    fft_hz = np.arange(257) * SAMPLE_RATE / 512
    rising = (fft_hz - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - fft_hz) / (edges[2:] - edges[1:-1])[:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return (triangles * (2 / (edges[2:] - edges[:-2]))[:, None]).T


def _log_mel_reference(samples: np.ndarray, banks: np.ndarray, remove_dc: bool) -> np.ndarray:
    """Kaldi fbank of one utterance: 25 ms frames every 10 ms centred on the hops, the signal
    mirrored at both ends (snip_edges=False), optional DC removal, pre-emphasis 0.97, povey
    window, 512-point power spectrum, mel filters ``banks (257, F)``, log floored at eps."""
    win, hop = int(WIN_LENGTH_S * SAMPLE_RATE), int(HOP_LENGTH_S * SAMPLE_RATE)
    count = (len(samples) + hop // 2) // hop
    index = (np.arange(count) * hop + hop // 2 - win // 2)[:, None] + np.arange(win)
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= len(samples), 2 * len(samples) - 1 - index, index)
    frames = samples.astype(np.float64)[index]
    if remove_dc:
        frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate((frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]), 1)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / (win - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
    return np.log(np.maximum(power @ banks, np.finfo(np.float32).eps))


def test_sherpa_mel_filters_equal_librosa_slaney_filters():
    high = SAMPLE_RATE / 2 + MEL_HIGH_FREQ_HZ
    reference = _slaney_reference(N_MELS, SHERPA_MEL_LOW_FREQ_HZ, high)
    banks = slaney_mel_banks(N_MELS, 512)
    assert banks.shape == (257, N_MELS)
    np.testing.assert_allclose(banks.numpy(), reference, rtol=1e-5, atol=1e-9)
    assert LogMelFrontend().fbank._fb.shape == banks.shape
    assert torch.equal(LogMelFrontend(style="sherpa").fbank._fb, banks)


@pytest.mark.parametrize("style", FRONTEND_STYLES)
def test_features_equal_an_independent_float64_fbank(style):
    """ "sherpa": what sherpa-onnx computes for a NeMo transducer (Slaney filters of unit area
    from 0 Hz, DC kept); "kaldi": Kaldi's fbank (its HTK filters from 20 Hz, DC removed)."""
    frontend = LogMelFrontend(style=style)
    if style == "sherpa":
        banks = _slaney_reference(
            N_MELS, SHERPA_MEL_LOW_FREQ_HZ, SAMPLE_RATE / 2 + MEL_HIGH_FREQ_HZ
        )
    else:
        banks = frontend.fbank._fb.double().numpy()
    lengths = [401, 8_000, 12_345]
    audio, audio_lengths = _batch(lengths, seed=5)
    audio += 0.05  # a DC offset, which only the "kaldi" style removes
    features, feature_lengths = frontend(audio, audio_lengths)
    for row, length in enumerate(lengths):
        expected = _log_mel_reference(
            audio[row, :length].numpy(), banks, remove_dc=style == "kaldi"
        )
        assert feature_lengths[row] == len(expected)
        # float32 rounding: ~1e-6 typically, up to ~3e-4 in the narrowest low filters (kaldi).
        error = np.abs(features[row, : len(expected)].numpy() - expected)
        assert error.max() < 1e-3 and error.mean() < 1e-5, (error.max(), error.mean())


def test_default_style_is_sherpa_and_unknown_styles_are_refused():
    assert FRONTEND_STYLE == "sherpa"
    assert LogMelFrontend().style == "sherpa"
    with pytest.raises(ValueError, match=r"frontend_style='htk'.*'sherpa', 'kaldi'"):
        LogMelFrontend(style="htk")
