"""Subtitles from word timings: words grouped into cues, written as SubRip (SRT) or WebVTT.

A cue is a run of words shown together, from its first word's start to its last word's end
(seconds from the start of the audio). :func:`subtitle_cues` starts a new cue after a pause
longer than ``max_gap_seconds``, or where the next word would make the cue's text longer than
``max_chars`` characters (one line) or its span longer than ``max_seconds``. A single word over a
limit still gets a cue of its own: words are never cut.

Display rules, applied after grouping, on whole milliseconds (the unit both formats write):

- a cue shorter than ``min_seconds`` is lengthened to ``min_seconds``, but never past the next
  cue's start (the last cue is lengthened in full);
- a cue ends no later than the next cue starts: cues never overlap, even where a decoder's
  words do (a transducer may start a word in the frame where the previous one ends);
- a cue is never cut where the next word starts in the same millisecond as the cue itself, so
  every cue lasts at least a millisecond (the rare cue where that happens may pass the limits).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rnnt.constants import (
    SUBTITLE_FORMATS,
    SUBTITLE_MAX_CHARS,
    SUBTITLE_MAX_GAP_S,
    SUBTITLE_MAX_SECONDS,
    SUBTITLE_MIN_SECONDS,
)
from rnnt.data.atomic import atomic_text_file

if TYPE_CHECKING:
    from rnnt.timestamps import WordTiming

__all__ = ["Cue", "subtitle_cues", "to_srt", "to_webvtt", "write_subtitles"]

_WEBVTT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


@dataclass(frozen=True)
class Cue:
    """One subtitle: shown from ``start`` to ``end`` (seconds from the start of the audio)."""

    start: float
    end: float
    text: str


def subtitle_cues(
    words: Sequence[WordTiming],
    *,
    max_gap_seconds: float = SUBTITLE_MAX_GAP_S,
    max_chars: int = SUBTITLE_MAX_CHARS,
    max_seconds: float = SUBTITLE_MAX_SECONDS,
    min_seconds: float = SUBTITLE_MIN_SECONDS,
) -> list[Cue]:
    """Group ``words`` (in time order, times in seconds) into cues; see the module docstring.

    A cue's text is its words joined by single spaces (whitespace inside a word becomes one
    space; a word with no text is skipped). Its times are whole milliseconds, in seconds.

    Raises:
        ValueError: a limit is out of range, or a word's times are not finite, negative, end
            before they start, or start before the previous word's (names the word's index).
    """
    _check_limits(max_gap_seconds, max_chars, max_seconds, min_seconds)
    gap_ms, span_ms = _milliseconds(max_gap_seconds), _milliseconds(max_seconds)
    groups: list[list[tuple[int, int, str]]] = []  # per cue: (start ms, end ms, text) per word
    cue_start = cue_end = cue_chars = 0
    for start, end, text in _word_spans(words):
        if not text:
            continue
        if not groups or (
            start > cue_start  # a cut here leaves the cue a nonzero duration
            and (
                start - cue_end > gap_ms
                or cue_chars + 1 + len(text) > max_chars
                or max(cue_end, end) - cue_start > span_ms
            )
        ):
            groups.append([(start, end, text)])
            cue_start, cue_end, cue_chars = start, end, len(text)
        else:
            groups[-1].append((start, end, text))
            cue_end, cue_chars = max(cue_end, end), cue_chars + 1 + len(text)
    return _display(groups, _milliseconds(min_seconds))


def to_srt(cues: Sequence[Cue]) -> str:
    """SubRip text: per cue a 1-based index, ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` and its text,
    with a blank line between cues. Times are rounded to the millisecond; hours take as many
    digits as they need. No cues give an empty string (an empty SRT file).

    Raises:
        ValueError: a cue's times are not finite, negative or not after its start, start
            before the previous cue's, or it has no text (names the cue's index).
    """
    blocks = [
        f"{number}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for number, (start, end, text) in enumerate(_checked(cues), start=1)
    ]
    return "\n".join(blocks)


def to_webvtt(cues: Sequence[Cue]) -> str:
    """WebVTT text: the ``WEBVTT`` line, then per cue a blank line, ``HH:MM:SS.mmm -->
    HH:MM:SS.mmm`` and its text with ``&``, ``<`` and ``>`` escaped as character references.
    Times are rounded to the millisecond. No cues give the header alone (a valid empty file).

    Raises:
        ValueError: as :func:`to_srt`.
    """
    blocks = [
        f"\n{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{_escape_webvtt(text)}\n"
        for start, end, text in _checked(cues)
    ]
    return "WEBVTT\n" + "".join(blocks)


def write_subtitles(words: Sequence[WordTiming], path: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``words`` as subtitles (cues by :func:`subtitle_cues` with the defaults) to
    ``path``: ``fmt`` ``"srt"`` or ``"vtt"``, UTF-8, ``\\n`` line ends. The file appears only when
    complete (a temporary file in the same folder, then ``os.replace``); returns its path.

    Raises:
        ValueError: ``fmt`` is not a known format, or the words are not in order (see
            :func:`subtitle_cues`); nothing is written then.
    """
    if fmt not in SUBTITLE_FORMATS:
        raise ValueError(
            f"subtitle format {fmt!r} for {path}: use one of {', '.join(SUBTITLE_FORMATS)}"
        )
    cues = subtitle_cues(words)
    text = to_srt(cues) if fmt == "srt" else to_webvtt(cues)
    target = Path(path)
    with atomic_text_file(target) as handle:
        handle.write(text)
    return target


# --- internals ---------------------------------------------------------------------------------


def _check_limits(gap: float, chars: int, span: float, shortest: float) -> None:
    problems = [
        f"{name} = {value!r} (needs {need})"
        for name, value, ok, need in (
            ("max_gap_seconds", gap, math.isfinite(gap) and gap >= 0, "a number >= 0"),
            ("max_chars", chars, chars >= 1, "an integer >= 1"),
            ("max_seconds", span, math.isfinite(span) and span > 0, "a number > 0"),
            ("min_seconds", shortest, math.isfinite(shortest) and shortest >= 0, "a number >= 0"),
        )
        if not ok
    ]
    if problems:
        raise ValueError("subtitle limits out of range: " + "; ".join(problems))


def _word_spans(words: Sequence[WordTiming]) -> list[tuple[int, int, str]]:
    # (start ms, end ms, text with whitespace runs made single spaces) per word, checked
    spans = []
    for index, word in enumerate(words):
        if not (math.isfinite(word.start) and math.isfinite(word.end)):
            raise ValueError(f"word {index} ({word.word!r}): start and end must be finite")
        if word.start < 0 or word.end < word.start:
            raise ValueError(
                f"word {index} ({word.word!r}): start {word.start} s and end {word.end} s need "
                "0 <= start <= end"
            )
        if index and word.start < words[index - 1].start:
            raise ValueError(
                f"word {index} ({word.word!r}) starts at {word.start} s, before word {index - 1} "
                f"({words[index - 1].start} s): pass the words in time order, as decoded"
            )
        text = " ".join(word.word.split())
        spans.append((_milliseconds(word.start), _milliseconds(word.end), text))
    return spans


def _display(groups: list[list[tuple[int, int, str]]], min_ms: int) -> list[Cue]:
    # The display rules of the module docstring; cue starts strictly increase (see the cut rule).
    cues = []
    for index, group in enumerate(groups):
        start = group[0][0]
        end = max(max(word_end for _, word_end, _ in group), start + min_ms)
        if index + 1 < len(groups):
            end = min(end, groups[index + 1][0][0])
        end = max(end, start + 1)
        cues.append(Cue(start / 1000, end / 1000, " ".join(text for _, _, text in group)))
    return cues


def _checked(cues: Sequence[Cue]) -> list[tuple[int, int, str]]:
    # (start ms, end ms, text without blank lines) per cue, after the checks of to_srt
    checked: list[tuple[int, int, str]] = []
    for index, cue in enumerate(cues):
        if not (math.isfinite(cue.start) and math.isfinite(cue.end)) or cue.start < 0:
            raise ValueError(f"cue {index}: start {cue.start} and end {cue.end} must be >= 0 s")
        start, end = _milliseconds(cue.start), _milliseconds(cue.end)
        if end <= start:
            raise ValueError(
                f"cue {index}: ends at {cue.end} s, not after its start {cue.start} s (to the "
                "millisecond): a cue must last at least 1 ms"
            )
        if checked and start < checked[-1][0]:
            raise ValueError(
                f"cue {index}: starts at {cue.start} s, before cue {index - 1}: sort the cues "
                "by start"
            )
        lines = [line.strip() for line in cue.text.splitlines()]
        text = "\n".join(line for line in lines if line)  # a blank line would end the cue
        if not text:
            raise ValueError(f"cue {index} ({cue.start} s to {cue.end} s) has no text")
        checked.append((start, end, text))
    return checked


def _milliseconds(seconds: float) -> int:
    return math.floor(seconds * 1000 + 0.5)  # halves up, unlike round()'s halves to even


def _timestamp(milliseconds: int, decimal_mark: str) -> str:
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal_mark}{millis:03d}"


def _escape_webvtt(text: str) -> str:
    return re.sub("[&<>]", lambda match: _WEBVTT_ESCAPES[match.group()], text)
