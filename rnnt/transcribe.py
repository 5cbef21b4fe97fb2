"""Transcribe a manifest with a checkpoint, losing nothing and overwriting nothing unasked.

``transcribe_manifest`` writes each usable line of a manifest, with an added ``pred_text``, to an
output manifest. The audio is decoded window by window (``rnnt.transcribe_audio``), so memory
holds one window's audio whatever the manifest's length, and:

- the output grows as ``OUT`` + ``TRANSCRIBE_PARTIAL_SUFFIX``, whole lines in input order,
  flushed after every window, and is renamed to ``OUT`` only when complete: ``OUT`` never
  exists half-written, and a crash or Ctrl-C keeps every finished line in the partial file,
  which a warning names;
- a line whose audio cannot be used (missing, corrupt, truncated, NaN samples, too long) or that
  is not a valid manifest line is skipped, warned about as ``manifest:line`` and counted by reason;
  ``strict=True`` makes the first one a ``ManifestError`` naming ``manifest:line``;
- an output that is the input manifest is refused, and so is an existing output (or partial
  output) unless ``overwrite=True``.

The audio side (``AudioItem``, ``load_audio``, ``batch_by_duration``, ``transcribe``) lives in
``rnnt.transcribe_audio`` and is re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from torchmetrics.functional.text import word_error_rate

from rnnt.constants import (
    MAX_SYMBOLS_PER_FRAME,
    TRANSCRIBE_PARTIAL_SUFFIX,
    TRANSCRIBE_SKIP_WARNINGS,
    TRANSCRIBE_WINDOW_SECONDS,
)
from rnnt.data.manifest import ManifestError, _record_to_line, read_manifest_with_stats
from rnnt.data.manifest_line import Utterance
from rnnt.data.manifest_stats import (
    SKIP_DURATION_MISMATCH,
    SKIP_MISSING_AUDIO,
    SKIP_TOO_LONG,
    SKIP_TOO_SHORT,
    SKIP_UNREADABLE_AUDIO,
)
from rnnt.data.tokenizer import Tokenizer, normalize_text
from rnnt.decoding import check_beam_size
from rnnt.hotwords import HotwordGraph
from rnnt.models.transducer import Transducer
from rnnt.transcribe_audio import (
    LOAD_ERRORS,
    AudioItem,
    Transcript,
    batch_by_duration,
    default_batch_seconds,
    load_audio,
    transcribe,
    transcribe_windows,
)

__all__ = [
    "LOAD_ERRORS",
    "AudioItem",
    "ManifestResult",
    "Transcript",
    "batch_by_duration",
    "check_output",
    "default_batch_seconds",
    "format_result",
    "load_audio",
    "partial_output_path",
    "transcribe",
    "transcribe_manifest",
    "transcribe_windows",
]

logger = logging.getLogger(__name__)

# The skip reason of an audio-loading error, from rnnt.data.audio.load_audio_file's wording;
# any other ValueError is unreadable audio.
_REASON_BY_MESSAGE = (
    ("longer than", SKIP_TOO_LONG),
    ("shorter than", SKIP_TOO_SHORT),
    ("is outside audio file", SKIP_DURATION_MISMATCH),
    ("overruns audio file", SKIP_DURATION_MISMATCH),
)


@dataclass(frozen=True)
class ManifestResult:
    """What transcribing a manifest did and measured.

    ``utterances`` lines were transcribed (written with ``pred_text``); ``skipped`` counts the
    lines left out, per reason (``rnnt.data.manifest_stats``). ``wer`` (None when no
    transcribed line has reference text) and ``audio_seconds`` cover the transcribed lines only.
    """

    utterances: int
    wer: float | None
    audio_seconds: float
    wall_seconds: float
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        """Lines skipped, all reasons together."""
        return sum(self.skipped.values())

    @property
    def real_time_factor(self) -> float:
        """Wall seconds per second of audio (below 1 is faster than real time)."""
        return self.wall_seconds / max(self.audio_seconds, 1e-9)


def partial_output_path(output: str | os.PathLike) -> Path:
    """Where the output manifest grows until it is complete: ``OUT.jsonl.partial``."""
    output = Path(output)
    return output.with_name(output.name + TRANSCRIBE_PARTIAL_SUFFIX)


def check_output(
    manifest: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False
) -> None:
    """Refuse an output that would destroy something: the input manifest (always), an existing
    file or an interrupted run's partial output (unless ``overwrite``), a folder.

    Raises:
        ValueError: naming the path and what to do instead.
    """
    manifest, output = Path(manifest), Path(output)
    partial = partial_output_path(output)
    if output.is_dir():
        raise ValueError(
            f"output {output} is a folder; give a file to write, e.g. {output / 'pred.jsonl'}"
        )
    for path in (output, partial):
        if _same_path(path, manifest):
            raise ValueError(
                f"output {output} would overwrite the input manifest {manifest} (as {path}); "
                "write the transcripts to another file"
            )
    folder = next(parent for parent in output.absolute().parents if parent.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write output {output}: {folder} is not a writable folder")
    if overwrite:
        return
    if output.exists():
        raise ValueError(
            f"output {output} already exists; pass --overwrite to replace it, or choose another file"
        )
    if partial.exists():
        raise ValueError(
            f"{partial} holds the lines of an interrupted transcription; rename it to keep "
            "them, or pass --overwrite to start again"
        )


def transcribe_manifest(
    model: Transducer,
    tokenizer: Tokenizer,
    manifest: str | os.PathLike,
    output: str | os.PathLike,
    batch_seconds: float | None = None,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
    *,
    strict: bool = False,
    overwrite: bool = False,
    window_seconds: float = TRANSCRIBE_WINDOW_SECONDS,
    hotwords: HotwordGraph | None = None,
    timestamps: bool = False,
) -> ManifestResult:
    """Write each usable line of ``manifest`` to ``output`` with an added ``pred_text`` field.

    Lines keep their input order; lines that cannot be used are skipped and counted (see the
    module docstring for the partial file, ``strict`` and ``overwrite``). The WER compares
    ``pred_text`` with the normalised ``text`` of the transcribed lines that have one.
    ``beam_size=1`` decodes with greedy search, larger values with beam search;
    ``window_seconds`` is the audio decoded and written at a time. ``hotwords`` biases beam
    search towards its phrases; ``timestamps`` adds each line's ``words``: ``[{word, start,
    end, confidence}]``, seconds from the start of the line's audio (its ``offset``).

    Raises:
        ValueError: a bad ``beam_size`` or ``output`` (``check_output``).
        ManifestError: the manifest is unreadable, or (``strict``) a line or its audio is bad.
    """
    check_beam_size(beam_size)
    check_output(manifest, output, overwrite)
    start = time.perf_counter()
    utterances, stats = read_manifest_with_stats(manifest, skip_invalid=not strict)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_output_path(output)
    base_dir = os.path.dirname(os.path.abspath(output))
    tally = _Tally(skipped=Counter(stats.skipped))
    items = (AudioItem(u.audio_filepath, u.offset, u.duration) for u in utterances)
    try:
        with open(partial, "w", encoding="utf-8", newline="\n") as handle:
            for window in transcribe_windows(
                model,
                tokenizer,
                items,
                batch_seconds=batch_seconds,
                max_symbols_per_frame=max_symbols_per_frame,
                beam_size=beam_size,
                window_seconds=window_seconds,
                stop_at_error=strict,
                hotwords=hotwords,
                timestamps=timestamps,
            ):
                _write_window(handle, window, utterances, manifest, base_dir, strict, tally)
                if window[-1].index + 1 < len(utterances):
                    logger.info(
                        "%s: %d of %d lines done (%d transcribed) in %s",
                        manifest,
                        window[-1].index + 1,
                        len(utterances),
                        tally.written,
                        partial,
                    )
    except BaseException:
        _keep_partial(manifest, partial, tally.written)
        raise
    os.replace(partial, output)
    return tally.result(time.perf_counter() - start)


def format_result(result: ManifestResult) -> str:
    """One human line: utterances transcribed and skipped (by reason), WER and speed."""
    wer = "n/a (no reference text)" if result.wer is None else f"{100 * result.wer:.2f}%"
    skipped = ""
    if result.num_skipped:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(result.skipped.items()))
        skipped = f", {result.num_skipped} skipped ({reasons})"
    return (
        f"{result.utterances} utterances transcribed{skipped}, WER {wer}, "
        f"{result.audio_seconds:.1f} s of audio in {result.wall_seconds:.1f} s "
        f"(real-time factor {result.real_time_factor:.4f})"
    )


# --- internals ---------------------------------------------------------------------------------


@dataclass
class _Tally:
    # What transcribe_manifest wrote and skipped so far.
    skipped: Counter
    written: int = 0
    audio_seconds: float = 0.0
    load_skips: int = 0
    scored: list[tuple[str, str]] = field(default_factory=list)  # (reference, prediction)

    def add(self, utterance: Utterance, transcript: Transcript) -> None:
        self.written += 1
        self.audio_seconds += transcript.seconds
        reference = normalize_text(utterance.text)
        if reference:
            self.scored.append((reference, transcript.text or ""))

    def result(self, wall_seconds: float) -> ManifestResult:
        wer = None
        if self.scored:
            predictions, references = [p for _, p in self.scored], [r for r, _ in self.scored]
            wer = float(word_error_rate(predictions, references))
        return ManifestResult(
            self.written, wer, self.audio_seconds, wall_seconds, dict(self.skipped)
        )


def _write_window(
    handle: TextIO,
    window: list[Transcript],
    utterances: list[Utterance],
    manifest: str | os.PathLike,
    base_dir: str,
    strict: bool,
    tally: _Tally,
) -> None:
    # The window's lines in one write, flushed and synced: a crash keeps every finished window
    # (a SIGKILL in the middle of this write can cut only its last line). A line whose audio
    # did not load is a counted, warned skip, or (strict) an error once the lines before it
    # are written.
    lines: list[str] = []
    failure: tuple[Utterance, Exception] | None = None
    for transcript in window:
        utterance = utterances[transcript.index]
        if transcript.error is not None:
            if strict:
                failure = (utterance, transcript.error)
                break
            _skip(manifest, utterance, transcript.error, tally)
            continue
        fields = {**utterance.to_record(), "pred_text": transcript.text}
        if transcript.words is not None:
            fields["words"] = [word.to_dict() for word in transcript.words]
        record = _record_to_line(fields, transcript.index, base_dir)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        tally.add(utterance, transcript)
    handle.write("".join(lines))
    handle.flush()
    os.fsync(handle.fileno())
    if failure is not None:
        utterance, error = failure
        raise ManifestError(
            manifest,
            utterance.line,
            f"{error} (fix or remove the line, or transcribe without --strict to skip it)",
        )


def _skip(
    manifest: str | os.PathLike, utterance: Utterance, error: Exception, tally: _Tally
) -> None:
    # A line whose audio did not load: counted by reason, the first few warned about.
    reason = _skip_reason(error)
    tally.skipped[reason] += 1
    tally.load_skips += 1
    if tally.load_skips <= TRANSCRIBE_SKIP_WARNINGS:
        logger.warning("%s:%d: skipped (%s): %s", manifest, utterance.line, reason, error)
    if tally.load_skips == TRANSCRIBE_SKIP_WARNINGS:
        logger.warning("%s: further skipped lines are counted, not shown", manifest)


def _skip_reason(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return SKIP_MISSING_AUDIO
    message = str(error)
    for fragment, reason in _REASON_BY_MESSAGE:
        if fragment in message:
            return reason
    return SKIP_UNREADABLE_AUDIO


def _keep_partial(manifest: str | os.PathLike, partial: Path, written: int) -> None:
    # After a crash or an interruption: keep the finished lines and say where they are.
    if written == 0:
        partial.unlink(missing_ok=True)
        return
    logger.warning(
        "%s: transcription stopped; the %d lines finished (in input order, skipped lines left "
        "out) are kept in %s: rename it to keep them (a new run refuses it unless --overwrite)",
        manifest,
        written,
        partial,
    )


def _same_path(path: Path, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return path.resolve() == other.resolve()
