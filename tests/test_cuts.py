"""Tests for rnnt/data/cuts.py: manifest -> audio records, header errors, 16 kHz mono loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile
import torch

from rnnt.constants import SAMPLE_RATE
from rnnt.data.audio import load_mono
from rnnt.data.manifest import ManifestError
from rnnt.data.records import load_audio_records
from rnnt.data.tokenizer import train_tokenizer

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "dog",
    "ran",
    "fast",
    "slow",
    "big",
    "small",
    "red",
    "blue",
    "green",
]
TONE_HZ = 440.0
RATES = (16_000, 8_000, 44_100)


def make_corpus(folder, num_utterances=24, seed=0):
    """Tones of 1-4 s at 8/16/44.1 kHz (every 4th stereo), white noise, a tokenizer."""
    rng = np.random.default_rng(seed)
    (folder / "audio").mkdir(parents=True)
    (folder / "noise").mkdir()
    records = []
    for index in range(num_utterances):
        rate = RATES[index % 3]
        frames = int(rng.uniform(1.0, 4.0) * rate)
        tone = 0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(frames) / rate)
        samples = np.stack([tone, tone], axis=1) if index % 4 == 3 else tone
        name = f"audio/{index:03d}.{'flac' if index % 2 else 'wav'}"
        soundfile.write(folder / name, samples, rate)
        text = " ".join(rng.choice(WORDS, size=4)).capitalize() + "!"
        records.append({"audio_filepath": name, "duration": frames / rate, "text": text})
    soundfile.write(folder / "noise" / "n.wav", rng.normal(size=SAMPLE_RATE) * 0.1, SAMPLE_RATE)
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    train_tokenizer([manifest], folder / "tokenizer.model", vocab_size=30)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture()
def private_corpus(corpus, tmp_path):
    return shutil.copytree(corpus, tmp_path / "corpus")


@pytest.mark.parametrize("index", [0, 1, 2, 3])  # 16 kHz, 8 kHz, 44.1 kHz, 16 kHz stereo
def test_any_rate_and_channels_load_as_16k_mono_tone(corpus, index):
    record = load_audio_records(corpus / "train.jsonl")[index]
    assert record.sample_rate == RATES[index % 3]
    assert record.num_channels == (2 if index == 3 else 1)
    waveform = load_mono(record.to_cut())
    length = waveform.numel()
    assert waveform.dtype == torch.float32 and waveform.dim() == 1
    assert length == round(record.duration * SAMPLE_RATE)
    waveform = waveform.double()
    spectrum = torch.fft.rfft(waveform * torch.hann_window(length, dtype=torch.float64)).abs()
    peak_hz = float(spectrum.argmax()) * SAMPLE_RATE / length
    assert peak_hz == pytest.approx(TONE_HZ, abs=2.0)
    middle = waveform[length // 4 : 3 * length // 4]  # away from the resampler's edge ripple
    assert float(middle.abs().max()) == pytest.approx(0.3, abs=0.01)  # stereo averaged, not summed


def test_bad_audio_header_names_file_and_line(private_corpus):
    (private_corpus / "audio" / "002.wav").write_bytes(b"garbage" * 100)
    manifest = private_corpus / "train.jsonl"
    with pytest.raises(ManifestError, match=r"train\.jsonl:3: cannot read audio file"):
        load_audio_records(manifest)
    assert len(load_audio_records(manifest, skip_invalid=True)) == 23


def test_manifest_duration_past_end_of_file_is_an_error(tmp_path, corpus):
    lines = [
        {"audio_filepath": str(corpus / "audio" / "000.wav"), "duration": 60.0, "text": "a cat"},
        {"audio_filepath": str(corpus / "audio" / "000.wav"), "duration": 0.5, "text": "...!"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: duration 60 s .* overruns"):
        load_audio_records(manifest)
    assert load_audio_records(manifest, skip_invalid=True) == []  # line 2: no words either
