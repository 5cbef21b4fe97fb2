"""eSpeak NG speech synthesis through ctypes, from the ``espeakng-loader`` wheel (no system package).

``synthesize(text, voice)`` returns 16-bit samples at eSpeak's own rate (22 050 Hz).

Reproducibility: the library keeps static state between utterances (pitch flutter, filter memory)
that ``espeak_Terminate`` does not reset, so the same call after different histories gives
slightly different audio. Each call therefore loads a fresh instance of the library and unloads
it afterwards (``dlclose``; about 3 ms): the output then depends only on the arguments. That
holds while no other module keeps the library loaded; if one does, a warning says so once.
One synthesis runs at a time per process (a lock); use processes for parallelism.
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from rnnt.constants import (
    DEMO_ACCENTS,
    DEMO_HELDOUT_ACCENTS,
    DEMO_HELDOUT_VARIANTS,
    DEMO_INTONATION_RANGE,
    DEMO_PITCH_RANGE,
    DEMO_RATE_RANGE_WPM,
    DEMO_VARIANTS,
    DEMO_WORD_GAP_RANGE,
)

NAME = "espeak"

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report a data error instead of calling exit()
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 3, 4, 7

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_lock = threading.Lock()
_chunks: list[np.ndarray] = []
_checked_unload = False


@dataclass(frozen=True)
class Voice:
    """How one utterance is spoken.

    ``name`` is an eSpeak voice, ``accent`` or ``accent+variant`` ("en-us+m3"); ``rate_wpm``
    words per minute (80-450); ``pitch`` and ``intonation`` (pitch range) 0-100; ``word_gap``
    extra pause between words in units of 10 ms.
    """

    engine: ClassVar[str] = NAME
    name: str
    rate_wpm: int = 175
    pitch: int = 50
    intonation: int = 50
    word_gap: int = 0


def missing() -> str | None:
    """Always ``None``: the library and its data come with the ``espeakng-loader`` wheel."""
    return None


def voice_names() -> list[str]:
    """Every ``accent+variant`` the demo uses, training and held-out alike."""
    accents = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS]
    variants = [*DEMO_VARIANTS, *DEMO_HELDOUT_VARIANTS]
    return [f"{accent}+{variant}" for accent in accents for variant in variants]


def draw_voice(rng: np.random.Generator, name: str) -> Voice:
    """Voice ``name`` with a random rate, pitch, intonation range and word gap (in that order)."""
    return Voice(
        name=name,
        rate_wpm=int(rng.integers(DEMO_RATE_RANGE_WPM[0], DEMO_RATE_RANGE_WPM[1] + 1)),
        pitch=int(rng.integers(DEMO_PITCH_RANGE[0], DEMO_PITCH_RANGE[1] + 1)),
        intonation=int(rng.integers(DEMO_INTONATION_RANGE[0], DEMO_INTONATION_RANGE[1] + 1)),
        word_gap=int(rng.integers(DEMO_WORD_GAP_RANGE[0], DEMO_WORD_GAP_RANGE[1] + 1)),
    )


def data_path() -> Path:
    """The eSpeak NG data folder shipped in the ``espeakng-loader`` wheel."""
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def synthesize(text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``; returns ``(samples (S,) int16, sample_rate Hz)``.

    ``seed`` seeds eSpeak's own random generator (used by some voices). The result depends
    only on the arguments (see the module docstring).

    Raises:
        RuntimeError: the library failed to initialise or to speak.
        ValueError: the voice is unknown.
    """
    with _lock:
        library = _load()
        try:
            sample_rate = library.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path()).encode(), _INITIALIZE_DONT_EXIT
            )
            if sample_rate <= 0:
                raise RuntimeError(
                    f"eSpeak NG failed to initialise with data from {data_path()}; "
                    "reinstall the espeakng-loader package"
                )
            library.espeak_SetSynthCallback(_collect)
            _set_voice(library, voice.name)
            for parameter, value in (
                (_PARAM_RATE, voice.rate_wpm),
                (_PARAM_PITCH, voice.pitch),
                (_PARAM_RANGE, voice.intonation),
                (_PARAM_WORDGAP, voice.word_gap),
            ):
                library.espeak_SetParameter(parameter, int(value), 0)
            library.espeak_ng_SetRandSeed(int(seed))
            _chunks.clear()
            encoded = text.encode("utf-8") + b"\0"
            status = library.espeak_Synth(
                encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != 0:
                raise RuntimeError(f"eSpeak NG failed (status {status}) to speak {text!r}")
            samples = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
            _chunks.clear()
            library.espeak_Terminate()
        finally:
            _unload(library)
    return samples, sample_rate


def check_voices(names: list[str]) -> None:
    """Raise ``ValueError`` naming every voice in ``names`` that this eSpeak NG lacks.

    eSpeak silently ignores an unknown ``+variant``, so variants are checked as files.
    """
    variants_dir = data_path() / "voices" / "!v"
    unknown = []
    with _lock:
        library = _load()
        try:
            library.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path()).encode(), _INITIALIZE_DONT_EXIT
            )
            for name in names:
                accent, _, variant = name.partition("+")
                if library.espeak_SetVoiceByName(accent.encode()) != 0 or (
                    variant and not (variants_dir / variant).is_file()
                ):
                    unknown.append(name)
            library.espeak_Terminate()
        finally:
            _unload(library)
    if unknown:
        raise ValueError(
            f"unknown eSpeak NG voices {unknown}: accents are language files under "
            f"{data_path() / 'lang'}, variants files under {variants_dir}"
        )


# --- internals ---------------------------------------------------------------------------------


@_CALLBACK
def _collect(wav, num_samples, events):  # called by eSpeak with each chunk of audio
    if num_samples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    return 0  # 0: continue synthesis


def _library_path() -> str:
    import espeakng_loader

    return espeakng_loader.get_library_path()


def _load() -> ctypes.CDLL:
    library = ctypes.CDLL(_library_path())
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    library.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    return library


def _unload(library: ctypes.CDLL) -> None:
    global _checked_unload
    import _ctypes

    _ctypes.dlclose(library._handle)
    if _checked_unload or not hasattr(os, "RTLD_NOLOAD"):
        return
    _checked_unload = True
    try:  # RTLD_NOLOAD succeeds only if the library is still in memory
        still_loaded = ctypes.CDLL(_library_path(), mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        return
    _ctypes.dlclose(still_loaded._handle)
    warnings.warn(
        "libespeak-ng stays loaded by another module in this process, so its state carries "
        "over between utterances and synthesized audio is not exactly reproducible",
        RuntimeWarning,
        stacklevel=3,
    )


def _set_voice(library: ctypes.CDLL, name: str) -> None:
    if library.espeak_SetVoiceByName(name.encode()) != 0:
        raise ValueError(f"unknown eSpeak NG voice {name!r} (use check_voices to list problems)")
