"""NeMo-style JSON-lines manifest files: read (validated line by line, filtered) and write.

One utterance a line::

    {"audio_filepath": "audio/train/000001.flac", "duration": 2.35, "text": "call mum", "offset": 0.0}

The fields and how each line is validated are ``rnnt.data.manifest_line``. Empty or
whitespace-only lines are ignored, and so are Windows line endings and a UTF-8 byte order mark
at the start of any line (concatenated files keep theirs).

Reading never fails with anything but ``ManifestError`` on the file's content, whatever its
bytes: lines that do not parse and lines longer than ``MANIFEST_MAX_LINE_BYTES`` are bad lines
like any other. Files that are not JSON lines at all (gzip, zip, UTF-16, audio) are refused as
a whole, naming what they look like.

Reading is strict by default: the first bad line raises a ``ManifestError`` that names the file,
the line and what is wrong. ``skip_invalid=True`` skips bad lines instead and logs, once per
manifest, how many were skipped for which reason. Utterances outside ``[min_duration,
max_duration]`` are always skipped: that is filtering, not an error. ``read_manifest_with_stats``
also returns those counts as a ``ManifestStats`` (``rnnt.data.manifest_stats``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rnnt.constants import MANIFEST_MAX_LINE_BYTES
from rnnt.data.atomic import atomic_text_file
from rnnt.data.manifest_line import (
    REQUIRED_FIELDS,
    InvalidLine,
    Utterance,
    check_line,
    to_utterance,
)
from rnnt.data.manifest_stats import (
    SKIP_EMPTY_TEXT,
    SKIP_INVALID,
    SKIP_MISSING_AUDIO,
    SKIP_TOO_LONG,
    SKIP_TOO_SHORT,
    ManifestStats,
    ScanProgress,
    log_stats,
)

logger = logging.getLogger(__name__)

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
    progress: bool = False,
) -> tuple[list[Utterance], ManifestStats]:
    """Read and validate a JSON-lines manifest, returning the utterances and what was skipped.

    Args:
        path: the manifest; relative audio paths in it resolve against its folder.
        min_duration, max_duration: seconds; utterances outside this range are skipped
            (counted as ``too_short`` / ``too_long``), never an error. ``None``: no bound.
        skip_invalid: skip bad lines, empty transcripts and missing audio files instead of
            raising ``ManifestError``.
        check_audio: check that every kept utterance's audio file exists.
        log_skips: log the skips (callers that add their own, like ``rnnt.data.records``, log
            the total once themselves).
        progress: log how far the scan got every ``MANIFEST_PROGRESS_SECONDS`` while it runs
            (``ScanProgress``; nothing for a manifest read sooner).

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
    base_dir = os.path.dirname(os.path.abspath(manifest))
    stats = ManifestStats(path=display)
    utterances: list[Utterance] = []
    for line_number, _, record in scan_manifest(
        manifest,
        stats,
        min_duration=min_duration,
        max_duration=max_duration,
        skip_invalid=skip_invalid,
        progress=progress,
    ):
        utterance = to_utterance(record, line_number, base_dir)
        # Checked only for kept utterances: a stat() per line is the slow part of big manifests.
        if check_audio and not os.path.isfile(utterance.audio_filepath):
            why = f"audio file not found: {utterance.audio_filepath}"
            if not skip_invalid:
                raise ManifestError(
                    display, utterance.line, f"{why} (fix the path, or use skip_invalid=True)"
                )
            stats.skip(SKIP_MISSING_AUDIO, utterance.line, why)
            continue
        utterances.append(utterance)
        stats.kept += 1
        stats.kept_duration += utterance.duration
    if log_skips:
        log_stats(stats, logger)
    return utterances, stats


def scan_manifest(
    manifest: Path,
    stats: ManifestStats,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    skip_invalid: bool = False,
    progress: bool = False,
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield ``(line number, byte offset, record)`` for every valid line within the bounds;
    ``record`` is the line's JSON object as ``check_line`` returns it (``to_utterance`` makes
    it an ``Utterance``).

    The checks and skips of ``read_manifest_with_stats`` (which see), counted in ``stats``
    (``kept`` is the caller's to count); no audio file is touched. A manifest without a single
    line is logged as a warning when the scan ends.

    Raises:
        ManifestError: as ``read_manifest_with_stats``.
    """
    display = stats.path
    if not manifest.exists():
        raise ManifestError(display, 0, "manifest file does not exist; check the path")
    if not manifest.is_file():
        raise ManifestError(display, 0, "manifest path is not a file")
    _check_file_kind(manifest, display)
    lines = 0
    scan = ScanProgress(display, "manifest lines read:", logger, total=None, enabled=progress)
    for line_number, offset, raw in _numbered_lines(manifest):
        lines += 1
        scan.update(line_number)
        try:
            if raw is None:
                raise InvalidLine(
                    SKIP_INVALID,
                    f"line is longer than {MANIFEST_MAX_LINE_BYTES} bytes; a manifest has one "
                    "short JSON object per line (is this the right file?)",
                )
            record = check_line(raw)
            if not record["text"].strip():
                raise InvalidLine(SKIP_EMPTY_TEXT, "empty transcript ('text' has no words)")
        except InvalidLine as skip:
            if not skip_invalid:
                raise ManifestError(
                    display,
                    line_number,
                    f"{skip.why} (fix the line, or read with skip_invalid=True to skip it)",
                ) from None
            stats.skip(skip.reason, line_number, skip.why)
            continue
        duration = record["duration"]
        if min_duration is not None and duration < min_duration:
            stats.skip(
                SKIP_TOO_SHORT,
                line_number,
                f"duration {duration:g} s < min_duration {min_duration:g} s",
            )
            continue
        if max_duration is not None and duration > max_duration:
            stats.skip(
                SKIP_TOO_LONG,
                line_number,
                f"duration {duration:g} s > max_duration {max_duration:g} s",
            )
            continue
        yield line_number, offset, record
    if not lines:
        logger.warning("%s: the manifest is empty (no JSON line in it)", display)


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
    count = 0
    with atomic_text_file(manifest) as handle:
        for index, record in enumerate(records):
            line = _record_to_line(record, index, base_dir)
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    return count


# --- internals ---------------------------------------------------------------------------------


def _check_file_kind(manifest: Path, display: str) -> None:
    try:
        with open(manifest, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise ManifestError(display, 0, f"cannot read manifest: {error}") from None
    for magic, what in _NOT_JSON_LINES:
        if head.startswith(magic):
            raise ManifestError(display, 0, f"the manifest {what}")


def _numbered_lines(manifest: Path) -> Iterator[tuple[int, int, bytes | None]]:
    """(1-based line number, byte offset, raw bytes) of each non-blank line; bytes so decoding
    is per line.

    A line longer than ``MANIFEST_MAX_LINE_BYTES`` is never held in memory: it is read past
    and given as ``None``.
    """
    try:
        with open(manifest, "rb") as handle:
            number = 0
            offset = 0
            while raw := handle.readline(MANIFEST_MAX_LINE_BYTES + 1):
                number += 1
                start, offset = offset, offset + len(raw)
                if len(raw) > MANIFEST_MAX_LINE_BYTES:
                    while (rest := handle.readline(MANIFEST_MAX_LINE_BYTES)) and not (
                        rest.endswith(b"\n")
                    ):
                        offset += len(rest)
                    offset += len(rest)
                    yield number, start, None
                    continue
                if raw.startswith(_BOM):  # a byte order mark: also mid-file, after a `cat`
                    raw = raw[len(_BOM) :]
                if raw.strip():
                    yield number, start, raw
    except OSError as error:
        raise ManifestError(str(manifest), 0, f"cannot read manifest: {error}") from None


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
