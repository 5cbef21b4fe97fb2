"""Synthetic background noise signals: coloured noise, mains hum, a fan; and RMS levelling.

Every function is deterministic for the state of its ``rng`` and single-threaded (numpy FFTs,
no BLAS), so worker processes reproduce each other exactly. The constants inside the recipes
describe the sounds (a fan's blade rate, the drift of mains frequency); they are not tuning
knobs.
"""

from __future__ import annotations

import numpy as np

from rnnt.constants import SAMPLE_RATE


def coloured_noise(
    rng: np.random.Generator, length: int, exponent: float, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """``(length,)`` noise whose power density falls as 1 / f**exponent above 20 Hz.

    ``exponent`` 0 is white, 1 pink, 2 brown (red) noise. Not normalised.
    """
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, d=1.0 / sample_rate)
    # Flat below 20 Hz: a 1/f law down to DC would make the noise drift, not hiss.
    spectrum /= np.maximum(frequencies, 20.0) ** (exponent / 2.0)
    return np.fft.irfft(spectrum, n=length)


def mains_hum(
    rng: np.random.Generator, length: int, mains_hz: float, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """``(length,)`` mains hum: ``mains_hz`` (drifting slightly) and 9 harmonics over faint hiss."""
    seconds = np.arange(length) / sample_rate
    drift = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * seconds)
    phase = 2 * np.pi * mains_hz * np.cumsum(drift) / sample_rate
    hum = np.zeros(length)
    for harmonic in range(1, 11):
        # Even harmonics (transformers) and odd ones (rectifiers), falling off with order.
        level = rng.uniform(0.3, 1.0) / harmonic
        hum += level * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
    return hum + 0.01 * rng.standard_normal(length)


def fan_noise(rng: np.random.Generator, length: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(length,)`` fan: band-passed noise with a slow swell, plus the blade-pass tone."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, d=1.0 / sample_rate)
    low_hz, high_hz = rng.uniform(60, 150), rng.uniform(800, 2000)
    spectrum /= 1.0 + (low_hz / np.maximum(frequencies, 1.0)) ** 4  # high-pass edge
    spectrum /= 1.0 + (frequencies / high_hz) ** 4  # low-pass edge
    noise = normalised_rms(np.fft.irfft(spectrum, n=length))
    seconds = np.arange(length) / sample_rate
    blade_hz = rng.uniform(80, 200)
    tone = sum(np.sin(2 * np.pi * k * blade_hz * seconds) / k for k in (1, 2, 3))
    swell = 1.0 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * seconds)
    return swell * (noise + 0.3 * tone)


def normalised_rms(signal: np.ndarray) -> np.ndarray:
    """``signal`` scaled to a root mean square of 1 (a silent signal is returned unchanged)."""
    return signal / max(float(np.sqrt(np.mean(signal**2))), 1e-12)
