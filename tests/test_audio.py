"""Tests for rnnt/data/audio.py: decoder errors said in one line, about the file, not lhotse."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import soundfile
from lhotse import CutSet

from rnnt.constants import SAMPLE_RATE
from rnnt.data.audio import describe_error, load_mono
from rnnt.data.dataset import TransducerDataset
from rnnt.data.records import AudioRecord
from rnnt.data.tokenizer import Tokenizer, train_tokenizer

LHOTSE_BLAME = ("report", "lhotse", "internal", "faulty transform")


def _tone_record(folder, name: str, seconds: float) -> AudioRecord:
    path = folder / name
    samples = 0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE)
    soundfile.write(path, samples, SAMPLE_RATE)
    return AudioRecord(
        id=f"m.jsonl:{name}",
        path=str(path),
        sample_rate=SAMPLE_RATE,
        num_frames=len(samples),
        num_channels=1,
        offset=0.0,
        duration=seconds,
        text="a tone",
    )


def _load_error(record: AudioRecord) -> Exception:
    with pytest.raises(Exception) as caught:
        load_mono(record.to_cut())
    return caught.value


def test_audio_shorter_than_its_header_is_called_truncated_not_a_lhotse_bug(tmp_path):
    # The header (as read at setup) says 3 s; the file holds 1.5 s: lhotse's own message asks
    # the user to "report this issue in Lhotse".
    real = _tone_record(tmp_path, "short.wav", 1.5)
    claimed = dataclasses.replace(real, num_frames=3 * SAMPLE_RATE, duration=3.0)
    error = _load_error(claimed)
    assert "report this issue" in str(error)  # what lhotse says ...
    text = describe_error(error)  # ... and what we say
    assert not any(word in text.lower() for word in LHOTSE_BLAME), text
    assert text == (
        "the file decodes to 24000 samples where its header declares 48000: 24000 missing "
        "(1.5 s); it is truncated or corrupt (re-encode or drop it)"
    )


def test_truncated_mp3_is_described_as_truncated(tmp_path):
    path = tmp_path / "whole.mp3"
    try:
        soundfile.write(path, np.zeros(3 * SAMPLE_RATE) + 0.1, SAMPLE_RATE)
    except (soundfile.LibsndfileError, TypeError, ValueError):
        pytest.skip("this libsndfile cannot write MP3")
    data = path.read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 2])
    info = soundfile.info(tmp_path / "cut.mp3")  # MP3 headers keep the whole length
    record = AudioRecord(
        id="m.jsonl:1",
        path=str(tmp_path / "cut.mp3"),
        sample_rate=info.samplerate,
        num_frames=info.frames,
        num_channels=1,
        offset=0.0,
        duration=info.frames / info.samplerate,
        text="a tone",
    )
    text = describe_error(_load_error(record))
    assert "truncated or corrupt" in text
    assert not any(word in text.lower() for word in LHOTSE_BLAME), text


def test_other_lhotse_messages_lose_only_the_blame(tmp_path):
    error = RuntimeError(
        "Inconsistent number of frames in a MixedCut: please report this issue at "
        "https://github.com/lhotse-speech/lhotse/issues showing the cut below."
    )
    assert describe_error(error) == "Inconsistent number of frames in a MixedCut"
    assert describe_error(ValueError("audio has NaN or infinite samples")) == (
        "audio has NaN or infinite samples"
    )


def test_training_skip_warning_names_the_file_as_the_cause(tmp_path, caplog):
    record = _tone_record(tmp_path, "short.wav", 1.5)
    good = _tone_record(tmp_path, "good.wav", 1.0)
    claimed = dataclasses.replace(record, num_frames=3 * SAMPLE_RATE, duration=3.0)
    line = {"audio_filepath": "good.wav", "duration": 1, "text": "a sine wave at four forty hertz"}
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    tokenizer = Tokenizer.load(
        train_tokenizer([tmp_path / "m.jsonl"], tmp_path / "tok.model", vocab_size=18)
    )
    dataset = TransducerDataset(tokenizer)
    with caplog.at_level(logging.WARNING, logger="rnnt.data.dataset"):
        batch = dataset[CutSet([claimed.to_cut(), good.to_cut()])]
    assert batch["ids"] == [good.id] and dataset.num_skipped == 1
    assert "short.wav" in caplog.text and "truncated or corrupt" in caplog.text
    assert "report" not in caplog.text.lower()
