"""One manifest line: its fields, their validation, and the ``Utterance`` it becomes.

A line is one JSON object::

    {"audio_filepath": "audio/train/000001.flac", "duration": 2.35, "text": "call mum", "offset": 0.0}

``audio_filepath`` (required) is absolute or relative to the manifest's folder; ``duration``
(required) is seconds, a finite number > 0; ``text`` (required) is the transcript; ``offset``
(optional) is where the utterance starts in the file, seconds >= 0. Any other field is kept in
``Utterance.extra``. ``parse_line`` turns a line's bytes into an ``Utterance`` or raises
``InvalidLine`` saying what is wrong, whatever the bytes: invalid UTF-8, lone surrogate
escapes, JSON nested too deeply for the parser and integers too large for a float included.
Reading whole files (blank lines, byte order marks, strict or skipping) is ``rnnt.data.manifest``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from rnnt.data.manifest_stats import SKIP_INVALID

REQUIRED_FIELDS = ("audio_filepath", "duration", "text")
KNOWN_FIELDS = (*REQUIRED_FIELDS, "offset")


@dataclass(frozen=True)
class Utterance:
    """One manifest line, validated.

    ``audio_filepath`` is absolute; ``duration`` and ``offset`` are seconds; ``line`` is the
    1-based line number in the manifest it came from (0 when made in code); ``extra`` holds
    every field besides the four known ones. ``offset_given`` tells an ``"offset": 0.0``
    written in the line (a chosen segment) from no ``offset`` field at all (the whole file,
    as NeMo reads it).
    """

    audio_filepath: str
    duration: float
    text: str
    offset: float = 0.0
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    offset_given: bool = False

    def to_record(self) -> dict[str, Any]:
        """The manifest line as a dict (offset when given or non-zero, extra fields after)."""
        record: dict[str, Any] = {
            "audio_filepath": self.audio_filepath,
            "duration": self.duration,
            "text": self.text,
        }
        if self.offset or self.offset_given:
            record["offset"] = self.offset
        record.update(self.extra)
        return record


class InvalidLine(Exception):
    """A line is unusable for ``reason`` (a skip reason of ``rnnt.data.manifest_stats``);
    ``why`` says how, for the user."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


def parse_line(raw: bytes, line_number: int, base_dir: str) -> Utterance:
    """Validate one line's bytes (byte order mark removed) into an ``Utterance``.

    Args:
        raw: the line as read from the file.
        line_number: its 1-based number, kept in ``Utterance.line``.
        base_dir: the manifest's folder; a relative ``audio_filepath`` resolves against it.

    Raises:
        InvalidLine: not UTF-8, not a JSON object, a required field missing, or a field of the
            wrong type or value (``reason`` is always ``invalid``).
    """
    return to_utterance(check_line(raw), line_number, base_dir)


def check_line(raw: bytes) -> dict[str, Any]:
    """The checks of ``parse_line`` alone: the line's JSON object, ``duration`` and ``offset``
    (when present) as floats. What a scan that only needs durations calls (a few µs a line).

    Raises:
        InvalidLine: as ``parse_line``.
    """
    try:
        text_line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidLine(
            SKIP_INVALID,
            f"line is not valid UTF-8 (byte {error.start}: {raw[error.start : error.start + 1]!r}); "
            "re-encode the manifest as UTF-8",
        ) from None
    try:
        record = json.loads(text_line)
    except json.JSONDecodeError as error:
        why = f"invalid JSON: {error.msg} at column {error.colno}"
        if error.msg == "Extra data" and "\r" in text_line.rstrip():
            why += " (the file seems to end its lines with CR only; convert them to LF)"
        raise InvalidLine(SKIP_INVALID, why) from None
    except RecursionError:
        raise InvalidLine(SKIP_INVALID, "invalid JSON: nested too deeply to parse") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise InvalidLine(SKIP_INVALID, f"invalid JSON: {_first_words(error)}") from None
    if not isinstance(record, dict):
        raise InvalidLine(
            SKIP_INVALID, f"expected a JSON object per line, got {type(record).__name__}"
        )
    if "\\u" in text_line:  # only escapes can make a lone surrogate (raw UTF-8 cannot)
        _check_unicode(record)
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise InvalidLine(
            SKIP_INVALID,
            f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(required: {', '.join(REQUIRED_FIELDS)})",
        )
    audio = record["audio_filepath"]
    if not isinstance(audio, str) or not audio.strip():
        raise InvalidLine(
            SKIP_INVALID,
            f"field 'audio_filepath' must be a non-empty string, got {_describe(audio)}",
        )
    if "\0" in audio:
        raise InvalidLine(
            SKIP_INVALID, f"field 'audio_filepath' contains a NUL character: {audio!r}"
        )
    text = record["text"]
    if not isinstance(text, str):
        raise InvalidLine(SKIP_INVALID, f"field 'text' must be a string, got {_describe(text)}")
    duration = record["duration"] = _seconds(record["duration"], "duration")
    if not duration > 0:
        raise InvalidLine(SKIP_INVALID, f"field 'duration' must be > 0 seconds, got {duration!r}")
    if "offset" in record:
        offset = record["offset"] = _seconds(record["offset"], "offset")
        if offset < 0:
            raise InvalidLine(SKIP_INVALID, f"field 'offset' must be >= 0 seconds, got {offset!r}")
    return record


def to_utterance(record: dict[str, Any], line_number: int, base_dir: str) -> Utterance:
    """The ``Utterance`` of a record ``check_line`` passed."""
    audio = record["audio_filepath"]
    extra = {key: value for key, value in record.items() if key not in KNOWN_FIELDS}
    return Utterance(
        audio_filepath=os.path.normpath(os.path.join(base_dir, os.path.expanduser(audio))),
        duration=record["duration"],
        text=record["text"],
        offset=record.get("offset", 0.0),
        line=line_number,
        extra=extra,
        offset_given="offset" in record,
    )


def _check_unicode(record: dict) -> None:
    # "\ud800" is valid JSON but not Unicode: it would fail later, when the text is
    # tokenized or written back as UTF-8 (after hours of transcription).
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        bad = error.object[error.start : error.end]
        raise InvalidLine(
            SKIP_INVALID,
            f"contains {bad!r}, an unpaired UTF-16 surrogate escape: not valid Unicode",
        ) from None


def _first_words(error: Exception) -> str:
    return str(error).split(";")[0][:120]


def _seconds(value: Any, name: str) -> float:
    # bool is an int subclass, but `"duration": true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidLine(
            SKIP_INVALID, f"field {name!r} must be a number of seconds, got {_describe(value)}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        raise InvalidLine(
            SKIP_INVALID,
            f"field {name!r} must be finite, got an integer of {len(str(value))} digits",
        ) from None
    if not math.isfinite(seconds):
        raise InvalidLine(SKIP_INVALID, f"field {name!r} must be finite, got {seconds!r}")
    return seconds


def _describe(value: Any) -> str:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{type(value).__name__} {shown}"
