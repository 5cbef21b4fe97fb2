"""NeMo-style JSON-lines manifests: read, validate, filter and write.

One utterance a line::

    {"audio_filepath": "audio/train/000001.flac", "duration": 2.35, "text": "call mum", "offset": 0.0}

``audio_filepath`` (required) is absolute or relative to the manifest's folder; ``duration``
(required) is seconds, a finite number > 0; ``text`` (required) is the transcript; ``offset``
(optional) is where the utterance starts in the file, seconds >= 0. Any other field is kept in
``Utterance.extra``. Empty or whitespace-only lines are ignored.

Reading is strict by default: the first bad line raises a ``ManifestError`` that names the file,
the line and what is wrong. ``skip_invalid=True`` skips bad lines instead and logs, once per
manifest, how many were skipped for which reason. Utterances outside ``[min_duration,
max_duration]`` are always skipped: that is filtering, not an error. ``read_manifest_with_stats``
also returns those counts as a ``ManifestStats``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnt.constants import MANIFEST_SKIP_EXAMPLES

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("audio_filepath", "duration", "text")
KNOWN_FIELDS = (*REQUIRED_FIELDS, "offset")

# Skip reasons, the keys of ManifestStats.skipped.
SKIP_INVALID = "invalid"  # not decodable, not JSON, missing field, wrong type or value
SKIP_EMPTY_TEXT = "empty_text"
SKIP_MISSING_AUDIO = "missing_audio"
SKIP_TOO_SHORT = "too_short"  # filtering, never an error
SKIP_TOO_LONG = "too_long"  # filtering, never an error
_MANIFEST_FILE_MODE = 0o644


class ManifestError(ValueError):
    """A manifest line (or the whole file, ``line == 0``) is unusable.

    ``str(error)`` is ``"{path}:{line}: {message}"``, or ``"{path}: {message}"`` for errors of
    the whole file (it does not exist, it is a folder).
    """

    def __init__(self, path: str | os.PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.message = message
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keeps the error picklable (it crosses data-loader workers)
        return (type(self), (self.path, self.line, self.message))


@dataclass(frozen=True)
class Utterance:
    """One manifest line, validated.

    ``audio_filepath`` is absolute; ``duration`` and ``offset`` are seconds; ``line`` is the
    1-based line number in the manifest it came from (0 when made in code); ``extra`` holds
    every field besides the four known ones.
    """

    audio_filepath: str
    duration: float
    text: str
    offset: float = 0.0
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The manifest line as a dict (offset only when non-zero, extra fields after)."""
        record: dict[str, Any] = {
            "audio_filepath": self.audio_filepath,
            "duration": self.duration,
            "text": self.text,
        }
        if self.offset:
            record["offset"] = self.offset
        record.update(self.extra)
        return record


@dataclass
class ManifestStats:
    """What reading one manifest kept and skipped.

    ``skipped`` counts skipped lines per reason (``invalid``, ``empty_text``,
    ``missing_audio``, ``too_short``, ``too_long``); ``examples`` quotes the first few as
    ``"file:line: why"``; ``kept_duration`` is the seconds of audio kept.
    """

    path: str
    kept: int = 0
    kept_duration: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def _skip(self, reason: str, line: int, why: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MANIFEST_SKIP_EXAMPLES:
            self.examples.append(f"{self.path}:{line}: {why}")


def read_manifest(
    path: str | os.PathLike,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    skip_invalid: bool = False,
    check_audio: bool = True,
) -> list[Utterance]:
    """Read and validate a JSON-lines manifest; see ``read_manifest_with_stats``."""
    utterances, _ = read_manifest_with_stats(
        path,
        min_duration=min_duration,
        max_duration=max_duration,
        skip_invalid=skip_invalid,
        check_audio=check_audio,
    )
    return utterances


def read_manifest_with_stats(
    path: str | os.PathLike,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    skip_invalid: bool = False,
    check_audio: bool = True,
) -> tuple[list[Utterance], ManifestStats]:
    """Read and validate a JSON-lines manifest, returning the utterances and what was skipped.

    Args:
        path: the manifest; relative audio paths in it resolve against its folder.
        min_duration, max_duration: seconds; utterances outside this range are skipped
            (counted as ``too_short`` / ``too_long``), never an error. ``None``: no bound.
        skip_invalid: skip bad lines, empty transcripts and missing audio files instead of
            raising ``ManifestError``.
        check_audio: check that every kept utterance's audio file exists.

    Returns:
        ``(utterances, stats)`` in manifest order. Skips are logged once, as a warning when
        anything was invalid and as info when only filtered by duration.

    Raises:
        ManifestError: the file is missing or unreadable, or (unless ``skip_invalid``) a line
            is bad, naming the file and line.
    """
    manifest = Path(path)
    display = str(path)
    if not manifest.exists():
        raise ManifestError(display, 0, "manifest file does not exist; check the path")
    if not manifest.is_file():
        raise ManifestError(display, 0, "manifest path is not a file")
    base_dir = os.path.dirname(os.path.abspath(manifest))
    stats = ManifestStats(path=display)
    utterances: list[Utterance] = []
    for line_number, raw in _numbered_lines(manifest):
        try:
            utterance = _parse_line(raw, line_number, base_dir)
            if not utterance.text.strip():
                raise _Skip(SKIP_EMPTY_TEXT, "empty transcript ('text' has no words)")
        except _Skip as skip:
            if not skip_invalid:
                raise ManifestError(
                    display,
                    line_number,
                    f"{skip.why} (fix the line, or read with skip_invalid=True to skip it)",
                ) from None
            stats._skip(skip.reason, line_number, skip.why)
            continue
        if min_duration is not None and utterance.duration < min_duration:
            stats._skip(
                SKIP_TOO_SHORT,
                line_number,
                f"duration {utterance.duration:g} s < min_duration {min_duration:g} s",
            )
            continue
        if max_duration is not None and utterance.duration > max_duration:
            stats._skip(
                SKIP_TOO_LONG,
                line_number,
                f"duration {utterance.duration:g} s > max_duration {max_duration:g} s",
            )
            continue
        # Checked only for kept utterances: a stat() per line is the slow part of big manifests.
        if check_audio and not os.path.isfile(utterance.audio_filepath):
            why = f"audio file not found: {utterance.audio_filepath}"
            if not skip_invalid:
                raise ManifestError(
                    display, line_number, f"{why} (fix the path, or use skip_invalid=True)"
                )
            stats._skip(SKIP_MISSING_AUDIO, line_number, why)
            continue
        utterances.append(utterance)
        stats.kept += 1
        stats.kept_duration += utterance.duration
    _log_skips(stats)
    return utterances, stats


def write_manifest(
    path: str | os.PathLike, records: Iterable[Mapping[str, Any] | Utterance]
) -> int:
    """Write records as UTF-8 JSON lines, atomically; return the number of lines written.

    Each record needs ``audio_filepath``, ``duration`` and ``text``; its other fields are
    written as given. An absolute ``audio_filepath`` inside the manifest's folder is written
    relative to it (so the corpus can move as one folder); one outside stays absolute; a
    relative one is written unchanged (read back, it resolves against the manifest's folder).
    ``Utterance`` objects are accepted too. Parent folders are created; the file appears only
    when complete (temporary file, then ``os.replace``).

    Raises:
        ValueError: a record lacks a required field (names the record's index).
    """
    manifest = Path(path)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    base_dir = os.path.dirname(os.path.abspath(manifest))
    descriptor, temp_path = tempfile.mkstemp(
        dir=manifest.parent, prefix=f".{manifest.name}.", suffix=".tmp"
    )
    count = 0
    try:
        os.chmod(temp_path, _MANIFEST_FILE_MODE)  # mkstemp makes it owner-only
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            for index, record in enumerate(records):
                line = _record_to_line(record, index, base_dir)
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, manifest)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise
    return count


# --- internals ---------------------------------------------------------------------------------


class _Skip(Exception):
    """A line is invalid for ``reason``; ``why`` says how."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


def _numbered_lines(manifest: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of each non-blank line; bytes so decoding is per line."""
    try:
        with open(manifest, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
                    raw = raw[3:]
                if raw.strip():
                    yield number, raw
    except OSError as error:
        raise ManifestError(str(manifest), 0, f"cannot read manifest: {error}") from None


def _parse_line(raw: bytes, line_number: int, base_dir: str) -> Utterance:
    try:
        text_line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Skip(
            SKIP_INVALID,
            f"line is not valid UTF-8 (byte {error.start}: {raw[error.start : error.start + 1]!r}); "
            "re-encode the manifest as UTF-8",
        ) from None
    try:
        record = json.loads(text_line)
    except json.JSONDecodeError as error:
        raise _Skip(SKIP_INVALID, f"invalid JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(record, dict):
        raise _Skip(SKIP_INVALID, f"expected a JSON object per line, got {type(record).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise _Skip(
            SKIP_INVALID,
            f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(required: {', '.join(REQUIRED_FIELDS)})",
        )
    audio = record["audio_filepath"]
    if not isinstance(audio, str) or not audio.strip():
        raise _Skip(
            SKIP_INVALID,
            f"field 'audio_filepath' must be a non-empty string, got {_describe(audio)}",
        )
    text = record["text"]
    if not isinstance(text, str):
        raise _Skip(SKIP_INVALID, f"field 'text' must be a string, got {_describe(text)}")
    duration = _seconds(record["duration"], "duration")
    if not duration > 0:
        raise _Skip(SKIP_INVALID, f"field 'duration' must be > 0 seconds, got {duration!r}")
    offset = _seconds(record.get("offset", 0.0), "offset")
    if offset < 0:
        raise _Skip(SKIP_INVALID, f"field 'offset' must be >= 0 seconds, got {offset!r}")
    extra = {key: value for key, value in record.items() if key not in KNOWN_FIELDS}
    return Utterance(
        audio_filepath=os.path.normpath(os.path.join(base_dir, os.path.expanduser(audio))),
        duration=duration,
        text=text,
        offset=offset,
        line=line_number,
        extra=extra,
    )


def _seconds(value: Any, name: str) -> float:
    # bool is an int subclass, but `"duration": true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Skip(
            SKIP_INVALID, f"field {name!r} must be a number of seconds, got {_describe(value)}"
        )
    seconds = float(value)
    if not math.isfinite(seconds):
        raise _Skip(SKIP_INVALID, f"field {name!r} must be finite, got {seconds!r}")
    return seconds


def _describe(value: Any) -> str:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{type(value).__name__} {shown}"


def _record_to_line(record: Mapping[str, Any] | Utterance, index: int, base_dir: str) -> dict:
    line = record.to_record() if isinstance(record, Utterance) else dict(record)
    missing = [name for name in REQUIRED_FIELDS if name not in line]
    if missing:
        raise ValueError(
            f"manifest record {index} lacks {', '.join(map(repr, missing))} "
            f"(required: {', '.join(REQUIRED_FIELDS)})"
        )
    audio = os.fspath(line["audio_filepath"])
    if os.path.isabs(audio):
        relative = os.path.relpath(os.path.normpath(audio), base_dir)
        if relative != os.pardir and not relative.startswith(os.pardir + os.sep):
            audio = relative
    line["audio_filepath"] = Path(audio).as_posix() if not os.path.isabs(audio) else audio
    return line


def _log_skips(stats: ManifestStats) -> None:
    if not stats.num_skipped:
        return
    counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(stats.skipped.items()))
    filtered_only = set(stats.skipped) <= {SKIP_TOO_SHORT, SKIP_TOO_LONG}
    logger.log(
        logging.INFO if filtered_only else logging.WARNING,
        "%s: kept %d utterances (%.1f s), skipped %d (%s); first: %s",
        stats.path,
        stats.kept,
        stats.kept_duration,
        stats.num_skipped,
        counts,
        " | ".join(stats.examples),
    )
