"""Who speaks an utterance: the engines and voices of each split, and random draws among them.

A *cast* decides, once per corpus, which engines this machine has (``rnnt.corpus.engines``),
which of them is held out of training, and which voices each split may use:

- training, validation and ``test`` draw an engine by ``DEMO_ENGINE_SHARES`` among the
  training engines, then a voice of it. eSpeak NG's training voices are ``DEMO_ACCENTS`` x
  ``DEMO_VARIANTS``; a fraction (``DEMO_TEST_HELDOUT_FRACTION``) of the eSpeak utterances of
  ``test`` use ``DEMO_HELDOUT_VARIANTS`` (and possibly ``DEMO_HELDOUT_ACCENTS``) instead;
- the held-out split measures what training never heard. It is ``test_unseen_engine`` when an
  engine of ``DEMO_HELDOUT_ENGINE_PREFERENCE`` is installed (the first one is held out, with
  every voice that shares a speaker with it, ``DEMO_SHARED_SPEAKERS``), and otherwise
  ``test_unseen_voice``: eSpeak's held-out voices only, the closest honest split.

Each engine draws its own speaking settings (rate, pitch, ...) from the utterance's generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnt.constants import (
    DEMO_ACCENTS,
    DEMO_ENGINE_SHARES,
    DEMO_HELDOUT_ACCENTS,
    DEMO_HELDOUT_ENGINE_PREFERENCE,
    DEMO_HELDOUT_VARIANTS,
    DEMO_SHARED_SPEAKERS,
    DEMO_TEST_HELDOUT_FRACTION,
    DEMO_VARIANTS,
)
from rnnt.corpus.engines import ENGINES, engine, espeak, survey

UNSEEN_ENGINE_SPLIT = "test_unseen_engine"
UNSEEN_VOICE_SPLIT = "test_unseen_voice"


def speaker(engine_name: str, voice_name: str) -> str:
    """The person behind a voice: voices of one recording speaker share it (``DEMO_SHARED_SPEAKERS``)."""
    key = f"{engine_name}:{voice_name}"
    return DEMO_SHARED_SPEAKERS.get(key, key)


@dataclass(frozen=True)
class Cast:
    """The engines and voices of every split of one corpus.

    ``voices`` maps each engine to its voices for train/val/test (eSpeak's are drawn apart, from
    accents and variants); ``heldout_engine`` is the engine of ``test_unseen_engine`` (``None``
    where the held-out split is ``test_unseen_voice``), ``heldout_voices`` its voices;
    ``skipped`` says why each engine not used is missing.
    """

    engines: tuple[str, ...]
    voices: dict[str, tuple[str, ...]]
    heldout_engine: str | None
    heldout_voices: tuple[str, ...]
    skipped: dict[str, str]

    @property
    def heldout_split(self) -> str:
        return UNSEEN_ENGINE_SPLIT if self.heldout_engine else UNSEEN_VOICE_SPLIT

    def describe(self) -> dict[str, Any]:
        """What ``corpus.json`` records about engines and voices."""
        return {
            "training_engines": list(self.engines),
            "training_voices": {name: list(voices) for name, voices in self.voices.items()},
            "heldout_split": self.heldout_split,
            "heldout_engine": self.heldout_engine,
            "heldout_voices": list(self.heldout_voices),
            "skipped_engines": self.skipped,
            "espeak": {
                "accents": DEMO_ACCENTS,
                "variants": DEMO_VARIANTS,
                "test_only_accents": DEMO_HELDOUT_ACCENTS,
                "test_only_variants": DEMO_HELDOUT_VARIANTS,
            },
        }


def cast_voices(requested: tuple[str, ...] | list[str] = ENGINES) -> Cast:
    """Survey the ``requested`` engines and split them and their voices between the splits.

    Raises:
        ValueError: eSpeak NG is not requested (it speaks the babble noise and is always there),
            or an engine name is unknown.
    """
    if "espeak" not in requested:
        raise ValueError(f"the demo corpus needs the espeak engine; got engines {list(requested)}")
    found = survey(tuple(requested))
    skipped = {name: reason for name, reason in found.items() if reason is not None}
    usable = [name for name in requested if found[name] is None]
    heldout = next((name for name in DEMO_HELDOUT_ENGINE_PREFERENCE if name in usable), None)
    heldout_voices = tuple(engine(heldout).voice_names()) if heldout else ()
    heard_nowhere = {speaker(heldout, voice) for voice in heldout_voices} if heldout else set()
    voices: dict[str, tuple[str, ...]] = {}
    for name in usable:
        if name in (heldout, "espeak"):
            continue
        kept = tuple(v for v in engine(name).voice_names() if speaker(name, v) not in heard_nowhere)
        if kept:
            voices[name] = kept
        else:
            skipped[name] = f"all its voices share a speaker with the held-out engine {heldout}"
    engines = ("espeak", *voices)
    return Cast(engines, voices, heldout, heldout_voices, skipped)


def is_heldout(index: int) -> bool:
    """Whether eSpeak test utterance ``index`` gets a voice never heard in training."""
    # Spreads held-out voices evenly: utterance i is held out when i*f crosses an integer.
    fraction = DEMO_TEST_HELDOUT_FRACTION
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def draw_voice(rng: np.random.Generator, cast: Cast, split: str, index: int) -> tuple[Any, bool]:
    """A random voice with its speaking settings for utterance ``index`` of ``split``.

    Returns the engine's ``Voice`` and whether it is a voice never heard in training.
    """
    if split == cast.heldout_split:
        if cast.heldout_engine is None:
            return draw_espeak_voice(rng, heldout=True), True
        name = cast.heldout_voices[rng.integers(len(cast.heldout_voices))]
        return engine(cast.heldout_engine).draw_voice(rng, name), True
    shares = np.array([DEMO_ENGINE_SHARES.get(name, 0.0) for name in cast.engines])
    engine_name = cast.engines[rng.choice(len(shares), p=shares / shares.sum())]
    if engine_name == "espeak":
        unseen = split == "test" and is_heldout(index)
        return draw_espeak_voice(rng, heldout=unseen), unseen
    names = cast.voices[engine_name]
    return engine(engine_name).draw_voice(rng, names[rng.integers(len(names))]), False


def draw_espeak_voice(
    rng: np.random.Generator, heldout: bool, any_voice: bool = False
) -> espeak.Voice:
    """A random eSpeak NG voice (accent, then variant, then its settings).

    Args:
        rng: the utterance's own generator.
        heldout: draw a held-out variant (test only).
        any_voice: draw from the training and held-out voices alike (background babble).
    """
    if heldout:
        accents, variants = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS], DEMO_HELDOUT_VARIANTS
    elif any_voice:
        accents = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS]
        variants = [*DEMO_VARIANTS, *DEMO_HELDOUT_VARIANTS]
    else:
        accents, variants = DEMO_ACCENTS, DEMO_VARIANTS
    accent = accents[rng.integers(len(accents))]
    variant = variants[rng.integers(len(variants))]
    return espeak.draw_voice(rng, f"{accent}+{variant}")


def all_espeak_voice_names() -> list[str]:
    """Every accent, and every variant on the first accent: the eSpeak names to check exist."""
    accents = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS]
    variants = [*DEMO_VARIANTS, *DEMO_HELDOUT_VARIANTS]
    return [*accents, *(f"{DEMO_ACCENTS[0]}+{variant}" for variant in variants)]
