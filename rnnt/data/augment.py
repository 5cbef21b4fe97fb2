"""Waveform augmentation for training: background noise at a random SNR, speed perturbation.

Everything here runs in data-loader workers on 16 kHz mono waveforms (S,) as float32 tensors,
and takes its randomness from an explicit ``numpy.random.Generator`` (noise) or from a hash of
(seed, epoch, utterance id) (speed), so runs are reproducible.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile
import torch
from lhotse.augmentation.torchaudio import get_or_create_resampler
from lhotse.cut import Cut

from rnnt.constants import (
    NOISE_CACHE_FILES,
    NOISE_PROBABILITY,
    NOISE_SNR_RANGE_DB,
    SAMPLE_RATE,
    SEED,
    SPEED_PERTURB_FACTORS,
)
from rnnt.data.lazy_cuts import defer_speed, is_deferred

logger = logging.getLogger(__name__)


def mix_at_snr(speech: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Add ``noise`` to ``speech`` scaled so that the mixture has the given SNR.

    The SNR is measured on the actual signals: ``10·log10(P_speech / P_scaled_noise) =
    snr_db`` with P the mean square over all S samples. Silent speech or silent noise
    returns a copy of ``speech`` (no SNR is defined, and no NaN is produced).

    Args:
        speech: (S,) waveform.
        noise: (S,) waveform, same length.
        snr_db: signal-to-noise ratio, dB.

    Returns:
        (S,) mixture, dtype of ``speech``.
    """
    if speech.shape != noise.shape:
        raise ValueError(
            f"speech and noise must have the same shape, got {tuple(speech.shape)} and "
            f"{tuple(noise.shape)}"
        )
    # float64 powers: float32 sums over minutes of audio lose the last tenths of a dB.
    speech_power = speech.double().square().mean()
    noise_power = noise.to(speech.device).double().square().mean()
    if speech_power <= 0 or noise_power <= 0 or not torch.isfinite(speech_power * noise_power):
        return speech.clone()
    scale = torch.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech.double() + scale * noise.to(speech.device).double()).to(speech.dtype)


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of (..., N) samples at ``orig_rate`` Hz to ``new_rate`` Hz."""
    if orig_rate == new_rate:
        return waveform
    return get_or_create_resampler(int(orig_rate), int(new_rate))(waveform)


# Extensions of files that are meant to be audio: unreadable ones are reported, other files
# (README, LICENSE, metadata) are passed over silently.
_AUDIO_SUFFIXES = frozenset(
    {f".{name.lower()}" for name in soundfile.available_formats()}
    | {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".m4a", ".sph"}
)
_REPORTED_FILES = 5  # unreadable noise files named in a message


class NoiseSource:
    """Every audio file soundfile can read below ``folder``, served as random segments.

    Files are found recursively when the source is made (headers only); audio is read when a
    segment is asked for: a random window of the file for long files, or the whole file,
    looped from a random phase, for files shorter than the segment (those are kept decoded,
    up to ``NOISE_CACHE_FILES`` per process). Any channel count and sample rate is accepted;
    segments are mono at ``sample_rate``.

    Faults: a folder without one readable audio file is an error at start-up (noise was asked
    for; training silently without it would change the recipe). Files with an audio
    extension whose header cannot be read, or that hold no sample, are left out with one
    warning naming them. A file that fails while being read later (truncated) is dropped
    from this process's pool with one warning; with no file left, segments are ``None``
    and training goes on without noise.
    """

    def __init__(self, folder: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> None:
        self.folder = Path(folder)
        self.sample_rate = int(sample_rate)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"background noise folder not found: {self.folder}; create it with audio files "
                "in it, or turn noise off (noise_path: null)"
            )
        self.files: list[str] = []
        self._info: list[tuple[int, int]] = []  # (sample rate Hz, frames) of each file
        self.unreadable: list[str] = []  # "path: why" of audio-named files left out
        looked_at = 0
        for root, dirs, names in os.walk(self.folder):
            dirs[:] = sorted(name for name in dirs if not name.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                looked_at += 1
                path = os.path.join(root, name)
                if not os.path.isfile(path):  # a FIFO or device would block the open below
                    continue
                try:
                    info = soundfile.info(path)
                    if info.frames <= 0 or info.samplerate <= 0:
                        raise ValueError("holds no sample (empty)")
                except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as error:
                    if Path(name).suffix.lower() in _AUDIO_SUFFIXES:
                        self.unreadable.append(f"{path}: {error}")
                    continue  # not audio (README, metadata): not a noise source
                self.files.append(path)
                self._info.append((int(info.samplerate), int(info.frames)))
        unreadable = " | ".join(self.unreadable[:_REPORTED_FILES])
        if not self.files:
            raise ValueError(
                f"no readable audio file under background noise folder {self.folder} (looked "
                f"at {looked_at} files, {len(self.unreadable)} of them unreadable audio"
                + (f": {unreadable}" if unreadable else "")
                + "; any format soundfile reads counts: wav, flac, ogg, ...); add noise "
                "recordings or turn noise off (noise_path: null)"
            )
        if self.unreadable:
            logger.warning(
                "background noise: left out %d unreadable audio files of %s (using %d): %s",
                len(self.unreadable),
                self.folder,
                len(self.files),
                unreadable,
            )
        self._usable = list(range(len(self.files)))
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    @property
    def total_duration(self) -> float:
        """Seconds of noise audio in all files."""
        return sum(frames / rate for rate, frames in self._info)

    def segment(self, num_samples: int, rng: np.random.Generator) -> torch.Tensor | None:
        """A random (num_samples,) float32 noise segment at ``sample_rate`` Hz.

        Returns ``None`` when the chosen file cannot be read (it is dropped from this
        process's pool, with one warning) or when no readable file is left.
        """
        if not self._usable:
            return None
        index = self._usable[int(rng.integers(len(self._usable)))]
        rate, frames = self._info[index]
        needed = math.ceil(num_samples * rate / self.sample_rate) + 1
        try:
            if frames >= needed:
                start = int(rng.integers(frames - needed + 1))
                samples = self._read(index, start, needed)
                noise = resample(samples, rate, self.sample_rate)
            else:
                whole = self._whole_file(index)
                positions = (int(rng.integers(whole.numel())) + torch.arange(num_samples)) % (
                    whole.numel()
                )
                noise = whole[positions]
        except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as error:
            self._usable.remove(index)
            logger.warning(
                "background noise: cannot read %s (%s); dropped from the noise files of this "
                "process, %d left%s",
                self.files[index],
                error,
                len(self._usable),
                "" if self._usable else ": training goes on without noise",
            )
            return None
        if noise.numel() < num_samples:  # resampling rounds down by a sample at most
            noise = torch.nn.functional.pad(noise, (0, num_samples - noise.numel()))
        return noise[:num_samples].contiguous()

    def _read(self, index: int, start: int, frames: int) -> torch.Tensor:
        samples, _ = soundfile.read(
            self.files[index], start=start, frames=frames, dtype="float32", always_2d=True
        )
        return torch.from_numpy(samples.mean(axis=1, dtype=np.float32))

    def _whole_file(self, index: int) -> torch.Tensor:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        rate, frames = self._info[index]
        whole = resample(self._read(index, 0, frames), rate, self.sample_rate)
        self._cache[index] = whole
        if len(self._cache) > NOISE_CACHE_FILES:
            self._cache.popitem(last=False)
        return whole

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # each worker decodes its own
        return state


class BackgroundNoise:
    """Adds a random noise segment at a random SNR to a waveform, with some probability.

    Args:
        source: where noise segments come from.
        probability: chance that a call adds noise at all.
        snr_range_db: [low, high] dB; the SNR is drawn uniformly from it.
    """

    def __init__(
        self,
        source: NoiseSource,
        probability: float = NOISE_PROBABILITY,
        snr_range_db: Sequence[float] = tuple(NOISE_SNR_RANGE_DB),
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"noise probability must be in [0, 1], got {probability}")
        if len(snr_range_db) != 2 or snr_range_db[0] > snr_range_db[1]:
            raise ValueError(
                f"snr_range_db must be [low, high] with low <= high, got {snr_range_db}"
            )
        self.source = source
        self.probability = float(probability)
        self.snr_range_db = (float(snr_range_db[0]), float(snr_range_db[1]))

    def __call__(self, waveform: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(S,) waveform -> (S,) waveform, noisy with probability ``probability``."""
        if self.probability == 0.0 or rng.random() >= self.probability:
            return waveform
        snr_db = rng.uniform(*self.snr_range_db)
        noise = self.source.segment(waveform.numel(), rng)
        if noise is None:
            return waveform
        return mix_at_snr(waveform, noise.to(waveform.device), snr_db)


class RandomSpeed:
    """Speed-perturbs each cut by a factor drawn from ``factors`` (lhotse ``perturb_speed``).

    Meant for ``CutSet.map`` *before* the sampler, so batches are formed on the perturbed
    durations (a 0.9 factor makes an utterance 1/0.9 times longer). The factor is a function
    of (seed, epoch, cut id): the same on every DDP rank (all ranks must agree on durations
    to split batches consistently), different from epoch to epoch. Set ``epoch`` per epoch.
    Speed perturbation resamples, so it changes pitch and tempo together (as ``sox speed``).
    """

    def __init__(self, factors: Sequence[float] = tuple(SPEED_PERTURB_FACTORS), seed: int = SEED):
        if any(factor <= 0 for factor in factors):
            raise ValueError(f"speed factors must be > 0, got {list(factors)}")
        self.factors = [float(factor) for factor in factors]
        self.seed = int(seed)
        self.epoch = 0

    def factor_for(self, cut_id: str) -> float:
        """The speed factor of ``cut_id`` in the current epoch (1.0 when no factors)."""
        if not self.factors:
            return 1.0
        # random.Random(str) seeds from a SHA-512 of the string: stable across processes.
        return random.Random(f"{self.seed}:{self.epoch}:{cut_id}").choice(self.factors)

    def __call__(self, cut: Cut) -> Cut:
        factor = self.factor_for(cut.id)
        if factor == 1.0:
            return cut
        if is_deferred(cut):  # no recording yet: applied when a worker resolves it
            return defer_speed(cut, factor)
        return cut.perturb_speed(factor, affix_id=False)
