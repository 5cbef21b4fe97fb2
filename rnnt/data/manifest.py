"""NeMo-style JSON-lines manifests: read, validate, filter and write.

One utterance a line::

    {"audio_filepath": "audio/train/000001.flac", "duration": 2.35, "text": "call mum", "offset": 0.0}

``audio_filepath`` (required) is absolute or relative to the manifest's folder; ``duration``
(required) is seconds, a finite number > 0; ``text`` (required) is the transcript; ``offset``
(optional) is where the utterance starts in the file, seconds >= 0. Any other field is kept in
``Utterance.extra``. Empty or whitespace-only lines are ignored, and so are Windows line endings
and a UTF-8 byte order mark at the start of any line (concatenated files keep theirs).

Reading never fails with anything but ``ManifestError`` on the file's content, whatever its
bytes: invalid UTF-8, lone surrogate escapes, JSON nested too deeply for the parser, integers
too large for a float and lines longer than ``MANIFEST_MAX_LINE_BYTES`` are bad lines like any
other. Files that are not JSON lines at all (gzip, zip, UTF-16, audio) are refused as a whole,
naming what they look like.

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

from rnnt.constants import MANIFEST_MAX_LINE_BYTES, MANIFEST_SKIP_EXAMPLES

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("audio_filepath", "duration", "text")
KNOWN_FIELDS = (*REQUIRED_FIELDS, "offset")

# Skip reasons, the keys of ManifestStats.skipped.
SKIP_INVALID = "invalid"  # not decodable, not JSON, missing field, wrong type or value
SKIP_EMPTY_TEXT = "empty_text"
SKIP_MISSING_AUDIO = "missing_audio"
SKIP_TOO_SHORT = "too_short"  # filtering, never an error
SKIP_TOO_LONG = "too_long"  # filtering, never an error
# Set by rnnt.data.cuts, which reads the audio headers:
SKIP_UNREADABLE_AUDIO = "unreadable_audio"  # no readable header (not audio), or no sample
SKIP_DURATION_MISMATCH = "duration_mismatch"  # offset/duration beyond the end of the file
_BOM = b"\xef\xbb\xbf"
# Leading bytes of files that are not UTF-8 JSON lines, and what to tell the user.
_NOT_JSON_LINES = (
    (b"\x1f\x8b", "is gzip-compressed; decompress it first (gunzip)"),
    (b"PK\x03\x04", "is a zip archive, not a JSON-lines manifest; extract it first"),
    (b"\xff\xfe\x00\x00", "is UTF-32 encoded; re-encode it as UTF-8"),
    (b"\xff\xfe", "is UTF-16 encoded; re-encode it as UTF-8"),
    (b"\xfe\xff", "is UTF-16 encoded; re-encode it as UTF-8"),
    (b"RIFF", "is a WAV/RIFF audio file, not a JSON-lines manifest"),
    (b"fLaC", "is a FLAC audio file, not a JSON-lines manifest"),
    (b"OggS", "is an Ogg audio file, not a JSON-lines manifest"),
    (b"ID3", "is an MP3 audio file, not a JSON-lines manifest"),
)
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
    ``missing_audio``, ``too_short``, ``too_long``; ``unreadable_audio`` and
    ``duration_mismatch`` once the audio headers are read); ``examples`` quotes the first few
    as ``"file:line: why"``; ``kept_duration`` is the seconds of audio kept; ``partial_audio``
    counts kept utterances without an offset that use only the start of a longer file.
    """

    path: str
    kept: int = 0
    kept_duration: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    partial_audio: int = 0

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, line: int, why: str) -> None:
        """Count line ``line`` as skipped for ``reason``; ``why`` is quoted if among the first."""
        self.skipped[reason] += 1
        if len(self.examples) < MANIFEST_SKIP_EXAMPLES:
            self.examples.append(f"{self.path}:{line}: {why}")

    def summary(self) -> str:
        """One line: kept, skipped per reason, the first examples."""
        counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
        text = (
            f"{self.path}: kept {self.kept} utterances ({self.kept_duration:.1f} s), "
            f"skipped {self.num_skipped}"
        )
        if self.num_skipped:
            text += f" ({counts}); first: {' | '.join(self.examples)}"
        return text


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
    log_skips: bool = True,
) -> tuple[list[Utterance], ManifestStats]:
    """Read and validate a JSON-lines manifest, returning the utterances and what was skipped.

    Args:
        path: the manifest; relative audio paths in it resolve against its folder.
        min_duration, max_duration: seconds; utterances outside this range are skipped
            (counted as ``too_short`` / ``too_long``), never an error. ``None``: no bound.
        skip_invalid: skip bad lines, empty transcripts and missing audio files instead of
            raising ``ManifestError``.
        check_audio: check that every kept utterance's audio file exists.
        log_skips: log the skips (callers that add their own, like ``rnnt.data.cuts``, log
            the total once themselves).

    Returns:
        ``(utterances, stats)`` in manifest order. Skips are logged once, as a warning when
        anything was invalid and as info when only filtered by duration; a manifest without
        a single line is logged as a warning.

    Raises:
        ManifestError: the file is missing, unreadable or not JSON lines at all (compressed,
            UTF-16, audio), or (unless ``skip_invalid``) a line is bad, naming file and line.
    """
    manifest = Path(path)
    display = str(path)
    if not manifest.exists():
        raise ManifestError(display, 0, "manifest file does not exist; check the path")
    if not manifest.is_file():
        raise ManifestError(display, 0, "manifest path is not a file")
    _check_file_kind(manifest, display)
    base_dir = os.path.dirname(os.path.abspath(manifest))
    stats = ManifestStats(path=display)
    utterances: list[Utterance] = []
    lines = 0
    for line_number, raw in _numbered_lines(manifest):
        lines += 1
        try:
            if raw is None:
                raise _Skip(
                    SKIP_INVALID,
                    f"line is longer than {MANIFEST_MAX_LINE_BYTES} bytes; a manifest has one "
                    "short JSON object per line (is this the right file?)",
                )
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
            stats.skip(skip.reason, line_number, skip.why)
            continue
        if min_duration is not None and utterance.duration < min_duration:
            stats.skip(
                SKIP_TOO_SHORT,
                line_number,
                f"duration {utterance.duration:g} s < min_duration {min_duration:g} s",
            )
            continue
        if max_duration is not None and utterance.duration > max_duration:
            stats.skip(
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
            stats.skip(SKIP_MISSING_AUDIO, line_number, why)
            continue
        utterances.append(utterance)
        stats.kept += 1
        stats.kept_duration += utterance.duration
    if not lines:
        logger.warning("%s: the manifest is empty (no JSON line in it)", display)
    if log_skips:
        log_stats(stats)
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


def _check_file_kind(manifest: Path, display: str) -> None:
    try:
        with open(manifest, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise ManifestError(display, 0, f"cannot read manifest: {error}") from None
    for magic, what in _NOT_JSON_LINES:
        if head.startswith(magic):
            raise ManifestError(display, 0, f"the manifest {what}")


def _numbered_lines(manifest: Path) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, raw bytes) of each non-blank line; bytes so decoding is per line.

    A line longer than ``MANIFEST_MAX_LINE_BYTES`` is never held in memory: it is read past
    and given as ``None``.
    """
    try:
        with open(manifest, "rb") as handle:
            number = 0
            while raw := handle.readline(MANIFEST_MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MANIFEST_MAX_LINE_BYTES:
                    while (rest := handle.readline(MANIFEST_MAX_LINE_BYTES)) and not (
                        rest.endswith(b"\n")
                    ):
                        pass
                    yield number, None
                    continue
                if raw.startswith(_BOM):  # a byte order mark: also mid-file, after a `cat`
                    raw = raw[len(_BOM) :]
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
        why = f"invalid JSON: {error.msg} at column {error.colno}"
        if error.msg == "Extra data" and "\r" in text_line.rstrip():
            why += " (the file seems to end its lines with CR only; convert them to LF)"
        raise _Skip(SKIP_INVALID, why) from None
    except RecursionError:
        raise _Skip(SKIP_INVALID, "invalid JSON: nested too deeply to parse") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise _Skip(SKIP_INVALID, f"invalid JSON: {_first_words(error)}") from None
    if not isinstance(record, dict):
        raise _Skip(SKIP_INVALID, f"expected a JSON object per line, got {type(record).__name__}")
    if "\\u" in text_line:  # only escapes can make a lone surrogate (raw UTF-8 cannot)
        _check_unicode(record)
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
    if "\0" in audio:
        raise _Skip(SKIP_INVALID, f"field 'audio_filepath' contains a NUL character: {audio!r}")
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


def _check_unicode(record: dict) -> None:
    # "\ud800" is valid JSON but not Unicode: it would fail later, when the text is
    # tokenized or written back as UTF-8 (after hours of transcription).
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        bad = error.object[error.start : error.end]
        raise _Skip(
            SKIP_INVALID,
            f"contains {bad!r}, an unpaired UTF-16 surrogate escape: not valid Unicode",
        ) from None


def _first_words(error: Exception) -> str:
    return str(error).split(";")[0][:120]


def _seconds(value: Any, name: str) -> float:
    # bool is an int subclass, but `"duration": true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Skip(
            SKIP_INVALID, f"field {name!r} must be a number of seconds, got {_describe(value)}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        raise _Skip(
            SKIP_INVALID,
            f"field {name!r} must be finite, got an integer of {len(str(value))} digits",
        ) from None
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


def log_stats(stats: ManifestStats, log: logging.Logger = logger) -> None:
    """Log what a manifest's reading skipped, once: a warning when anything was unusable, info
    when utterances were only filtered by duration, nothing when nothing was skipped."""
    if not stats.num_skipped:
        return
    filtered_only = set(stats.skipped) <= {SKIP_TOO_SHORT, SKIP_TOO_LONG}
    log.log(logging.INFO if filtered_only else logging.WARNING, "%s", stats.summary())
