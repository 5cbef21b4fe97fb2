"""Decoding audio to 16 kHz mono: a lhotse cut in the workers, or one file for transcription.

``load_mono`` reads a cut's audio (any rate or channel count) as (S,) float32 at
``SAMPLE_RATE``, refusing empty, non-finite or mis-scaled audio. ``load_audio_file`` does the
same for one file outside training (``rnnt transcribe``), with every check made before
decoding and every error naming the file. ``describe_error`` puts a decoder's error in one line.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import soundfile
import torch
from lhotse import Recording
from lhotse.cut import Cut

from rnnt.constants import (
    AUDIO_DURATION_TOLERANCE_S,
    AUDIO_MAX_ABS_SAMPLE,
    MAX_DECODE_DURATION,
    MIN_AUDIO_DURATION_S,
    SAMPLE_RATE,
)
from rnnt.data.augment import resample


def load_mono(cut: Cut) -> torch.Tensor:
    """(S,) float32 audio of a cut at ``SAMPLE_RATE``: channels averaged, resampled.

    S = round(cut.duration * SAMPLE_RATE), the length the sampler budgeted for.

    Raises:
        ValueError: the audio is empty, has NaN or infinite samples, or samples beyond
            ``AUDIO_MAX_ABS_SAMPLE`` (a mis-scaled float file: its log-mel features, and the
            feature statistics of every later step, would overflow). lhotse's own errors
            (undecodable data; audio more than 0.5 s shorter than its header said, which it
            pads up to that) pass through.
    """
    samples = cut.load_audio()
    if samples is None:
        raise ValueError("cut has no audio")
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    waveform = waveform.mean(dim=0) if waveform.dim() == 2 else waveform
    waveform = resample(waveform, cut.sampling_rate, SAMPLE_RATE)
    num_samples = round(cut.duration * SAMPLE_RATE)
    if waveform.numel() != num_samples:  # resampling rounds by a sample or two
        waveform = torch.nn.functional.pad(
            waveform[:num_samples], (0, max(0, num_samples - waveform.numel()))
        )
    if waveform.numel() == 0:
        raise ValueError("audio is empty (no sample)")
    peak = float(waveform.abs().max())  # NaN or inf if any sample is (one pass over the audio)
    if not math.isfinite(peak):
        raise ValueError("audio has NaN or infinite samples")
    if peak > AUDIO_MAX_ABS_SAMPLE:
        raise ValueError(
            f"audio samples reach {peak:.3g}, far outside [-1, 1] (limit "
            f"{AUDIO_MAX_ABS_SAMPLE:g}): a mis-scaled float file, e.g. integers stored as float"
        )
    return waveform


def load_audio_file(
    path: str | os.PathLike,
    offset: float = 0.0,
    duration: float | None = None,
    *,
    max_duration: float | None = MAX_DECODE_DURATION,
) -> torch.Tensor:
    """(S,) float32 samples, 16 kHz mono, of ``path`` from ``offset`` for ``duration`` seconds.

    ``duration=None`` reads to the end of the file. The header is read first, so a stretch
    longer than ``max_duration`` seconds (``None``: no limit) is refused before any audio is
    decoded: the model's memory grows with the square of the length.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: not readable as audio, offset or duration outside the
            file, a stretch shorter than ``MIN_AUDIO_DURATION_S`` or longer than
            ``max_duration``, or audio that ``load_mono`` refuses.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        recording = Recording.from_file(path)
    except Exception as error:  # lhotse tries every backend; say why the usual one failed
        raise ValueError(f"cannot read audio file {path}: {_header_error(path, error)}") from None
    if not recording.num_samples:
        raise ValueError(f"audio file {path} holds no sample (empty)")
    if not (math.isfinite(offset) and 0 <= offset < recording.duration):
        raise ValueError(
            f"offset {offset:g} s is outside audio file {path} ({recording.duration:g} s)"
        )
    available = recording.duration - offset
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration {duration:g} s for audio file {path} must be > 0")
    if duration is not None and duration > available + AUDIO_DURATION_TOLERANCE_S:
        raise ValueError(
            f"duration {duration:g} s from offset {offset:g} s overruns audio file {path} "
            f"({recording.duration:g} s)"
        )
    seconds = available if duration is None else min(duration, available)
    if seconds < MIN_AUDIO_DURATION_S:
        raise ValueError(
            f"audio file {path}: {seconds:g} s of audio is shorter than "
            f"{MIN_AUDIO_DURATION_S:g} s (not one feature frame)"
        )
    if max_duration is not None and seconds > max_duration:
        raise ValueError(
            f"audio file {path}: {seconds:g} s of audio is longer than the {max_duration:g} s "
            "decoded in one piece (memory grows with the square of the length); split the "
            "file, or select stretches of it with offset and duration"
        )
    cut = recording.to_cut()
    if offset or seconds < recording.duration:
        cut = cut.truncate(offset=offset, duration=seconds)
    try:
        return load_mono(cut)
    except Exception as error:  # any decoder failure, named with its file
        raise ValueError(f"cannot load audio file {path}: {describe_error(error)}") from None


def describe_error(error: BaseException) -> str:
    """The cause of an audio-loading error in one line (lhotse appends details and the cut).

    lhotse's own wording is kept where it says what is wrong with the file; where it blames
    itself ("please report this issue in Lhotse") for a file that decodes to fewer or more
    samples than its header declares, the file is named as the cause: truncated or corrupt.
    """
    text = str(error).strip()
    mismatch = _SAMPLE_MISMATCH.search(text)
    if mismatch:
        missing, decoded = int(mismatch["diff"]), int(mismatch["decoded"])
        rate = int(mismatch["rate"]) if mismatch["rate"] else None
        declared = decoded + missing
        seconds = f" ({abs(missing) / rate:.3g} s)" if rate else ""
        if missing > 0:
            return (
                f"the file decodes to {decoded} samples where its header declares {declared}: "
                f"{missing} missing{seconds}; it is truncated or corrupt (re-encode or drop it)"
            )
        return (
            f"the file decodes to {decoded} samples where its header declares {declared}: "
            f"{-missing} more{seconds}; its header is wrong (re-encode the file)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0]
    if text.endswith("Details:") and len(lines) > 1:  # lhotse: the backend's own message next
        text = f"{text} {lines[1].rsplit('>: ', 1)[-1]}"
    text = _LHOTSE_BLAME.split(text, maxsplit=1)[0].rstrip(" .;,:")  # never our user's to report
    return text[:300]


# lhotse's AudioLoadingError when decoded and declared lengths differ beyond its tolerance:
# "... diverged from ... Please report this issue in Lhotse and show the following: diff=N,
# audio.shape=(C, S), recording=Recording(..., sampling_rate=R, ...)".
_SAMPLE_MISMATCH = re.compile(
    r"declared samples in the recording diverged.*?diff=(?P<diff>-?\d+), "
    r"audio\.shape=\(\d+, (?P<decoded>\d+)\)(?:.*?sampling_rate=(?P<rate>\d+))?",
    re.DOTALL,
)
_LHOTSE_BLAME = re.compile(
    r"\s*(?:This could be internal Lhotse's error|Please report this issue|please report)",
    re.IGNORECASE,
)


def _header_error(path: str, error: BaseException) -> str:
    try:
        soundfile.info(path)
    except Exception as soundfile_error:
        return str(soundfile_error).strip() or type(soundfile_error).__name__
    return describe_error(error)
