"""Manifest -> checked audio records: each utterance with what its audio file's header says.

``load_audio_records`` validates a manifest (``read_manifest``) and reads the header of each
audio file it names (no audio), so that bad lines and unreadable files fail at setup, naming
``file:line`` (or, with ``skip_invalid``, are skipped and counted in a ``ManifestStats``).
Each ``AudioRecord`` becomes a lhotse cut at its file's own sample rate and channels
(``AudioRecord.to_cut``); ``rnnt.data.cuts`` streams them, ``rnnt.data.audio`` decodes them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import soundfile
from lhotse import Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut import Cut, MonoCut, MultiCut

from rnnt.constants import AUDIO_DURATION_TOLERANCE_S, MIN_AUDIO_DURATION_S
from rnnt.data.manifest import ManifestError, read_manifest_with_stats
from rnnt.data.manifest_line import Utterance
from rnnt.data.manifest_stats import (
    SKIP_DURATION_MISMATCH,
    SKIP_EMPTY_TEXT,
    SKIP_TOO_SHORT,
    SKIP_UNREADABLE_AUDIO,
    ManifestStats,
    log_stats,
)
from rnnt.data.tokenizer import normalize_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioRecord:
    """One utterance with what its audio file's header says (no audio is read).

    ``sample_rate`` Hz, ``num_frames`` and ``num_channels`` are the file's; ``offset`` and
    ``duration`` (seconds) locate the utterance in it; ``text`` is normalised.
    """

    id: str
    path: str
    sample_rate: int
    num_frames: int
    num_channels: int
    offset: float
    duration: float
    text: str

    def to_cut(self) -> Cut:
        """A lhotse cut of this utterance, at the file's own sample rate and channels.

        ``rnnt.data.audio.load_mono`` resamples to 16 kHz and averages the channels after loading
        (lhotse 1.33's own ``Resample`` transform needs torchaudio or scipy; we need neither).
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
) -> tuple[list[AudioRecord], ManifestStats]:
    """Validate a manifest, read each audio file's header, and count what was skipped.

    Lines that ``read_manifest`` rejects, transcripts with no letter or digit after
    ``normalize_text`` (``empty_text``), audio files whose header cannot be read or that hold
    no sample (``unreadable_audio``) and offsets/durations beyond the end of the file
    (``duration_mismatch``) are errors naming ``file:line``, or, with ``skip_invalid``,
    skipped and counted. A duration overrunning the file by at most
    ``AUDIO_DURATION_TOLERANCE_S`` is clamped to the file's end; one shorter than the file
    (no offset) uses the file's start, as NeMo does, and is counted in ``partial_audio``.
    Utterances shorter than ``MIN_AUDIO_DURATION_S`` (no feature frame) are always skipped
    as ``too_short``, like those outside ``[min_duration, max_duration]``.

    Returns:
        ``(records, stats)``; the skips are logged once (``ManifestStats.summary``).
    """
    utterances, stats = read_manifest_with_stats(
        manifest,
        min_duration=min_duration,
        max_duration=max_duration,
        skip_invalid=skip_invalid,
        log_skips=False,
    )
    headers: dict[str, tuple[int, int, int] | _Unusable] = {}
    records: list[AudioRecord] = []
    partial_example = ""
    name = Path(manifest).name
    for utterance in utterances:
        try:
            if utterance.audio_filepath not in headers:
                headers[utterance.audio_filepath] = _read_header(utterance.audio_filepath)
            header = headers[utterance.audio_filepath]
            if isinstance(header, _Unusable):
                raise header
            rate, frames, channels = header
            record = _make_record(utterance, f"{name}:{utterance.line}", rate, frames, channels)
        except _Unusable as unusable:
            if not skip_invalid and unusable.reason != SKIP_TOO_SHORT:
                raise ManifestError(manifest, utterance.line, unusable.why) from None
            stats.skip(unusable.reason, utterance.line, unusable.why)
            continue
        records.append(record)
        if utterance.offset == 0 and record.duration + AUDIO_DURATION_TOLERANCE_S < (
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
            "%s: %d utterances without an offset are shorter than their audio file; only "
            "their first `duration` seconds are used (regenerate the durations if the "
            "manifest is stale); first: %s",
            manifest,
            stats.partial_audio,
            partial_example,
        )
    return records, stats


class _Unusable(Exception):
    """An utterance's audio or transcript is unusable for ``reason`` (a skip reason)."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


def _read_header(path: str) -> tuple[int, int, int] | _Unusable:
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as error:
        return _Unusable(SKIP_UNREADABLE_AUDIO, f"cannot read audio file {path}: {error}")
    if info.frames <= 0 or info.samplerate <= 0:
        return _Unusable(SKIP_UNREADABLE_AUDIO, f"audio file {path} holds no sample (empty)")
    return int(info.samplerate), int(info.frames), int(info.channels)


def _make_record(
    utterance: Utterance, record_id: str, rate: int, frames: int, channels: int
) -> AudioRecord:
    text = normalize_text(utterance.text)
    if not text:
        raise _Unusable(
            SKIP_EMPTY_TEXT,
            f"transcript {utterance.text[:60]!r} has no letter or digit to train on",
        )
    file_duration = frames / rate
    available = file_duration - utterance.offset
    if available <= 0:
        raise _Unusable(
            SKIP_DURATION_MISMATCH,
            f"offset {utterance.offset:g} s is past the end of {utterance.audio_filepath} "
            f"({file_duration:g} s)",
        )
    duration = utterance.duration
    if duration > available:
        if duration > available + AUDIO_DURATION_TOLERANCE_S:
            raise _Unusable(
                SKIP_DURATION_MISMATCH,
                f"duration {duration:g} s from offset {utterance.offset:g} s overruns "
                f"{utterance.audio_filepath} ({file_duration:g} s); fix 'duration'",
            )
        duration = available
    if duration < MIN_AUDIO_DURATION_S:
        raise _Unusable(
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
    )
