"""Audio loading, batching and decoding options of `rnnt transcribe`."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from rnnt.constants import SAMPLE_RATE
from rnnt.data.manifest import read_manifest, write_manifest
from rnnt.transcribe import (
    AudioItem,
    batch_by_duration,
    load_audio,
    transcribe,
    transcribe_manifest,
)


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    time = np.arange(round(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * time)).astype(np.float32)


def test_any_rate_and_channel_count_becomes_16_khz_mono(tmp_path):
    reference = torch.from_numpy(_tone(SAMPLE_RATE, 1.5))
    for rate, channels in [(8000, 1), (44_100, 2), (22_050, 1), (SAMPLE_RATE, 2)]:
        path = tmp_path / f"tone_{rate}_{channels}.wav"
        tone = _tone(rate, 1.5)
        sf.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate)
        audio = load_audio(AudioItem(str(path)))
        assert audio.dtype == torch.float32 and audio.dim() == 1
        assert audio.numel() == reference.numel()
        # Away from the edges the resampled tone is the 16 kHz tone itself.
        middle = slice(800, -800)
        assert torch.allclose(audio[middle], reference[middle], atol=0.02), (rate, channels)


def test_offset_and_duration_select_a_stretch(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, _tone(8000, 3.0), 8000)
    audio = load_audio(AudioItem(str(path), offset=1.0, duration=0.5))
    assert audio.numel() == SAMPLE_RATE // 2


def test_batches_cover_every_item_once_within_the_budget():
    durations = [3.0, 0.5, 7.0, 2.0, 2.0, 6.5, 1.0]
    batches = batch_by_duration(durations, batch_seconds=10.0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(durations)))
    for batch in batches:
        assert max(durations[i] for i in batch) * len(batch) <= 10.0 or len(batch) == 1


class _RecordingModel(torch.nn.Module):
    """Stands in for a Transducer: records the decoding options it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, int]] = []


def _record_decoding_options(model, audio, audio_lengths, max_symbols_per_frame, beam_size=1):
    model.calls.append((max_symbols_per_frame, beam_size))
    return [[len(model.calls)] for _ in range(len(audio))]


class _DigitTokenizer:
    def decode(self, ids: list[int]) -> str:
        return " ".join(str(i) for i in ids)


def test_transcribe_manifest_passes_beam_size_to_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr("rnnt.transcribe.transcribe_ids", _record_decoding_options)
    records = []
    for index in range(3):
        path = tmp_path / f"tone{index}.wav"
        sf.write(path, _tone(SAMPLE_RATE, 0.5 + index), SAMPLE_RATE)
        records.append({"audio_filepath": str(path), "duration": 0.5 + index, "text": "one"})
    manifest = tmp_path / "in.jsonl"
    write_manifest(manifest, records)
    model = _RecordingModel()
    result = transcribe_manifest(
        model, _DigitTokenizer(), manifest, tmp_path / "out.jsonl", 2.0, 3, beam_size=6
    )
    assert result.utterances == 3
    assert model.calls and all(call == (3, 6) for call in model.calls)
    assert [u.extra["pred_text"] for u in read_manifest(tmp_path / "out.jsonl")] != ["", "", ""]


def test_transcribe_refuses_a_bad_beam_size_before_reading_audio():
    model = _RecordingModel()
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"beam_size={bad}"):
            transcribe(model, _DigitTokenizer(), [AudioItem("/no/such/file.wav")], beam_size=bad)
    assert model.calls == []
