"""Which eSpeak NG voice speaks an utterance: the voice pool, held-out voices, random draws.

Training and validation draw from ``DEMO_ACCENTS`` x ``DEMO_VARIANTS``; a fraction
(``DEMO_TEST_HELDOUT_FRACTION``) of the test utterances use ``DEMO_HELDOUT_VARIANTS`` (and
possibly ``DEMO_HELDOUT_ACCENTS``), never heard in training. Speaking rate, pitch, intonation
range and word gap are drawn from the ``DEMO_*_RANGE`` constants.
"""

from __future__ import annotations

import math

import numpy as np

from rnnt.constants import (
    DEMO_ACCENTS,
    DEMO_HELDOUT_ACCENTS,
    DEMO_HELDOUT_VARIANTS,
    DEMO_INTONATION_RANGE,
    DEMO_PITCH_RANGE,
    DEMO_RATE_RANGE_WPM,
    DEMO_TEST_HELDOUT_FRACTION,
    DEMO_VARIANTS,
    DEMO_WORD_GAP_RANGE,
)
from rnnt.corpus.engines import espeak


def all_voice_names() -> list[str]:
    """Every accent, and every variant on the first accent: the names to check exist."""
    accents = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS]
    variants = [*DEMO_VARIANTS, *DEMO_HELDOUT_VARIANTS]
    return [*accents, *(f"{DEMO_ACCENTS[0]}+{variant}" for variant in variants)]


def is_heldout(index: int) -> bool:
    """Whether test utterance ``index`` gets a voice never heard in training."""
    # Spreads held-out voices evenly: utterance i is held out when i*f crosses an integer.
    fraction = DEMO_TEST_HELDOUT_FRACTION
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def draw_voice(rng: np.random.Generator, heldout: bool, any_voice: bool = False) -> espeak.Voice:
    """A random voice and its speaking settings.

    Args:
        rng: the utterance's own generator (consumed in a fixed order: accent, variant, rate,
            pitch, intonation, word gap).
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
    return espeak.Voice(
        name=f"{accent}+{variant}",
        rate_wpm=int(rng.integers(DEMO_RATE_RANGE_WPM[0], DEMO_RATE_RANGE_WPM[1] + 1)),
        pitch=int(rng.integers(DEMO_PITCH_RANGE[0], DEMO_PITCH_RANGE[1] + 1)),
        intonation=int(rng.integers(DEMO_INTONATION_RANGE[0], DEMO_INTONATION_RANGE[1] + 1)),
        word_gap=int(rng.integers(DEMO_WORD_GAP_RANGE[0], DEMO_WORD_GAP_RANGE[1] + 1)),
    )
