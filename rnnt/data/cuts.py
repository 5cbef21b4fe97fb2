"""Audio records and their lhotse cuts: manifest lines -> headers -> cuts -> 16 kHz mono audio.

``load_audio_records`` validates a manifest (``read_manifest``) and reads the header of each
audio file it names (no audio), so that bad lines and unreadable files fail at setup, naming
``file:line``. Each ``AudioRecord`` becomes a lhotse cut at its file's own sample rate and
channels; ``CutSource`` yields them lazily (shuffled and speed-perturbed per epoch for
training), and ``load_mono`` reads a cut's audio as 16 kHz mono in the data-loader workers.
"""

from __future__ import annotations

import logging
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

from rnnt.constants import AUDIO_DURATION_TOLERANCE_S, SAMPLE_RATE, SEED
from rnnt.data.augment import RandomSpeed, resample
from rnnt.data.manifest import ManifestError, Utterance, read_manifest
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

    Lines that ``read_manifest`` rejects, transcripts with no letter or digit after
    ``normalize_text``, unreadable audio headers and offsets/durations beyond the end of the
    file are errors naming ``file:line`` (or, with ``skip_invalid``, skipped and counted in
    one warning). A duration overrunning the file by at most ``AUDIO_DURATION_TOLERANCE_S``
    is clamped to the file's end.
    """
    utterances = read_manifest(
        manifest,
        min_duration=min_duration,
        max_duration=max_duration,
        skip_invalid=skip_invalid,
    )
    headers: dict[str, tuple[int, int, int] | str] = {}
    records: list[AudioRecord] = []
    skipped: list[str] = []
    name = Path(manifest).name
    for utterance in utterances:
        try:
            if utterance.audio_filepath not in headers:
                headers[utterance.audio_filepath] = _read_header(utterance.audio_filepath)
            header = headers[utterance.audio_filepath]
            if isinstance(header, str):
                raise ValueError(header)
            rate, frames, channels = header
            records.append(
                _make_record(utterance, f"{name}:{utterance.line}", rate, frames, channels)
            )
        except ValueError as error:
            if not skip_invalid:
                raise ManifestError(manifest, utterance.line, str(error)) from None
            skipped.append(f"{manifest}:{utterance.line}: {error}")
    if skipped:
        logger.warning(
            "%s: skipped %d utterances whose audio or transcript is unusable; first: %s",
            manifest,
            len(skipped),
            " | ".join(skipped[:5]),
        )
    return records


def _read_header(path: str) -> tuple[int, int, int] | str:
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        return f"cannot read audio file {path}: {error}"
    if info.frames <= 0 or info.samplerate <= 0:
        return f"audio file {path} is empty"
    return int(info.samplerate), int(info.frames), int(info.channels)


def _make_record(
    utterance: Utterance, record_id: str, rate: int, frames: int, channels: int
) -> AudioRecord:
    text = normalize_text(utterance.text)
    if not text:
        raise ValueError(f"transcript {utterance.text!r} has no letter or digit to train on")
    file_duration = frames / rate
    available = file_duration - utterance.offset
    if available <= 0:
        raise ValueError(
            f"offset {utterance.offset:g} s is past the end of {utterance.audio_filepath} "
            f"({file_duration:g} s)"
        )
    duration = utterance.duration
    if duration > available:
        if duration > available + AUDIO_DURATION_TOLERANCE_S:
            raise ValueError(
                f"duration {duration:g} s from offset {utterance.offset:g} s overruns "
                f"{utterance.audio_filepath} ({file_duration:g} s); fix 'duration'"
            )
        duration = available
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
    if waveform.numel() == 0 or not torch.isfinite(waveform).all():
        raise ValueError("audio is empty or has non-finite samples")
    return waveform
