"""Rendering one planned job to a FLAC file; runs in the corpus's worker processes.

An utterance is spoken by its voice's engine (``rnnt/corpus/engines``), trimmed of the engine's
silence, resampled from the engine's rate to 16 kHz, levelled to its peak and given its silence
margins. A noise file is one of the
generators in ``rnnt/corpus/noise.py``, or babble: several talkers at once. Everything here
depends only on the job it is given (see ``rnnt/corpus/plan.py``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from rnnt.constants import DEMO_NOISE_PEAK_DBFS, DEMO_TRIM_THRESHOLD_DB, SAMPLE_RATE
from rnnt.corpus.engines import engine
from rnnt.corpus.grammar import spoken_form
from rnnt.corpus.noise import coloured_noise, fan_noise, mains_hum, normalised_rms
from rnnt.corpus.plan import NoiseJob, SpokenLine, UtteranceJob
from rnnt.corpus.resample import resample


def render_utterance(job: UtteranceJob) -> float:
    """Synthesize, trim, resample, level and write one utterance; its duration in seconds."""
    speech = speak(spoken_form(job.text), job.voice, job.engine_seed)
    if speech.size == 0:
        raise RuntimeError(
            f"{job.voice.engine} produced no audio for {job.text!r} with {job.voice}"
        )
    speech *= 10.0 ** (job.peak_dbfs / 20.0) / np.abs(speech).max()
    lead, trail = (round(margin * SAMPLE_RATE) for margin in job.margins_s)
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    write_flac(job.path, audio)
    return len(audio) / SAMPLE_RATE


def speak(text: str, voice: Any, seed: int) -> np.ndarray:
    """The audio of ``text`` spoken by ``voice`` (of any engine) without leading/trailing silence.

    Returns ``(S,)`` float32 at ``SAMPLE_RATE`` Hz; empty if the engine made no sound.
    """
    samples, rate = engine(voice.engine).synthesize(text, voice, seed)
    if samples.size == 0:
        return np.zeros(0, dtype=np.float32)
    magnitude = np.abs(samples.astype(np.int32))
    if magnitude.max() == 0:
        return np.zeros(0, dtype=np.float32)
    voiced = np.flatnonzero(magnitude > magnitude.max() * 10.0 ** (DEMO_TRIM_THRESHOLD_DB / 20.0))
    trimmed = samples[voiced[0] : voiced[-1] + 1].astype(np.float32) / 32768.0
    return resample(trimmed, rate, SAMPLE_RATE)


def render_noise(job: NoiseJob) -> None:
    """Make and write one noise file, peak-levelled to ``DEMO_NOISE_PEAK_DBFS``."""
    rng = np.random.default_rng(job.seed)
    length = round(job.seconds * SAMPLE_RATE)
    makers: dict[str, Callable[[], np.ndarray]] = {
        "white": lambda: rng.standard_normal(length),
        "pink": lambda: coloured_noise(rng, length, exponent=1.0),
        "brown": lambda: coloured_noise(rng, length, exponent=2.0),
        "hum50": lambda: mains_hum(rng, length, 50.0),
        "hum60": lambda: mains_hum(rng, length, 60.0),
        "fan": lambda: fan_noise(rng, length),
        "babble": lambda: _babble(rng, length, job.babble),
        "cafe": lambda: (
            normalised_rms(_babble(rng, length, job.babble))
            + 0.5 * normalised_rms(coloured_noise(rng, length, exponent=1.0))
        ),
    }
    noise = makers[job.kind]()
    noise *= 10.0 ** (DEMO_NOISE_PEAK_DBFS / 20.0) / max(np.abs(noise).max(), 1e-12)
    write_flac(job.path, noise)


def write_flac(path: str, audio: np.ndarray) -> None:
    """Write ``audio (S,)`` at ``SAMPLE_RATE`` as 16-bit mono FLAC, creating the folder."""
    # Encoded in memory and written at once: libsndfile's many small writes and seeks on a
    # file cost more than the encoding itself.
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(buffer.getvalue())


def _babble(
    rng: np.random.Generator,
    length: int,
    talkers: Sequence[Sequence[SpokenLine]],
) -> np.ndarray:
    """Several talkers at once, each a run of sentences with short pauses, looped to ``length``."""
    mixture = np.zeros(length)
    for talker in talkers:
        pieces = []
        for text, voice, seed in talker:
            speech = speak(text, voice, seed)
            if speech.size == 0:
                continue
            pieces += [
                normalised_rms(speech),
                np.zeros(round(rng.uniform(0.05, 0.4) * SAMPLE_RATE)),
            ]
        speech = np.resize(np.concatenate(pieces), length)  # loops if short
        mixture += rng.uniform(0.5, 1.0) * np.roll(speech, int(rng.integers(length)))
    return mixture
