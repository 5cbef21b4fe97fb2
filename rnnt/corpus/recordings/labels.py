"""Turning a package's label into a demo-corpus transcript, or refusing it with the reason.

``normalise`` gives lower-case a-z, apostrophe and single spaces with numbers in words, the
form of ``rnnt/corpus/grammar.py``. It refuses, rather than guesses, whatever the written label
does not tell how it is read: acronyms ("LZ": "el zed"? "landing zone"?), bracketed notes
("[beep]"), digits with separators ("28.8"), other characters. ``check_rate`` refuses a label
whose length does not fit the length of the speech it is attached to.
"""

from __future__ import annotations

import re

from rnnt.constants import RECORDINGS_LETTERS_PER_SECOND
from rnnt.corpus.grammar import ALLOWED_CHARACTERS
from rnnt.corpus.recordings.record import LabelError
from rnnt.corpus.spoken_numbers import number_words

_NOTE = re.compile(r"[\[(<].*?[\])>]")
_DOTTED_LETTERS = re.compile(r"\b(?:[A-Za-z]\.){2,}")  # "A.M." is read letter by letter
_ACRONYM = re.compile(r"\b[A-Z]{2,}s?\b")
_NUMBER_WITH_SEPARATOR = re.compile(r"\d[.,:/]\d")
_NUMBER = re.compile(r"\d+")
_SILENT_PUNCTUATION = re.compile(r"[.,!?:;\"]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})


def normalise(label: str) -> str:
    """``label`` as a transcript: lower-case words, numbers in words, no punctuation.

    "Warning! System Failure Imminent" -> "warning system failure imminent";
    "10 Minutes Remaining" -> "ten minutes remaining"; "Cleanse & Destroy" -> "cleanse and
    destroy"; "A.M." -> "a m"; "Fire-At-Will" -> "fire at will".

    Raises:
        LabelError: the label does not say how it is read (``reason`` "note", "acronym",
            "number", "characters" or "empty").
    """
    text = label.translate(_APOSTROPHES).strip()
    if _NOTE.search(text):
        raise LabelError("note", f"bracketed note in {label!r}, not a transcript")
    text = _DOTTED_LETTERS.sub(lambda match: " ".join(match.group(0).replace(".", "")) + " ", text)
    acronym = _ACRONYM.search(text)
    if acronym:
        raise LabelError(
            "acronym", f"acronym {acronym.group(0)!r} in {label!r}: its reading is unknown"
        )
    if _NUMBER_WITH_SEPARATOR.search(text):
        raise LabelError("number", f"number with a separator in {label!r}: its reading is unknown")
    try:
        text = _NUMBER.sub(lambda match: f" {number_words(int(match.group(0)))} ", text)
    except ValueError as error:
        raise LabelError("number", f"{label!r}: {error}") from None
    text = text.replace("&", " and ").replace("...", " ")
    text = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", text)  # "Re-arming", "Fire-At-Will"
    text = _SILENT_PUNCTUATION.sub(" ", text).lower()
    text = " ".join(word.strip("'") for word in text.split())
    text = " ".join(text.split())
    others = sorted(set(text) - ALLOWED_CHARACTERS)
    if others:
        raise LabelError(
            "characters", f"{label!r} has characters outside a-z, apostrophe and space: {others}"
        )
    if not text:
        raise LabelError("empty", f"{label!r} has no words")
    return text


def check_rate(
    text: str,
    seconds: float,
    letters_per_second: tuple[float, float] = RECORDINGS_LETTERS_PER_SECOND,
) -> None:
    """Refuse a transcript too long or too short for ``seconds`` of (trimmed) speech.

    Raises:
        LabelError: ``reason`` "rate": letters per second outside ``letters_per_second``.
    """
    letters = sum(character.isalpha() for character in text)
    low, high = letters_per_second
    rate = letters / seconds if seconds > 0 else float("inf")
    if not low <= rate <= high:
        raise LabelError(
            "rate",
            f"{letters} letters in {seconds:.2f} s of speech ({rate:.1f}/s, expected "
            f"{low:g}-{high:g}): the label does not fit the audio",
        )
