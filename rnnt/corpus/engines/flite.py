"""CMU Flite speech synthesis through the ``flite`` program (Debian package ``flite``).

Each ``synthesize`` call runs ``flite`` once (no shell) with the text on its command line and
reads the WAV file it writes into a temporary folder. A fresh process per utterance keeps the
output a function of the arguments only: the same call gives identical samples (verified for
every voice). Flite has no randomness of its own, so ``seed`` is unused.

Voices are those built into the binary (``flite -lv``), less the limited-domain ones
(``FLITE_LIMITED_DOMAIN_VOICES``: ``awb_time`` speaks only clock times). With Debian's flite 2.2:

====== ======== ============================== ========================================
voice  rate Hz  method                         speaker
====== ======== ============================== ========================================
kal    8 000    diphone (residual-excited LPC) "Kal", US English male
kal16  16 000   diphone, same recordings       "Kal" (the same speaker as ``kal``)
awb    16 000   clustergen (statistical)       "AWB", Scottish English male (CMU ARCTIC)
rms    16 000   clustergen                     "RMS", US English male (CMU ARCTIC)
slt    16 000   clustergen                     "SLT", US English female (CMU ARCTIC)
====== ======== ============================== ========================================

Festival's ``kal_diphone`` is the speaker "Kal" again and its ``cmu_us_slt_arctic_hts`` the
speaker "SLT": hold out an engine by its speakers, not only by its name.

Settings per utterance: ``duration_stretch`` is Flite's own feature (phone durations multiplied
by it, > 1 slower; the voices' defaults are 1.1 for kal/kal16 and 1.0 for the others) and
``pitch_factor`` multiplies the voice's own mean F0 (Flite's ``f0_shift``). ``rms`` speaks with the
same F0 whatever ``f0_shift`` or ``int_f0_target_mean`` say (measured), so its ``pitch_factor`` is
always 1.0 (``FLITE_FIXED_PITCH_VOICES``).

Licence: Flite and its voices are under CMU's BSD-style licence (use, modify and distribute
freely, keep the copyright notice, mark modifications); see /usr/share/doc/flite/copyright.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile

from rnnt.constants import (
    FLITE_DURATION_STRETCH_RANGE,
    FLITE_FIXED_PITCH_VOICES,
    FLITE_LIMITED_DOMAIN_VOICES,
    FLITE_PITCH_FACTOR_RANGE,
)
from rnnt.corpus.engines import program

NAME = "flite"
_PROGRAM = "flite"


@dataclass(frozen=True)
class Voice:
    """How one utterance is spoken.

    ``name`` is a Flite voice ("slt"); ``duration_stretch`` Flite's phone duration factor
    (> 1 slower); ``pitch_factor`` a factor on the voice's own mean F0 (1.0 keeps it).
    """

    engine: ClassVar[str] = NAME
    name: str
    duration_stretch: float = 1.0
    pitch_factor: float = 1.0


def missing() -> str | None:
    """Why Flite cannot run here (the ``flite`` program is not on the PATH), or ``None``."""
    if shutil.which(_PROGRAM) is None:
        return "flite is not installed (make voices, or apt install flite)"
    return None


def voice_names() -> list[str]:
    """The general-purpose voices built into this ``flite`` ([] when it is not installed)."""
    if missing() is not None:
        return []
    return list(_listed_voices())


def draw_voice(rng: np.random.Generator, name: str) -> Voice:
    """Voice ``name`` with a random duration stretch and pitch factor (drawn in that order).

    Both are drawn for every voice, so the generator advances the same way whatever ``name``
    is; a voice in ``FLITE_FIXED_PITCH_VOICES`` then keeps ``pitch_factor`` 1.0.
    """
    duration_stretch = round(float(rng.uniform(*FLITE_DURATION_STRETCH_RANGE)), 3)
    pitch_factor = round(float(rng.uniform(*FLITE_PITCH_FACTOR_RANGE)), 3)
    if name in FLITE_FIXED_PITCH_VOICES:
        pitch_factor = 1.0
    return Voice(name=name, duration_stretch=duration_stretch, pitch_factor=pitch_factor)


def synthesize(text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``; returns ``(samples (S,) int16, sample_rate Hz)``.

    The rate is the voice's own (8000 Hz for ``kal``, 16 000 Hz for the others). ``seed`` is
    unused: Flite has no randomness, and the output depends only on ``text`` and ``voice``.

    Raises:
        ValueError: the voice is not one of ``voice_names()``, or ``text`` is blank.
        RuntimeError: flite is not installed, failed, or wrote no audio.
    """
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    if voice.name not in voice_names():  # flite would silently speak with its default voice
        raise ValueError(f"unknown Flite voice {voice.name!r}; this flite has {voice_names()}")
    if not text.strip():
        raise ValueError("nothing to say: the text is blank")
    with tempfile.TemporaryDirectory(prefix="rnnt-flite-") as folder:
        wav_path = Path(folder) / "speech.wav"
        command = [
            _PROGRAM,
            "-voice",
            voice.name,
            "--setf",
            f"duration_stretch={voice.duration_stretch:.4f}",
            "--setf",
            f"f0_shift={voice.pitch_factor:.4f}",
            "-t",
            text,
            "-o",
            str(wav_path),
        ]
        _run(command, folder)
        if not wav_path.is_file():
            raise RuntimeError(f"flite wrote no audio for {text!r} with {voice}")
        samples, sample_rate = soundfile.read(wav_path, dtype="int16")
    if samples.ndim != 1:
        samples = samples[:, 0]
    return samples, int(sample_rate)


def check_voices(names: list[str]) -> None:
    """Raise ``ValueError`` naming every voice in ``names`` that this ``flite`` lacks."""
    available = voice_names()
    unknown = [name for name in names if name not in available]
    if unknown:
        where = missing() or f"this flite has {available}"
        raise ValueError(f"unknown Flite voices {unknown}: {where}")


# --- internals ---------------------------------------------------------------------------------


@functools.cache
def _listed_voices() -> tuple[str, ...]:  # asks the binary once per process
    listing = _run([_PROGRAM, "-lv"], None)
    _, _, names = listing.partition(":")
    return tuple(name for name in names.split() if name not in FLITE_LIMITED_DOMAIN_VOICES)


def _run(command: list[str], folder: str | None) -> str:  # stdout; errors name the command
    return program.run(command, "flite", folder)
