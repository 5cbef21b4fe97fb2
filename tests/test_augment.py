"""Tests for rnnt/data/augment.py: SNR mixing, noise folders, speed perturbation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch
from lhotse import Recording
from lhotse.audio import AudioSource

from rnnt.data.augment import BackgroundNoise, NoiseSource, RandomSpeed, mix_at_snr, resample


def _snr_db(speech: torch.Tensor, mixed: torch.Tensor) -> float:
    noise = (mixed - speech).double()
    return 10 * math.log10(speech.double().square().mean() / noise.square().mean())


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 5.0, 17.5, 30.0])
def test_mix_at_snr_reaches_requested_snr(snr_db):
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(32_000) / 16_000
    speech = 0.3 * torch.sin(2 * math.pi * 440 * t)
    noise = 0.05 * torch.randn(32_000, generator=generator) + 0.01  # DC offset: power, not variance
    mixed = mix_at_snr(speech, noise, snr_db)
    assert mixed.shape == speech.shape and mixed.dtype == speech.dtype
    assert abs(_snr_db(speech, mixed) - snr_db) < 0.5


def test_mix_at_snr_silent_inputs_give_speech_without_nan():
    speech = torch.randn(1000)
    silent = torch.zeros(1000)
    assert torch.equal(mix_at_snr(speech, silent, 10.0), speech)
    assert torch.equal(mix_at_snr(silent, speech, 10.0), silent)
    with pytest.raises(ValueError, match="same shape"):
        mix_at_snr(speech, torch.zeros(999), 10.0)


def test_resample_keeps_a_tone_and_the_duration():
    rate = 44_100
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(rate) / rate)
    out = resample(tone, rate, 16_000)
    assert abs(out.numel() - 16_000) <= 1
    spectrum = torch.fft.rfft(out[:16_000]).abs()
    assert int(spectrum.argmax()) == 1000  # 1 Hz bins over one second


def test_noise_source_errors_on_empty_or_missing_folder(tmp_path):
    (tmp_path / "README.txt").write_text("not audio")
    with pytest.raises(ValueError, match=r"no readable audio file under.*looked at 1 files"):
        NoiseSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="noise_path: null"):
        NoiseSource(tmp_path / "missing")


def test_noise_source_finds_audio_recursively_at_any_rate(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    soundfile.write(tmp_path / "a.wav", rng.normal(size=(8_000, 2)) * 0.1, 8_000)  # stereo, 1 s
    soundfile.write(tmp_path / "sub" / "deeper" / "b.flac", rng.normal(size=4_410) * 0.1, 44_100)
    (tmp_path / "notes.txt").write_text("ignored")
    source = NoiseSource(tmp_path)
    assert len(source) == 2
    assert source.total_duration == pytest.approx(1.1)
    generator = np.random.default_rng(1)
    for length in (100, 16_000, 50_000):  # shorter and longer than both files (looping)
        for _ in range(4):
            segment = source.segment(length, generator)
            assert segment.shape == (length,) and segment.dtype == torch.float32
            assert torch.isfinite(segment).all() and segment.abs().sum() > 0


def test_background_noise_probability_and_snr_range(tmp_path):
    soundfile.write(tmp_path / "n.wav", np.random.default_rng(0).normal(size=16_000), 16_000)
    source = NoiseSource(tmp_path)
    speech = torch.sin(torch.arange(8_000) * 0.1)
    never = BackgroundNoise(source, probability=0.0)
    assert torch.equal(never(speech, np.random.default_rng(0)), speech)
    always = BackgroundNoise(source, probability=1.0, snr_range_db=[10.0, 20.0])
    generator = np.random.default_rng(0)
    for _ in range(5):
        assert 10.0 - 0.5 < _snr_db(speech, always(speech, generator)) < 20.0 + 0.5
    half = BackgroundNoise(source, probability=0.5)
    changed = sum(not torch.equal(half(speech, generator), speech) for _ in range(200))
    assert 70 < changed < 130
    with pytest.raises(ValueError, match="low <= high"):
        BackgroundNoise(source, snr_range_db=[20.0, 10.0])


def _cut(path, rate=16_000, seconds=2.0):
    frames = int(rate * seconds)
    soundfile.write(path, np.zeros(frames), rate)
    recording = Recording(
        id=str(path),
        sources=[AudioSource(type="file", channels=[0], source=str(path))],
        sampling_rate=rate,
        num_samples=frames,
        duration=seconds,
    )
    return recording.to_cut()


def test_random_speed_is_a_function_of_seed_epoch_and_id(tmp_path):
    cut = _cut(tmp_path / "x.wav")
    speed = RandomSpeed([0.9, 1.0, 1.1], seed=3)
    ids = [f"utt{i}" for i in range(60)]
    epoch0 = [speed.factor_for(i) for i in ids]
    assert epoch0 == [RandomSpeed([0.9, 1.0, 1.1], seed=3).factor_for(i) for i in ids]
    assert set(epoch0) == {0.9, 1.0, 1.1}
    speed.epoch = 1
    assert [speed.factor_for(i) for i in ids] != epoch0
    factor = speed.factor_for(cut.id)
    perturbed = speed(cut)
    assert perturbed.id == cut.id
    assert perturbed.duration == pytest.approx(2.0 / factor, abs=1e-3)
    assert perturbed.load_audio().shape[-1] == perturbed.num_samples
    assert RandomSpeed([], seed=3)(cut) is cut
