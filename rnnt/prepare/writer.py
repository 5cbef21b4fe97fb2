"""What every corpus recipe shares: utterances checked, manifests written, a summary reported.

A corpus module (``rnnt.prepare.librispeech``, ...) lists each split's utterances as ``Entry``
objects (and ``Skipped`` ones where its layout already shows a problem). ``write_split`` checks
each entry and streams the usable ones into ``OUT/SPLIT.jsonl`` (``rnnt.data.manifest``'s
NeMo-style lines: ``audio_filepath``, ``duration`` seconds, ``text``, ``offset`` where the
utterance does not start the file). The text is kept as the corpus writes it; training
normalises it (``normalize_text``). ``write_summary`` writes ``prepare.json``: per split the
utterances, seconds, hours and what was skipped, by reason, with examples.

Skip reasons are the trainer's own (``rnnt.data.manifest_stats``) where they mean the same:
``empty_text`` (nothing left after ``normalize_text``), ``missing_audio``, ``unreadable_audio``
(no readable header, or no sample), ``invalid`` (a listing line that does not parse), plus
``no_transcript`` and ``duplicate_audio`` (``folder`` corpora).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from rnnt.constants import MANIFEST_SKIP_EXAMPLES, PREPARE_CHUNK, PREPARE_SUMMARY_FILE
from rnnt.data.manifest import write_manifest
from rnnt.data.manifest_stats import (
    SKIP_EMPTY_TEXT,
    SKIP_MISSING_AUDIO,
    ScanProgress,
)
from rnnt.data.records import Unusable, read_header
from rnnt.data.tokenizer import normalize_text

logger = logging.getLogger(__name__)

SKIP_NO_TRANSCRIPT = "no_transcript"  # folder: an audio file without a same-named .txt/.lab
SKIP_DUPLICATE_AUDIO = "duplicate_audio"  # folder: a.wav beside a.flac; the first kept


class PrepareError(ValueError):
    """The corpus folder does not have the layout its recipe expects, or an option is wrong.

    The message is one line naming the missing file or folder and the layout expected; the
    ``rnnt`` command prints it as ``rnnt prepare: error: ...`` with exit status 2.
    """


@dataclass(frozen=True)
class Entry:
    """One utterance a corpus lists.

    ``where`` says where it is listed (``dev.tsv:12``, a transcript file) for skip messages;
    ``audio_path`` is absolute; ``text`` is as the corpus writes it; ``duration`` (seconds) is
    given when a lhotse recipe already read the audio header, else read here; ``offset``
    (seconds) is where the utterance starts in the file.
    """

    where: str
    audio_path: str
    text: str
    duration: float | None = None
    offset: float = 0.0


@dataclass(frozen=True)
class Skipped:
    """An utterance the corpus lists but that cannot be used: ``reason`` (a skip reason) and
    ``why`` (one line, naming the file)."""

    where: str
    reason: str
    why: str


@dataclass
class Split:
    """A split to write: its name (the manifest is ``NAME.jsonl``) and its entries, which may
    be a lazy iterable (a recipe that runs when it is iterated)."""

    name: str
    entries: Iterable[Entry | Skipped]


@dataclass
class SplitReport:
    """What ``write_split`` wrote for one split: utterances, seconds of audio, skips."""

    name: str
    manifest: str
    utterances: int = 0
    seconds: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, item: Skipped) -> None:
        """Count a skipped utterance; keep the first few messages of each reason."""
        self.skipped[item.reason] += 1
        kept = self.examples.setdefault(item.reason, [])
        if len(kept) < MANIFEST_SKIP_EXAMPLES:
            kept.append(f"{item.where}: {item.why}")

    def to_json(self) -> dict[str, Any]:
        """The split's entry in ``prepare.json``."""
        return {
            "manifest": self.manifest,
            "utterances": self.utterances,
            "seconds": round(self.seconds, 3),
            "hours": round(self.seconds / 3600.0, 4),
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_examples": {reason: self.examples[reason] for reason in sorted(self.examples)},
        }

    def describe(self, manifest_path: str | None = None) -> str:
        """One line for the terminal: counts, audio, the manifest (``manifest_path`` where
        given) and skips by reason."""
        line = f"{self.name}: {self.utterances} utterances, {format_seconds(self.seconds)}"
        line += f" -> {manifest_path or self.manifest}"
        if self.skipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            line += f"; skipped {sum(self.skipped.values())} ({reasons})"
        return line


def write_split(out: Path, split: Split, jobs: int) -> SplitReport:
    """Check ``split``'s entries and write the usable ones to ``out/NAME.jsonl``.

    Audio headers are read by ``jobs`` threads, ``PREPARE_CHUNK`` entries at a time; the
    manifest keeps the entries' order and appears only when complete.
    """
    report = SplitReport(split.name, f"{split.name}.jsonl")
    write_manifest(out / report.manifest, _checked_records(split, report, jobs))
    return report


def write_summary(
    out: Path, corpus: str, corpus_dir: Path, reader: str, reports: list[SplitReport]
) -> Path:
    """Write ``out/prepare.json`` (corpus, reader, per-split and total counts); return its path."""
    skipped: Counter = Counter()
    for report in reports:
        skipped.update(report.skipped)
    seconds = sum(report.seconds for report in reports)
    summary = {
        "corpus": corpus,
        "corpus_dir": str(corpus_dir),
        "reader": reader,
        "splits": {report.name: report.to_json() for report in reports},
        "total": {
            "utterances": sum(report.utterances for report in reports),
            "seconds": round(seconds, 3),
            "hours": round(seconds / 3600.0, 4),
            "skipped": dict(sorted(skipped.items())),
        },
    }
    path = out / PREPARE_SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# --- internals ---------------------------------------------------------------------------------


def _checked_records(split: Split, report: SplitReport, jobs: int) -> Iterator[dict[str, Any]]:
    # Manifest records of the usable entries, in order; skips go to `report` as they are found.
    progress = ScanProgress(split.name, "utterances checked:", logger, total=None, enabled=True)
    done = 0
    entries = iter(split.entries)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while chunk := [_with_words(item) for item in islice(entries, PREPARE_CHUNK)]:
            to_read = [
                item.audio_path
                for item in chunk
                if isinstance(item, Entry) and item.duration is None
            ]
            headers = dict(zip(to_read, pool.map(_audio_seconds, to_read), strict=True))
            for item in chunk:
                record = item if isinstance(item, Skipped) else _record(item, headers)
                if isinstance(record, Skipped):
                    report.skip(record)
                    continue
                report.utterances += 1
                report.seconds += record["duration"]
                yield record
            done += len(chunk)
            progress.update(done)


def _with_words(item: Entry | Skipped) -> Entry | Skipped:
    # The entry, or its skip when normalize_text leaves nothing of its transcript.
    if isinstance(item, Skipped) or normalize_text(item.text):
        return item
    why = f"transcript {item.text[:60]!r} has no letter or digit after normalize_text"
    return Skipped(item.where, SKIP_EMPTY_TEXT, why)


def _record(entry: Entry, headers: dict[str, float | Skipped]) -> dict[str, Any] | Skipped:
    duration = entry.duration if entry.duration is not None else headers[entry.audio_path]
    if isinstance(duration, Skipped):
        return Skipped(entry.where, duration.reason, duration.why)
    record: dict[str, Any] = {
        "audio_filepath": entry.audio_path,
        "duration": round(duration, 6),
        "text": entry.text,
    }
    if entry.offset:
        record["offset"] = round(entry.offset, 6)
    return record


def _audio_seconds(path: str) -> float | Skipped:
    # The header the trainer reads too (rnnt.data.records): a file that passes here loads there.
    if not os.path.isfile(path):
        return Skipped("", SKIP_MISSING_AUDIO, f"audio file not found: {path}")
    header = read_header(path)
    if isinstance(header, Unusable):
        return Skipped("", header.reason, " ".join(header.why.split()))
    rate, frames, _ = header
    return frames / rate


def format_seconds(seconds: float) -> str:
    """Seconds of audio for a person: ``12.5 s`` below 0.1 h, else ``3.25 h``."""
    return f"{seconds / 3600.0:.2f} h" if seconds >= 360 else f"{seconds:.1f} s"
