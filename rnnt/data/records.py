"""Manifest -> checked audio records: each utterance with what its audio file's header says.

``load_audio_records`` validates a manifest (``read_manifest``) and reads the header of each
audio file it names (no audio), so that bad lines and unreadable files fail at setup, naming
``file:line`` (or, with ``skip_invalid``, are skipped and counted in a ``ManifestStats``).
Given a token counter (the DataModule's tokenizer), it also checks each transcript against
its audio: more tokens than the audio's encoder frames can emit is ``text_too_long_for_audio``,
a lattice T' x (U+1) above ``MAX_BATCH_LATTICE_CELLS`` is ``lattice_too_large``; the count
travels with the record (and its cut) to the sampler, which bounds each batch's lattice.
Each ``AudioRecord`` becomes a lhotse cut at its file's own sample rate and channels
(``AudioRecord.to_cut``); ``rnnt.data.cuts`` streams them, ``rnnt.data.audio`` decodes them.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile
from lhotse import Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut import Cut, MonoCut, MultiCut

from rnnt.constants import (
    AUDIO_DURATION_TOLERANCE_S,
    ENCODER_FRAMES_PER_SECOND,
    MAX_BATCH_LATTICE_CELLS,
    MAX_SYMBOLS_PER_FRAME,
    MIN_AUDIO_DURATION_S,
)
from rnnt.data.manifest import ManifestError, read_manifest_with_stats
from rnnt.data.manifest_line import Utterance
from rnnt.data.manifest_stats import (
    SKIP_DURATION_MISMATCH,
    SKIP_EMPTY_TEXT,
    SKIP_LATTICE_TOO_LARGE,
    SKIP_TEXT_TOO_LONG,
    SKIP_TOO_SHORT,
    SKIP_UNREADABLE_AUDIO,
    ManifestStats,
    ScanProgress,
    log_stats,
)
from rnnt.data.tokenizer import normalize_text

logger = logging.getLogger(__name__)
# Limits, not faults in the data: skipped (and counted) even without skip_invalid.
ALWAYS_SKIPPED = (SKIP_TOO_SHORT, SKIP_LATTICE_TOO_LARGE)


def encoder_frames(duration: float) -> int:
    """Encoder frames T' of ``duration`` seconds of audio, rounded up (an upper bound)."""
    return max(1, math.ceil(duration * ENCODER_FRAMES_PER_SECOND))


@dataclass(frozen=True)
class AudioRecord:
    """One utterance with what its audio file's header says (no audio is read).

    ``sample_rate`` Hz, ``num_frames`` and ``num_channels`` are the file's; ``offset`` and
    ``duration`` (seconds) locate the utterance in it; ``text`` is normalised;
    ``num_tokens`` is its token count U where the tokenizer was known (None otherwise).
    """

    id: str
    path: str
    sample_rate: int
    num_frames: int
    num_channels: int
    offset: float
    duration: float
    text: str
    num_tokens: int | None = None

    def to_cut(self) -> Cut:
        """A lhotse cut of this utterance, at the file's own sample rate and channels.

        ``rnnt.data.audio.load_mono`` resamples to 16 kHz and averages the channels after loading
        (lhotse 1.33's own ``Resample`` transform needs torchaudio or scipy; we need neither).
        The token count, where known, rides along as ``cut.custom["num_tokens"]`` (kept by
        speed perturbation) for the sampler's lattice bound.
        """
        recording = Recording(
            id=self.path,
            sources=[
                AudioSource(type="file", channels=list(range(self.num_channels)), source=self.path)
            ],
            sampling_rate=self.sample_rate,
            num_samples=self.num_frames,
            duration=self.num_frames / self.sample_rate,
        )
        channel = 0 if self.num_channels == 1 else list(range(self.num_channels))
        supervision = SupervisionSegment(
            id=self.id,
            recording_id=recording.id,
            start=0.0,
            duration=self.duration,
            channel=channel,
            text=self.text,
        )
        cut_type = MonoCut if self.num_channels == 1 else MultiCut
        return cut_type(
            id=self.id,
            start=self.offset,
            duration=self.duration,
            channel=channel,
            recording=recording,
            supervisions=[supervision],
            custom=None if self.num_tokens is None else {"num_tokens": self.num_tokens},
        )


def load_audio_records(
    manifest: str | os.PathLike,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    skip_invalid: bool = False,
) -> list[AudioRecord]:
    """Validate a manifest and read the header of each audio file it names.

    See ``load_audio_records_with_stats``; this returns the records only.
    """
    records, _ = load_audio_records_with_stats(
        manifest, min_duration=min_duration, max_duration=max_duration, skip_invalid=skip_invalid
    )
    return records


def load_audio_records_with_stats(
    manifest: str | os.PathLike,
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    skip_invalid: bool = False,
    count_tokens: Callable[[str], int] | None = None,
    speed_factors: Sequence[float] = (),
    progress: bool = False,
) -> tuple[list[AudioRecord], ManifestStats]:
    """Validate a manifest, read each audio file's header, and count what was skipped.

    Lines that ``read_manifest`` rejects, transcripts with no letter or digit after
    ``normalize_text`` (``empty_text``), audio files whose header cannot be read or that hold
    no sample (``unreadable_audio``) and offsets/durations beyond the end of the file
    (``duration_mismatch``) are errors naming ``file:line``, or, with ``skip_invalid``,
    skipped and counted. A duration overrunning the file by at most
    ``AUDIO_DURATION_TOLERANCE_S`` is clamped to the file's end; one shorter than the file
    (no ``offset`` field) uses the file's start, as NeMo does, and is counted in
    ``partial_audio``. Utterances shorter than ``MIN_AUDIO_DURATION_S`` (no feature frame) are
    always skipped as ``too_short``, like those outside ``[min_duration, max_duration]``.

    With ``count_tokens`` (normalised text -> U tokens), each record gets ``num_tokens`` and:
    U above ``MAX_SYMBOLS_PER_FRAME`` x the encoder frames T' of its audio (at the fastest of
    ``speed_factors``, the shortest the audio gets) is ``text_too_long_for_audio``, an error
    or (``skip_invalid``) a counted skip: the transcript cannot be this audio's; a lattice
    T' x (U+1) (at the slowest factor) above ``MAX_BATCH_LATTICE_CELLS`` is always skipped as
    ``lattice_too_large``, a memory limit. Each word is at least one token, so a transcript
    with more words than allowed is refused without being tokenized.

    Args:
        progress: log how far the scan got every ``MANIFEST_PROGRESS_SECONDS`` (rank 0).

    Returns:
        ``(records, stats)``; the skips are logged once (``ManifestStats.summary``).
    """
    utterances, stats = read_manifest_with_stats(
        manifest,
        min_duration=min_duration,
        max_duration=max_duration,
        skip_invalid=skip_invalid,
        log_skips=False,
        progress=progress,
    )
    headers: dict[str, tuple[int, int, int] | Unusable] = {}
    records: list[AudioRecord] = []
    partial_example = ""
    name = Path(manifest).name
    fastest, slowest = speed_bounds(speed_factors)
    tokens_of = None
    if count_tokens is not None:
        tokens_of = functools.partial(
            checked_tokens, count_tokens=count_tokens, fastest=fastest, slowest=slowest
        )
    scan = ScanProgress(
        str(manifest), "audio headers read:", logger, total=len(utterances), enabled=progress
    )
    for done, utterance in enumerate(utterances):
        scan.update(done)
        try:
            if utterance.audio_filepath not in headers:
                headers[utterance.audio_filepath] = read_header(utterance.audio_filepath)
            header = headers[utterance.audio_filepath]
            if isinstance(header, Unusable):
                raise header
            rate, frames, channels = header
            record = make_record(
                utterance, f"{name}:{utterance.line}", rate, frames, channels, tokens_of
            )
        except Unusable as unusable:
            if not skip_invalid and unusable.reason not in ALWAYS_SKIPPED:
                raise ManifestError(manifest, utterance.line, unusable.why) from None
            stats.skip(unusable.reason, utterance.line, unusable.why)
            continue
        records.append(record)
        if not utterance.offset_given and record.duration + AUDIO_DURATION_TOLERANCE_S < (
            record.num_frames / record.sample_rate
        ):
            stats.partial_audio += 1
            partial_example = partial_example or (
                f"{manifest}:{utterance.line}: duration {record.duration:g} s, "
                f"{record.path} {record.num_frames / record.sample_rate:g} s"
            )
    stats.kept = len(records)
    stats.kept_duration = sum(record.duration for record in records)
    log_stats(stats, logger)
    if stats.partial_audio:
        logger.warning(
            "%s: %d utterances with no 'offset' field are shorter than their audio file; only "
            "their first `duration` seconds are used (regenerate the durations if the "
            'manifest is stale, or write the offset, e.g. "offset": 0.0, to mark a '
            "segment); first: %s",
            manifest,
            stats.partial_audio,
            partial_example,
        )
    return records, stats


def speed_bounds(speed_factors: Sequence[float]) -> tuple[float, float]:
    """(fastest, slowest) speed factor, each counting 1.0 (the audio as it is) among them."""
    factors = [float(factor) for factor in speed_factors] or [1.0]
    return max(max(factors), 1.0), min(min(factors), 1.0)


def checked_text(text: str) -> str:
    """``text`` normalised (``normalize_text``); ``Unusable`` (``empty_text``) if nothing is left."""
    normalized = normalize_text(text)
    if not normalized:
        raise Unusable(
            SKIP_EMPTY_TEXT, f"transcript {text[:60]!r} has no letter or digit to train on"
        )
    return normalized


def checked_tokens(
    text: str,
    duration: float,
    *,
    count_tokens: Callable[[str], int],
    fastest: float,
    slowest: float,
) -> int:
    """The token count U of ``text`` (normalised) on ``duration`` seconds of audio, or
    ``Unusable`` if it cannot fit."""
    shortest = duration / fastest
    allowed = encoder_frames(shortest) * MAX_SYMBOLS_PER_FRAME
    speed = f" at speed x{fastest:g}" if fastest != 1.0 else ""
    # SentencePiece pieces do not span spaces: each word is a token at least, so a transcript
    # of more words than allowed is refused without tokenizing it (a 1 MB one costs 0.4 s).
    words = text.count(" ") + 1
    tokens = 0 if words > allowed else count_tokens(text)
    if words > allowed or tokens > allowed:
        what = f"{words} words" if words > allowed else f"{tokens} tokens"
        raise Unusable(
            SKIP_TEXT_TOO_LONG,
            f"{what} in {shortest:g} s of audio{speed} ({len(text)} characters): more "
            f"tokens than the {allowed} its {encoder_frames(shortest)} encoder frames can emit "
            f"({MAX_SYMBOLS_PER_FRAME} per frame); the transcript does not belong to this "
            "audio: fix or drop the line",
        )
    longest = duration / slowest
    cells = encoder_frames(longest) * (tokens + 1)
    if cells > MAX_BATCH_LATTICE_CELLS:
        raise Unusable(
            SKIP_LATTICE_TOO_LARGE,
            f"{encoder_frames(longest)} encoder frames x {tokens + 1} token positions = "
            f"{cells} lattice cells ({longest:g} s of audio), more than the "
            f"{MAX_BATCH_LATTICE_CELLS} the loss may hold for a batch "
            "(MAX_BATCH_LATTICE_CELLS); split it into shorter utterances",
        )
    return tokens


class Unusable(Exception):
    """An utterance's audio or transcript is unusable for ``reason`` (a skip reason)."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


def read_header(path: str) -> tuple[int, int, int] | Unusable:
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as error:
        return Unusable(SKIP_UNREADABLE_AUDIO, f"cannot read audio file {path}: {error}")
    if info.frames <= 0 or info.samplerate <= 0:
        return Unusable(SKIP_UNREADABLE_AUDIO, f"audio file {path} holds no sample (empty)")
    return int(info.samplerate), int(info.frames), int(info.channels)


def make_record(
    utterance: Utterance,
    record_id: str,
    rate: int,
    frames: int,
    channels: int,
    tokens_of: Callable[[str, float], int] | None,
) -> AudioRecord:
    text = checked_text(utterance.text)
    file_duration = frames / rate
    available = file_duration - utterance.offset
    if available <= 0:
        raise Unusable(
            SKIP_DURATION_MISMATCH,
            f"offset {utterance.offset:g} s is past the end of {utterance.audio_filepath} "
            f"({file_duration:g} s)",
        )
    duration = utterance.duration
    if duration > available:
        if duration > available + AUDIO_DURATION_TOLERANCE_S:
            raise Unusable(
                SKIP_DURATION_MISMATCH,
                f"duration {duration:g} s from offset {utterance.offset:g} s overruns "
                f"{utterance.audio_filepath} ({file_duration:g} s); fix 'duration'",
            )
        duration = available
    if duration < MIN_AUDIO_DURATION_S:
        raise Unusable(
            SKIP_TOO_SHORT,
            f"duration {duration:g} s is shorter than {MIN_AUDIO_DURATION_S:g} s "
            "(not one feature frame)",
        )
    return AudioRecord(
        id=record_id,
        path=utterance.audio_filepath,
        sample_rate=rate,
        num_frames=frames,
        num_channels=channels,
        offset=utterance.offset,
        duration=duration,
        text=text,
        num_tokens=None if tokens_of is None else tokens_of(text, duration),
    )
