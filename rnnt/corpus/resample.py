"""Band-limited resampling of numpy audio by FFT, exact and deterministic.

Single-threaded (numpy FFTs, no BLAS), so worker processes reproduce each other exactly. The
demo corpus uses it to bring its speech engines' output to ``SAMPLE_RATE``; the training
pipeline resamples torch tensors with ``rnnt.data.augment.resample`` instead.
"""

from __future__ import annotations

import math

import numpy as np

from rnnt.constants import RESAMPLE_ROLLOFF


def resample(
    audio: np.ndarray, orig_rate: int, target_rate: int, *, rolloff: float = RESAMPLE_ROLLOFF
) -> np.ndarray:
    """Band-limited resampling of ``audio (S,)`` from ``orig_rate`` to ``target_rate`` Hz.

    Returns float32 ``(S',)``, ``S' = ceil(S * target_rate / orig_rate)``. The signal (padded
    with zeros to a fast FFT length) is moved to the frequency domain, cut or zero-extended to
    the new length, and brought back: exact sinc interpolation below the lower Nyquist
    frequency. A raised-cosine taper from ``rolloff`` times that frequency up to it avoids the
    ringing of a brick-wall cut.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if orig_rate == target_rate:
        return audio.astype(np.float32)
    common = math.gcd(orig_rate, target_rate)
    up, down = target_rate // common, orig_rate // common
    num_out = -(-len(audio) * up // down)
    # A whole number of periods (`down` in, `up` out) makes the rate change exact; one spare
    # period of zeros keeps the end from wrapping around onto the start.
    periods = _fast_length(-(-len(audio) // down) + 1)
    length_in, length_out = periods * down, periods * up
    spectrum = np.fft.rfft(audio, n=length_in)
    bins = min(len(spectrum), length_out // 2 + 1)
    resized = np.zeros(length_out // 2 + 1, dtype=spectrum.dtype)
    resized[:bins] = spectrum[:bins]
    if length_in % 2 == 0 and bins == len(spectrum):  # upsampling: split the old Nyquist bin
        resized[bins - 1] *= 0.5
    edge = min(length_in, length_out) / 2  # the lower Nyquist frequency, in bins
    position = np.arange(len(resized)) / edge
    taper = np.clip((position - rolloff) / (1.0 - rolloff), 0.0, 1.0)
    resized *= 0.5 * (1.0 + np.cos(np.pi * taper))
    resampled = np.fft.irfft(resized, n=length_out) * (up / down)
    return resampled[:num_out].astype(np.float32)


def _fast_length(minimum: int) -> int:
    """The smallest number >= minimum whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    length = minimum
    while True:
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
        length += 1
