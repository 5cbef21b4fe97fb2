"""Audio records and their lhotse cuts: manifest lines -> headers -> cuts -> 16 kHz mono audio.

``load_audio_records`` validates a manifest (``read_manifest``) and reads the header of each
audio file it names (no audio), so that bad lines and unreadable files fail at setup, naming
``file:line``. Each ``AudioRecord`` becomes a lhotse cut at its file's own sample rate and
channels; ``CutSource`` yields them lazily (shuffled and speed-perturbed per epoch for
training), and ``load_mono`` reads a cut's audio as 16 kHz mono in the data-loader workers.
``load_audio_file`` does the same for one file outside training (``rnnt transcribe``), with
every check made before decoding and every error naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from lhotse import Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut import Cut, MonoCut, MultiCut

from rnnt.constants import (
    AUDIO_DURATION_TOLERANCE_S,
    AUDIO_MAX_ABS_SAMPLE,
    MAX_DECODE_DURATION,
    MIN_AUDIO_DURATION_S,
    SAMPLE_RATE,
    SEED,
)
from rnnt.data.augment import RandomSpeed, resample
from rnnt.data.manifest import (
    SKIP_DURATION_MISMATCH,
    SKIP_EMPTY_TEXT,
    SKIP_TOO_SHORT,
    SKIP_UNREADABLE_AUDIO,
    ManifestError,
    ManifestStats,
    Utterance,
    log_stats,
    read_manifest_with_stats,
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

        ``load_mono`` resamples to 16 kHz and averages the channels after loading
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


class CutSource:
    """Lazily yields the cuts of ``records``: shuffled and speed-perturbed per epoch if asked.

    The order and speed factors depend only on (seed, epoch), so every DDP rank iterates the
    same cuts with the same durations, which the lhotse sampler needs to split them.
    """

    def __init__(
        self,
        records: list[AudioRecord],
        *,
        shuffle: bool = False,
        speed: RandomSpeed | None = None,
        seed: int = SEED,
    ) -> None:
        self.records = records
        self.shuffle = shuffle
        self.speed = speed
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.speed is not None:
            self.speed.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def longest_duration(self) -> float:
        """Seconds: an upper bound on any cut's duration, speed perturbation included."""
        slowest = min(self.speed.factors, default=1.0) if self.speed is not None else 1.0
        return max(record.duration for record in self.records) / min(slowest, 1.0)

    def __iter__(self):
        order = range(len(self.records))
        if self.shuffle:
            order = list(order)
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        for index in order:
            cut = self.records[index].to_cut()
            yield self.speed(cut) if self.speed is not None else cut


def load_mono(cut: Cut) -> torch.Tensor:
    """(S,) float32 audio of a cut at ``SAMPLE_RATE``: channels averaged, resampled.

    S = round(cut.duration * SAMPLE_RATE), the length the sampler budgeted for.

    Raises:
        ValueError: the audio is empty, has NaN or infinite samples, or samples beyond
            ``AUDIO_MAX_ABS_SAMPLE`` (a mis-scaled float file: its log-mel features, and the
            feature statistics of every later step, would overflow). lhotse's own errors
            (undecodable data; audio more than 0.5 s shorter than its header said, which it
            pads up to that) pass through.
    """
    samples = cut.load_audio()
    if samples is None:
        raise ValueError("cut has no audio")
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    waveform = waveform.mean(dim=0) if waveform.dim() == 2 else waveform
    waveform = resample(waveform, cut.sampling_rate, SAMPLE_RATE)
    num_samples = round(cut.duration * SAMPLE_RATE)
    if waveform.numel() != num_samples:  # resampling rounds by a sample or two
        waveform = torch.nn.functional.pad(
            waveform[:num_samples], (0, max(0, num_samples - waveform.numel()))
        )
    if waveform.numel() == 0:
        raise ValueError("audio is empty (no sample)")
    peak = float(waveform.abs().max())  # NaN or inf if any sample is (one pass over the audio)
    if not math.isfinite(peak):
        raise ValueError("audio has NaN or infinite samples")
    if peak > AUDIO_MAX_ABS_SAMPLE:
        raise ValueError(
            f"audio samples reach {peak:.3g}, far outside [-1, 1] (limit "
            f"{AUDIO_MAX_ABS_SAMPLE:g}): a mis-scaled float file, e.g. integers stored as float"
        )
    return waveform


def load_audio_file(
    path: str | os.PathLike,
    offset: float = 0.0,
    duration: float | None = None,
    *,
    max_duration: float | None = MAX_DECODE_DURATION,
) -> torch.Tensor:
    """(S,) float32 samples, 16 kHz mono, of ``path`` from ``offset`` for ``duration`` seconds.

    ``duration=None`` reads to the end of the file. The header is read first, so a stretch
    longer than ``max_duration`` seconds (``None``: no limit) is refused before any audio is
    decoded: the model's memory grows with the square of the length.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: not readable as audio, offset or duration outside the
            file, a stretch shorter than ``MIN_AUDIO_DURATION_S`` or longer than
            ``max_duration``, or audio that ``load_mono`` refuses.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        recording = Recording.from_file(path)
    except Exception as error:  # lhotse tries every backend; say why the usual one failed
        raise ValueError(f"cannot read audio file {path}: {_header_error(path, error)}") from None
    if not recording.num_samples:
        raise ValueError(f"audio file {path} holds no sample (empty)")
    if not (math.isfinite(offset) and 0 <= offset < recording.duration):
        raise ValueError(
            f"offset {offset:g} s is outside audio file {path} ({recording.duration:g} s)"
        )
    available = recording.duration - offset
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration {duration:g} s for audio file {path} must be > 0")
    if duration is not None and duration > available + AUDIO_DURATION_TOLERANCE_S:
        raise ValueError(
            f"duration {duration:g} s from offset {offset:g} s overruns audio file {path} "
            f"({recording.duration:g} s)"
        )
    seconds = available if duration is None else min(duration, available)
    if seconds < MIN_AUDIO_DURATION_S:
        raise ValueError(
            f"audio file {path}: {seconds:g} s of audio is shorter than "
            f"{MIN_AUDIO_DURATION_S:g} s (not one feature frame)"
        )
    if max_duration is not None and seconds > max_duration:
        raise ValueError(
            f"audio file {path}: {seconds:g} s of audio is longer than the {max_duration:g} s "
            "decoded in one piece (memory grows with the square of the length); split the "
            "file, or select stretches of it with offset and duration"
        )
    cut = recording.to_cut()
    if offset or seconds < recording.duration:
        cut = cut.truncate(offset=offset, duration=seconds)
    try:
        return load_mono(cut)
    except Exception as error:  # any decoder failure, named with its file
        raise ValueError(f"cannot load audio file {path}: {describe_error(error)}") from None


def describe_error(error: BaseException) -> str:
    """The cause of an audio-loading error in one line (lhotse appends details and the cut)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0]
    if text.endswith("Details:") and len(lines) > 1:  # lhotse: the backend's own message next
        text = f"{text} {lines[1].rsplit('>: ', 1)[-1]}"
    return text[:300]


def _header_error(path: str, error: BaseException) -> str:
    try:
        soundfile.info(path)
    except Exception as soundfile_error:
        return str(soundfile_error).strip() or type(soundfile_error).__name__
    return describe_error(error)
