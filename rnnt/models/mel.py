"""Slaney mel filter banks: the mel filters of the ``"sherpa"`` front end style.

lhotse builds HTK mel filters only; sherpa-onnx (through kaldi-native-fbank's ``is_librosa``
option) feeds a NeMo transducer features made with librosa's default Slaney filters instead.
``slaney_mel_banks`` builds those filters, for the training front end
(``rnnt.models.features``) and for the exported feature check (``rnnt.export``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rnnt.constants import MEL_HIGH_FREQ_HZ, N_MELS, SAMPLE_RATE, SHERPA_MEL_LOW_FREQ_HZ

# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0  # natural-log Hz per mel above 1 kHz


def _hz_to_slaney(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_start_mel = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
    log_part = log_start_mel + np.log(np.maximum(hz, 1e-10) / _SLANEY_LOG_START_HZ) / (
        _SLANEY_LOG_STEP
    )
    return np.where(hz < _SLANEY_LOG_START_HZ, hz / _SLANEY_HZ_PER_MEL, log_part)


def _slaney_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_start_mel = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
    log_part = _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (mel - log_start_mel))
    return np.where(mel < log_start_mel, mel * _SLANEY_HZ_PER_MEL, log_part)


def slaney_mel_banks(
    n_mels: int = N_MELS,
    fft_length: int = 512,
    sample_rate: int = SAMPLE_RATE,
    low_freq_hz: float = SHERPA_MEL_LOW_FREQ_HZ,
    high_freq_hz: float = MEL_HIGH_FREQ_HZ,
) -> torch.Tensor:
    """``(fft_length / 2 + 1, n_mels)`` float32 mel filters of the ``"sherpa"`` style.

    kaldi-native-fbank's ``is_librosa`` filters, which sherpa-onnx uses for NeMo models:
    triangles in Hz between edges equally spaced on the Slaney mel scale from ``low_freq_hz``
    to ``high_freq_hz``, each scaled to unit area (``2 / (right - left)``, Slaney norm).
    ``high_freq_hz <= 0`` counts down from the Nyquist frequency.
    """
    high = high_freq_hz if high_freq_hz > 0 else sample_rate / 2 + high_freq_hz
    edges = _slaney_to_hz(np.linspace(_hz_to_slaney(low_freq_hz), _hz_to_slaney(high), n_mels + 2))
    hz = np.arange(fft_length // 2 + 1) * sample_rate / fft_length
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (hz - left) / (center - left)
    falling = (right - hz) / (right - center)
    inside = (hz > left) & (hz < right)
    banks = np.where(inside, np.where(hz <= center, rising, falling), 0.0)
    banks *= 2.0 / (right - left)
    return torch.from_numpy(banks.T).float()
