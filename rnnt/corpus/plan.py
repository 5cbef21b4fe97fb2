"""Planning the demo corpus: each utterance's and noise file's settings, drawn from the seed.

A plan is a list of jobs (``UtteranceJob``, ``NoiseJob``), each holding everything a worker
needs to render one file (its engine's voice and settings among them, see ``voices.py``), so
that rendering depends on nothing else. Every job draws from its
own random stream, ``numpy.random.default_rng([seed, stream, index])``, and sentences come from
one ``SentenceStream`` per corpus: the plan, and so the corpus, is a function of the seed alone,
whatever the number of workers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnt.constants import (
    DEMO_BABBLE_LOOP_S,
    DEMO_BABBLE_TALKERS,
    DEMO_NOISE_KINDS,
    DEMO_NOISE_SECONDS_RANGE,
    DEMO_PEAK_DBFS_RANGE,
    DEMO_RATE_RANGE_WPM,
    DEMO_SILENCE_MARGIN_S,
)
from rnnt.corpus.engines import espeak
from rnnt.corpus.grammar import Sentence, generate_sentence, spoken_form
from rnnt.corpus.voices import (
    UNSEEN_ENGINE_SPLIT,
    UNSEEN_VOICE_SPLIT,
    Cast,
    draw_espeak_voice,
    draw_voice,
)

SPLITS = ("train", "val", "test")  # every corpus has these; see ``held_out_splits``
HUMAN_SPLIT = "test_human"
NOISE_KINDS = ("white", "pink", "brown", "hum50", "hum60", "fan", "babble", "cafe")
_STREAMS = {  # per-seed random streams; a corpus has one of the two unseen splits
    "train": 0,
    "val": 1,
    "test": 2,
    "noise": 3,
    UNSEEN_ENGINE_SPLIT: 4,
    UNSEEN_VOICE_SPLIT: 4,
    HUMAN_SPLIT: 5,
}
_MAX_DUPLICATE_DRAWS = 10_000  # consecutive repeats before the grammar counts as exhausted

SpokenLine = tuple[str, espeak.Voice, int]  # (text for the synthesizer, voice, eSpeak seed)


@dataclass(frozen=True)
class UtteranceJob:
    """Everything one utterance needs: a worker renders it from this alone.

    ``margins_s`` is the silence (seconds) before and after the speech, ``peak_dbfs`` its peak
    level (dB full scale), ``path`` the absolute FLAC path to write.
    """

    split: str
    index: int
    text: str
    category: str
    voice: Any  # the ``Voice`` of its engine (``voice.engine``)
    engine_seed: int
    margins_s: tuple[float, float]
    peak_dbfs: float
    unseen_voice: bool
    path: str

    @property
    def utterance_id(self) -> str:
        return f"{self.split}-{self.index:06d}"

    def record(self, duration: float) -> dict:
        """The manifest record of this utterance, given its rendered ``duration`` in seconds."""
        return {
            "audio_filepath": self.path,
            "duration": duration,
            "text": self.text,
            "id": self.utterance_id,
            "engine": self.voice.engine,
            "voice": self.voice.name,
            "category": self.category,
            "unseen_voice": self.unseen_voice,
        }

    def estimated_seconds(self) -> float:
        """A guess at the duration, from the word count and a typical rate (seconds)."""
        # Only sizes the next batch of training utterances; exact durations come from audio.
        words_per_minute = sum(DEMO_RATE_RANGE_WPM) / 2
        return len(self.text.split()) * 60.0 / words_per_minute + sum(self.margins_s)


@dataclass(frozen=True)
class NoiseJob:
    """One background noise file: its kind (one of ``NOISE_KINDS``), length and seed.

    ``babble`` holds, per talker, the lines that talker speaks (babble and cafe only).
    """

    kind: str
    index: int
    seconds: float
    seed: int
    path: str
    babble: tuple[tuple[SpokenLine, ...], ...] = ()


class SentenceStream:
    """Sentences from the grammar in a seeded order, each at most once across all splits."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._used: set[str] = set()

    def reserve(self, texts: list[str]) -> None:
        """Never give these transcripts (sentences of a split made elsewhere, e.g. recordings)."""
        self._used.update(texts)

    def next(self) -> Sentence:
        """The next sentence not given before.

        Raises:
            RuntimeError: the grammar keeps repeating itself (asked for too many sentences).
        """
        for _ in range(_MAX_DUPLICATE_DRAWS):
            sentence = generate_sentence(self._rng)
            if sentence.text not in self._used:
                self._used.add(sentence.text)
                return sentence
        raise RuntimeError(
            f"the grammar produced {_MAX_DUPLICATE_DRAWS} repeats in a row after "
            f"{len(self._used)} distinct sentences; ask for a smaller corpus or extend "
            "rnnt/corpus/grammar.py"
        )


def plan_utterance(
    out: Path, split: str, index: int, sentences: SentenceStream, seed: int, cast: Cast
) -> UtteranceJob:
    """Utterance ``index`` of ``split``: the next sentence, a voice of ``cast``, margins and level.

    Its audio goes to ``out/audio/<split>/<split>-<index:06d>.flac``.
    """
    sentence = sentences.next()
    rng = np.random.default_rng([seed, _STREAMS[split], index])
    voice, unseen = draw_voice(rng, cast, split, index)
    margins = tuple(float(m) for m in rng.uniform(*DEMO_SILENCE_MARGIN_S, size=2))
    return UtteranceJob(
        split=split,
        index=index,
        text=sentence.text,
        category=sentence.category,
        voice=voice,
        engine_seed=int(rng.integers(2**31 - 1)),
        margins_s=margins,
        peak_dbfs=float(rng.uniform(*DEMO_PEAK_DBFS_RANGE)),
        unseen_voice=unseen,
        path=str(out / "audio" / split / f"{split}-{index:06d}.flac"),
    )


def plan_noise(out: Path, sentences: SentenceStream, seed: int) -> list[NoiseJob]:
    """One job per entry of ``DEMO_NOISE_KINDS``, written to ``out/noise/<kind>-<index:02d>.flac``.

    Babble talkers speak sentences taken from ``sentences``, so they are in no split.

    Raises:
        ValueError: ``DEMO_NOISE_KINDS`` names a kind not in ``NOISE_KINDS``.
    """
    unknown = sorted(set(DEMO_NOISE_KINDS) - set(NOISE_KINDS))
    if unknown:
        raise ValueError(f"unknown noise kinds {unknown} in DEMO_NOISE_KINDS; known: {NOISE_KINDS}")
    jobs = []
    for index, kind in enumerate(DEMO_NOISE_KINDS):
        rng = np.random.default_rng([seed, _STREAMS["noise"], index])
        seconds = round(float(rng.uniform(*DEMO_NOISE_SECONDS_RANGE)), 2)
        babble: list[tuple[SpokenLine, ...]] = []
        if kind in ("babble", "cafe"):
            for _ in range(DEMO_BABBLE_TALKERS):
                talker, spoken = [], 0.0
                # A few seconds per talker, looped: overlapped talkers hide the repetition.
                while spoken < min(seconds, DEMO_BABBLE_LOOP_S):
                    sentence = sentences.next()
                    voice = draw_espeak_voice(rng, heldout=False, any_voice=True)
                    talker.append((spoken_form(sentence.text), voice, int(rng.integers(2**31 - 1))))
                    spoken += len(sentence.text.split()) * 60.0 / DEMO_RATE_RANGE_WPM[1]
                babble.append(tuple(talker))
        jobs.append(
            NoiseJob(
                kind=kind,
                index=index,
                seconds=seconds,
                seed=int(rng.integers(2**31 - 1)),
                path=str(out / "noise" / f"{kind}-{index:02d}.flac"),
                babble=tuple(babble),
            )
        )
    return jobs
