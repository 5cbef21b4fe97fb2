"""Grammar sentences spoken by joining one speaker's word clips.

The Asterisk prompts hold the words a telephone system joins to say numbers and dates ("three",
"hundred", "and", "twenty", "first", "march", "tuesday", "o'clock", "a m" ...). ``compose``
draws sentences from the demo grammar (``rnnt/corpus/grammar.py``) and keeps those whose every
word has a clip; ``join`` puts the clips' audio one after the other with short random pauses.
A clip may cover several words ("a m", "hello world"): the longest clip that fits is used.

The grammar says digit strings and clock times only after a lead-in ("call ...", "wake me up at
...") that no clip covers; ``slot_sentence`` gives them bare, made the way the grammar's slots
make them, for ``compose(..., sentences=slot_sentence)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from rnnt.constants import (
    RECORDINGS_COMPOSE_MAX_DRAWS,
    RECORDINGS_DIGIT_STRING_LENGTHS,
    RECORDINGS_WORD_PAUSE_S,
    SAMPLE_RATE,
)
from rnnt.corpus.grammar import Sentence, generate_sentence
from rnnt.corpus.recordings.record import Recording
from rnnt.corpus.spoken_numbers import digit_words, number_words


class Composed(NamedTuple):
    """A grammar sentence, its category, and the clips that say it, in order."""

    text: str
    clips: tuple[Recording, ...]
    category: str


def clip_table(recordings: Iterable[Recording]) -> dict[str, list[Recording]]:
    """The clips by transcript (several takes of one word are all kept)."""
    table: dict[str, list[Recording]] = {}
    for recording in recordings:
        table.setdefault(recording.text, []).append(recording)
    return table


def cover(text: str, table: dict[str, Sequence[Recording]]) -> list[str] | None:
    """``text`` cut into clip transcripts, longest first ("five p m" -> ["five", "p m"]).

    None when a word has no clip.
    """
    words = text.split()
    longest = max((len(key.split()) for key in table), default=0)
    pieces: list[str] = []
    start = 0
    while start < len(words):
        for length in range(min(longest, len(words) - start), 0, -1):
            piece = " ".join(words[start : start + length])
            if piece in table:
                pieces.append(piece)
                start += length
                break
        else:
            return None
    return pieces


def compose(
    recordings: Iterable[Recording],
    rng: random.Random,
    count: int,
    *,
    avoid: Collection[str] = (),
    sentences: Callable[[random.Random], Sentence] = generate_sentence,
    max_draws: int = RECORDINGS_COMPOSE_MAX_DRAWS,
) -> list[Composed]:
    """Up to ``count`` distinct grammar sentences that ``recordings`` can say.

    Sentences come from ``sentences(rng)`` (the grammar's ``generate_sentence``, or
    ``slot_sentence``); one whose every word has a clip is kept
    (unless it is in ``avoid``, e.g. the training sentences), with a clip drawn by ``rng`` for
    each piece where there are several takes. Stops after ``max_draws`` sentences: fewer than
    ``count`` come back when the clips cannot say more. Deterministic for the state of ``rng``.
    """
    table = clip_table(recordings)
    if not table:
        return []
    composed: list[Composed] = []
    seen = set(avoid)
    for _ in range(max_draws):
        if len(composed) >= count:
            break
        sentence = sentences(rng)
        if sentence.text in seen:
            continue
        pieces = cover(sentence.text, table)
        if pieces is None:
            continue
        seen.add(sentence.text)
        clips = tuple(rng.choice(table[piece]) for piece in pieces)
        composed.append(Composed(sentence.text, clips, sentence.category))
    return composed


def slot_sentence(rng: random.Random) -> Sentence:
    """A bare digit string ("oh one two five", category "digits") or clock time ("time")."""
    if rng.random() < 0.5:
        length = rng.randint(*RECORDINGS_DIGIT_STRING_LENGTHS)
        digits = "".join(str(rng.randint(0, 9)) for _ in range(length))
        return Sentence(digit_words(digits, zero=rng.choice(("zero", "oh"))), "digits")
    hour = number_words(rng.randint(1, 12))
    if rng.random() < 1 / 3:
        return Sentence(f"{hour} o'clock", "time")
    minute = rng.randint(1, 59)
    minute_words = f"oh {number_words(minute)}" if minute < 10 else number_words(minute)
    return Sentence(f"{hour} {minute_words}{rng.choice(('', ' a m', ' p m'))}", "time")


def coverage(
    recordings: Iterable[Recording],
    rng: random.Random,
    draws: int,
    sentences: Callable[[random.Random], Sentence] = generate_sentence,
) -> dict[str, tuple[int, int]]:
    """Per category: ``(sentences the clips can say, sentences drawn)`` of ``draws``."""
    table = clip_table(recordings)
    counts: dict[str, list[int]] = {}
    for _ in range(draws):
        sentence = sentences(rng)
        tally = counts.setdefault(sentence.category, [0, 0])
        tally[0] += cover(sentence.text, table) is not None
        tally[1] += 1
    return {category: (said, drawn) for category, (said, drawn) in sorted(counts.items())}


def join(
    pieces: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    pause_s: tuple[float, float] = RECORDINGS_WORD_PAUSE_S,
    rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """``pieces`` (each ``(S_i,)``) one after another, a pause drawn from ``pause_s`` between.

    Returns float32 ``(S,)``; the pauses are digital silence, seconds drawn uniformly.
    """
    parts: list[np.ndarray] = []
    for index, piece in enumerate(pieces):
        if index:
            parts.append(np.zeros(round(rng.uniform(*pause_s) * rate), dtype=np.float32))
        parts.append(np.asarray(piece, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
