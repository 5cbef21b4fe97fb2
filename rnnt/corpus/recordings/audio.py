"""The audio of a recording: read (a file or a zip member), downmixed, trimmed, resampled.

Any rate and any format libsndfile reads (WAV, Ogg Vorbis, FLAC; 8, 11.025, 16, 44.1 kHz ...)
comes out as float32 mono at ``SAMPLE_RATE`` Hz, resampled with the corpus's deterministic FFT
resampler (``rnnt/corpus/resample.py``), so the same package gives the same samples anywhere.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile

import numpy as np
import soundfile

from rnnt.constants import (
    RECORDINGS_TRIM_FLOOR_MARGIN_DB,
    RECORDINGS_TRIM_MAX_THRESHOLD_DB,
    RECORDINGS_TRIM_PAD_S,
    RECORDINGS_TRIM_THRESHOLD_DB,
    SAMPLE_RATE,
)
from rnnt.corpus.recordings.record import Recording
from rnnt.corpus.resample import resample

_FRAME_S = 0.01  # silence is decided per 10 ms frame


def read(path: str, member: str | None = None) -> tuple[np.ndarray, int]:
    """The samples of an audio file, or of ``member`` of the zip archive ``path``.

    Returns ``(audio (S,) float32 in [-1, 1], downmixed to mono; rate in Hz)``.

    Raises:
        soundfile.LibsndfileError, KeyError, OSError: unreadable file or member.
    """
    source = io.BytesIO(_archive(path).read(member)) if member is not None else path
    audio, rate = soundfile.read(source, dtype="float32", always_2d=True)
    return audio.mean(axis=1, dtype=np.float32), int(rate)


def trim_silence(
    audio: np.ndarray,
    rate: int,
    *,
    threshold_db: float = RECORDINGS_TRIM_THRESHOLD_DB,
    floor_margin_db: float = RECORDINGS_TRIM_FLOOR_MARGIN_DB,
    max_threshold_db: float = RECORDINGS_TRIM_MAX_THRESHOLD_DB,
    pad_s: float = RECORDINGS_TRIM_PAD_S,
) -> np.ndarray:
    """``audio (S,)`` without its leading and trailing silence; empty if all of it is silent.

    A 10 ms frame is loud when its RMS is within ``threshold_db`` of the loudest frame's and
    ``floor_margin_db`` above the noise floor (the 10th percentile frame: a noisy recording's
    hiss is not speech), but a frame within ``max_threshold_db`` of the loudest always is.
    ``pad_s`` seconds are kept beyond the first and the last loud frame (soft consonants).
    """
    frame = max(1, round(rate * _FRAME_S))
    count = len(audio) // frame
    if count == 0:
        return audio[:0]
    frames = audio[: count * frame].astype(np.float64).reshape(count, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loudest = rms.max()
    if loudest <= 0.0:
        return audio[:0]
    floor = np.percentile(rms, 10)
    limit = max(loudest * _gain(threshold_db), floor * _gain(floor_margin_db))
    loud = np.flatnonzero(rms >= min(limit, loudest * _gain(max_threshold_db)))
    pad = round(pad_s * rate)
    start = max(0, loud[0] * frame - pad)
    end = min(len(audio), (loud[-1] + 1) * frame + pad)
    return audio[start:end]


def speech(recording: Recording, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The trimmed speech of ``recording`` at ``rate`` Hz: float32 ``(S,)``, peak as recorded."""
    audio, original_rate = read(recording.path, recording.member)
    return resample(trim_silence(audio, original_rate), original_rate, rate)


def speech_seconds(audio: np.ndarray, rate: int) -> float:
    """Seconds of ``audio (S,)`` at ``rate`` Hz left after ``trim_silence``."""
    return len(trim_silence(audio, rate)) / rate


def _archive(path: str) -> zipfile.ZipFile:
    status = os.stat(path)
    return _open_archive(os.path.abspath(path), status.st_mtime_ns, status.st_size)


def _gain(decibels: float) -> float:
    return 10.0 ** (decibels / 20.0)


@functools.lru_cache(maxsize=4)
def _open_archive(path: str, mtime_ns: int, size: int) -> zipfile.ZipFile:
    # One open archive per process (and per version of the file): reading base.wz's directory
    # of 3 900 entries again for every clip adds up.
    return zipfile.ZipFile(path)
