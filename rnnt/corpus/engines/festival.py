"""Festival speech synthesis through the ``festival`` program (Debian: festival, festvox-*).

Each ``synthesize`` call runs ``festival -b`` once (no shell) with a few Scheme expressions: select
the voice, set its rate and pitch, synthesize the text and save a WAV file in a temporary folder,
which is read back. A fresh process per utterance keeps the output a function of the arguments
only (the same call gives identical samples, verified for every voice); ``seed`` is unused.
Festival's start-up is most of the cost; a smaller Scheme heap than its default (``--heap``,
``FESTIVAL_HEAP_CELLS``) cuts it from 0.36 to 0.12 s and 330 to 50 MB, with identical audio.
Festival stops at the first failing expression with a non-zero exit status, so a failed setting
is an error rather than a silent fallback (``text2wave`` would speak with its default voice).

Voices used (``FESTIVAL_VOICES``, those installed are ``voice_names()``):

===================== ======== ============================== ==================================
voice                 rate Hz  method                         speaker
===================== ======== ============================== ==================================
kal_diphone           16 000   diphone (residual-excited LPC) "Kal", US English male
ked_diphone           16 000   diphone (residual-excited LPC) "KED", US English male
cmu_us_slt_arctic_hts 32 000   HTS (statistical parametric)   "SLT", US English female (ARCTIC)
===================== ======== ============================== ==================================

Flite's ``kal``/``kal16`` are the speaker "Kal" and its ``slt`` the speaker "SLT": hold out an
engine by its speakers, not only by its name.

Settings per utterance: ``duration_stretch`` is Festival's ``Duration_Stretch`` (> 1 slower; the
diphone voices set 1.1 themselves, the HTS voice 1.0). The HTS voice takes its durations from its
own models, so there it becomes the engine's speed (``-r``, the inverse of the stretch).
``pitch_factor`` multiplies the diphone voices' target F0 mean and spread (``int_lr_params``); the
HTS voice generates F0 from its models and Festival passes it no pitch setting (only ``-m`` and
``-r`` reach the engine), so its ``pitch_factor`` is always 1.0.

Licences: Festival and the kal/ked voices are under the Edinburgh/CMU BSD-style licence (use,
modify and distribute freely, keep the notice, mark modifications); the SLT HTS voice under CMU's
2003 licence of the same kind, with HTS files under BSD-3-clause. See /usr/share/doc/festival,
/usr/share/doc/festvox-kallpc16k, festvox-kdlpc16k and festvox-us-slt-hts (``copyright``).
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
    FESTIVAL_DURATION_STRETCH_RANGE,
    FESTIVAL_HEAP_CELLS,
    FESTIVAL_PITCH_FACTOR_RANGE,
    FESTIVAL_VOICES,
)
from rnnt.corpus.engines import program

NAME = "festival"
_PROGRAM = "festival"


@dataclass(frozen=True)
class Voice:
    """How one utterance is spoken.

    ``name`` is a Festival voice ("kal_diphone"); ``duration_stretch`` Festival's duration factor
    (> 1 slower); ``pitch_factor`` a factor on the voice's own target F0 (1.0 keeps it).
    """

    engine: ClassVar[str] = NAME
    name: str
    duration_stretch: float = 1.0
    pitch_factor: float = 1.0


def missing() -> str | None:
    """Why Festival cannot run here (the ``festival`` program is not on the PATH), or ``None``."""
    if shutil.which(_PROGRAM) is None:
        return "festival is not installed (make voices, or apt install festival festvox-kallpc16k)"
    return None


def voice_names() -> list[str]:
    """The voices of ``FESTIVAL_VOICES`` installed here, in that order ([] without Festival)."""
    if missing() is not None:
        return []
    installed = _installed_voices()
    return [name for name in FESTIVAL_VOICES if name in installed]


def draw_voice(rng: np.random.Generator, name: str) -> Voice:
    """Voice ``name`` with a random duration stretch and pitch factor (drawn in that order).

    Both are drawn for every voice, so the generator advances the same way whatever ``name``
    is; an HTS voice then keeps ``pitch_factor`` 1.0.
    """
    duration_stretch = round(float(rng.uniform(*FESTIVAL_DURATION_STRETCH_RANGE)), 3)
    pitch_factor = round(float(rng.uniform(*FESTIVAL_PITCH_FACTOR_RANGE)), 3)
    if _is_hts(name):
        pitch_factor = 1.0
    return Voice(name=name, duration_stretch=duration_stretch, pitch_factor=pitch_factor)


def synthesize(text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``; returns ``(samples (S,) int16, sample_rate Hz)``.

    The rate is the voice's own (16 000 Hz for the diphone voices, 32 000 Hz for SLT HTS).
    ``seed`` is unused: the output depends only on ``text`` and ``voice``.

    Raises:
        ValueError: the voice is not one of ``voice_names()``, or ``text`` is blank (Festival
            crashes on an empty utterance).
        RuntimeError: Festival is not installed, failed, or wrote no audio.
    """
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    if voice.name not in voice_names():  # also keeps Scheme code out of the voice's name
        raise ValueError(f"unknown Festival voice {voice.name!r}; usable here: {voice_names()}")
    if not text.strip():
        raise ValueError("nothing to say: the text is blank")
    with tempfile.TemporaryDirectory(prefix="rnnt-festival-") as folder:
        wav_path = Path(folder) / "speech.wav"
        _run(
            [_PROGRAM, "--heap", str(FESTIVAL_HEAP_CELLS), "-b", *_script(text, voice, wav_path)],
            folder,
        )
        if not wav_path.is_file():
            raise RuntimeError(f"Festival wrote no audio for {text!r} with {voice}")
        samples, sample_rate = soundfile.read(wav_path, dtype="int16")
    if samples.ndim != 1:
        samples = samples[:, 0]
    return samples, int(sample_rate)


def check_voices(names: list[str]) -> None:
    """Raise ``ValueError`` naming every voice in ``names`` that is not usable here."""
    available = voice_names()
    unknown = [name for name in names if name not in available]
    if unknown:
        where = missing() or (
            f"installed here: {available} (of {list(FESTIVAL_VOICES)}; make voices installs them)"
        )
        raise ValueError(f"unknown Festival voices {unknown}: {where}")


# --- internals ---------------------------------------------------------------------------------


def _is_hts(name: str) -> bool:
    return name.endswith("_hts")


def _script(text: str, voice: Voice, wav_path: Path) -> list[str]:  # one expression per item
    stretch = voice.duration_stretch
    if _is_hts(voice.name):
        # hts_engine reads the first "-r" in the list: its speed, > 1 faster.
        rate = f'(set! hts_engine_params (cons (list "-r" {1.0 / stretch:.4f}) hts_engine_params))'
        pitch = []
    else:
        rate = f"(Parameter.set 'Duration_Stretch {stretch:.4f})"
        # assoc finds the first entry, so consing new ones in front overrides the voice's own.
        pitch = [
            f"(set! int_lr_params (cons (list '{key} (* {voice.pitch_factor:.4f} "
            f"(car (cdr (assoc '{key} int_lr_params))))) int_lr_params))"
            for key in ("target_f0_mean", "target_f0_std")
        ]
    quoted_text = text.replace("\\", "\\\\").replace('"', '\\"')
    quoted_path = str(wav_path).replace("\\", "\\\\").replace('"', '\\"')
    return [
        f"(voice_{voice.name})",
        rate,
        *pitch,
        f'(utt.save.wave (utt.synth (Utterance Text "{quoted_text}")) "{quoted_path}" \'riff)',
    ]


@functools.cache
def _installed_voices() -> frozenset[str]:  # asks Festival once per process
    listing = _run(
        [_PROGRAM, "--heap", str(FESTIVAL_HEAP_CELLS), "-b", "(print (voice.list))"], None
    )
    return frozenset(listing.replace("(", " ").replace(")", " ").split())


def _run(command: list[str], folder: str | None) -> str:  # stdout; errors name the command
    return program.run(command, "Festival", folder)
