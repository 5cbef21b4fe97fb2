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
    format_result,
    load_audio,
    partial_output_path,
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


def _record_decoding_options(
    model, audio, audio_lengths, max_symbols_per_frame, beam_size=1, hotwords=None
):
    model.calls.append((max_symbols_per_frame, beam_size))
    return [[len(model.calls)] for _ in range(len(audio))]


class _DigitTokenizer:
    def decode(self, ids: list[int]) -> str:
        return " ".join(str(i) for i in ids)


def test_transcribe_manifest_passes_beam_size_to_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _record_decoding_options)
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


# --- manifests: nothing lost, nothing overwritten ----------------------------------------------


def _decode_lengths(model, audio, audio_lengths, max_symbols_per_frame, beam_size=1, hotwords=None):
    """Stands in for the decoder: each utterance's text is its length in tenths of a second."""
    model.calls.append((max_symbols_per_frame, beam_size))
    return [[round(10 * int(n) / SAMPLE_RATE)] for n in audio_lengths]


def _corpus(folder, seconds: list[float], bad: dict[int, str] | None = None):
    """A manifest of tones lasting ``seconds``; ``bad`` maps a 0-based line to a broken file:
    "truncated" (a FLAC cut mid-stream: its header reads, its audio does not), "nan", "missing"."""
    bad = bad or {}
    records = []
    for index, duration in enumerate(seconds):
        path = folder / f"clip{index}.flac"
        sf.write(path, _tone(SAMPLE_RATE, duration), SAMPLE_RATE)
        if bad.get(index) == "truncated":
            whole = path.read_bytes()
            path.write_bytes(whole[: len(whole) * 2 // 5])
        elif bad.get(index) == "nan":
            path = folder / f"clip{index}.wav"
            samples = _tone(SAMPLE_RATE, duration)
            samples[::500] = np.nan
            sf.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
        elif bad.get(index) == "missing":
            path = folder / "no_such_file.flac"
        records.append({"audio_filepath": str(path), "duration": duration, "text": "one"})
    manifest = folder / "in.jsonl"
    write_manifest(manifest, records)
    return manifest


def _lines(path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_corrupt_audio_in_a_manifest_is_skipped_and_counted_the_rest_written_in_order(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _decode_lengths)
    seconds = [1.0, 0.5, 2.0, 1.5, 0.8, 1.2, 0.7]
    bad = {2: "truncated", 4: "nan", 5: "missing"}
    manifest = _corpus(tmp_path, seconds, bad)
    output = tmp_path / "out.jsonl"
    result = transcribe_manifest(
        _RecordingModel(), _DigitTokenizer(), manifest, output, 2.0, window_seconds=2.0
    )
    good = [index for index in range(len(seconds)) if index not in bad]
    written = _lines(output)
    # Every good line, in input order, each with its own transcript.
    assert [line["audio_filepath"] for line in written] == [f"clip{i}.flac" for i in good]
    assert [line["pred_text"] for line in written] == [str(round(10 * seconds[i])) for i in good]
    assert result.utterances == len(good)
    assert result.skipped == {"unreadable_audio": 2, "missing_audio": 1}
    assert result.audio_seconds == pytest.approx(sum(seconds[i] for i in good))
    assert "4 utterances transcribed, 3 skipped (missing_audio: 1, unreadable_audio: 2)" in (
        format_result(result)
    )
    # Each unreadable file is named with its manifest line.
    for line, name in [(3, "clip2.flac"), (5, "clip4.wav")]:
        assert any(
            f"{manifest}:{line}: " in r.message and name in r.message for r in caplog.records
        )
    assert not partial_output_path(output).exists()


def test_a_skipped_line_is_left_out_of_the_wer(tmp_path, monkeypatch):
    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _decode_lengths)
    manifest = _corpus(tmp_path, [1.0, 2.0], bad={1: "truncated"})
    records = [{**line, "text": "ten"} for line in _lines(manifest)]  # line 1 decodes to "10"
    write_manifest(manifest, records)

    class _Words(_DigitTokenizer):
        def decode(self, ids):
            return {10: "ten"}.get(ids[0], "wrong")

    result = transcribe_manifest(_RecordingModel(), _Words(), manifest, tmp_path / "out.jsonl")
    assert result.wer == 0.0 and result.skipped == {"unreadable_audio": 1}


def test_strict_stops_at_the_first_bad_line_naming_it_and_keeps_the_lines_before(
    tmp_path, monkeypatch
):
    from rnnt.data.manifest import ManifestError

    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _decode_lengths)
    manifest = _corpus(tmp_path, [1.0, 0.5, 2.0, 1.5], bad={2: "truncated"})
    output = tmp_path / "out.jsonl"
    with pytest.raises(ManifestError, match=rf"^{manifest}:3: cannot load audio file .*clip2"):
        transcribe_manifest(_RecordingModel(), _DigitTokenizer(), manifest, output, strict=True)
    assert not output.exists()
    assert [line["pred_text"] for line in _lines(partial_output_path(output))] == ["10", "5"]


def test_audio_is_loaded_window_by_window_not_all_at_once(tmp_path, monkeypatch):
    import weakref

    from rnnt import transcribe_audio

    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _decode_lengths)
    manifest = _corpus(tmp_path, [1.0] * 12)
    alive: set[int] = set()
    most_alive = 0
    loaded = 0
    real_load = transcribe_audio.load_audio

    def counting_load(item):
        nonlocal most_alive, loaded
        waveform = real_load(item)
        loaded += 1
        alive.add(loaded)
        weakref.finalize(waveform, alive.discard, loaded)
        most_alive = max(most_alive, len(alive))
        return waveform

    monkeypatch.setattr(transcribe_audio, "load_audio", counting_load)
    output = tmp_path / "out.jsonl"
    result = transcribe_manifest(
        _RecordingModel(), _DigitTokenizer(), manifest, output, 1.0, window_seconds=3.0
    )
    assert loaded == 12 and result.utterances == 12
    assert most_alive == 3  # one window of 3 s: never the whole manifest's audio
    assert [line["pred_text"] for line in _lines(output)] == ["10"] * 12


def test_a_crash_half_way_keeps_every_finished_line_and_a_rerun_needs_overwrite(
    tmp_path, monkeypatch, caplog
):
    manifest = _corpus(tmp_path, [1.0, 0.5, 2.0, 1.5, 0.8])
    output = tmp_path / "out.jsonl"

    def crash_on_third_window(model, audio, audio_lengths, *args, **kwargs):
        if len(model.calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return _decode_lengths(model, audio, audio_lengths, *args, **kwargs)

    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", crash_on_third_window)
    one_per_window = {"batch_seconds": 0.1, "window_seconds": 0.1}
    with pytest.raises(RuntimeError, match="simulated"):
        transcribe_manifest(
            _RecordingModel(), _DigitTokenizer(), manifest, output, **one_per_window
        )
    partial = partial_output_path(output)
    assert not output.exists()  # the output only ever appears complete
    assert [line["pred_text"] for line in _lines(partial)] == ["10", "5"]
    assert any(str(partial) in r.message and "2 lines" in r.message for r in caplog.records)

    with pytest.raises(ValueError, match="interrupted transcription"):
        transcribe_manifest(_RecordingModel(), _DigitTokenizer(), manifest, output)
    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _decode_lengths)
    transcribe_manifest(_RecordingModel(), _DigitTokenizer(), manifest, output, overwrite=True)
    assert [line["pred_text"] for line in _lines(output)] == ["10", "5", "20", "15", "8"]
    assert not partial.exists()


def test_output_that_is_the_input_or_exists_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _decode_lengths)
    manifest = _corpus(tmp_path, [1.0])
    before = manifest.read_bytes()
    model, tokenizer = _RecordingModel(), _DigitTokenizer()
    for same in (manifest, tmp_path / "." / "in.jsonl"):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="would overwrite the input manifest"):
                transcribe_manifest(model, tokenizer, manifest, same, overwrite=overwrite)
    # OUT.partial is the input: writing it would truncate the manifest.
    named_partial = tmp_path / "out.jsonl.partial"
    named_partial.write_bytes(before)
    with pytest.raises(ValueError, match="would overwrite the input manifest"):
        transcribe_manifest(model, tokenizer, named_partial, tmp_path / "out.jsonl", overwrite=True)
    assert named_partial.read_bytes() == before
    with pytest.raises(ValueError, match="is a folder"):
        transcribe_manifest(model, tokenizer, manifest, tmp_path)
    with pytest.raises(ValueError, match="in.jsonl is not a writable folder"):
        transcribe_manifest(model, tokenizer, manifest, manifest / "out.jsonl")
    existing = tmp_path / "mine.jsonl"
    existing.write_text("keep me\n")
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        transcribe_manifest(model, tokenizer, manifest, existing)
    assert existing.read_text() == "keep me\n" and manifest.read_bytes() == before
    assert model.calls == []  # refused before any decoding
    transcribe_manifest(model, tokenizer, manifest, existing, overwrite=True)
    assert _lines(existing)[0]["pred_text"] == "10"


def test_transcribe_python_api_raises_for_the_first_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr("rnnt.transcribe_audio.transcribe_ids", _decode_lengths)
    manifest = _corpus(tmp_path, [1.0, 2.0, 0.5], bad={1: "truncated"})
    items = [AudioItem(line["audio_filepath"]) for line in _lines(manifest)]
    items = [AudioItem(str(tmp_path / item.path)) for item in items]
    with pytest.raises(ValueError, match="cannot load audio file .*clip1.flac"):
        transcribe(_RecordingModel(), _DigitTokenizer(), items)
    texts, seconds = transcribe(_RecordingModel(), _DigitTokenizer(), items[::2])
    assert texts == ["10", "5"] and seconds == pytest.approx(1.5)


# --- the `rnnt transcribe` command, with a real (random) tiny checkpoint -----------------------


@pytest.fixture(scope="module")
def checkpoint(tiny_corpus, tmp_path_factory):
    """A random tiny model saved the way TransducerModule saves one."""
    from rnnt.checkpoint import MODEL_CONFIG_KEY, STATE_DICT_PREFIX, TOKENIZER_KEY
    from rnnt.data.tokenizer import Tokenizer
    from rnnt.models.transducer import Transducer, config_from_preset
    from tests.tiny import TINY_MODEL

    torch.manual_seed(0)
    tokenizer = Tokenizer.load(tiny_corpus / "tokenizer.model")
    config = config_from_preset("tiny", tokenizer.num_classes, **TINY_MODEL)
    model = Transducer(config)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.ckpt"
    torch.save(
        {
            "state_dict": {STATE_DICT_PREFIX + k: v for k, v in model.state_dict().items()},
            MODEL_CONFIG_KEY: config.to_dict(),
            TOKENIZER_KEY: tokenizer.model_bytes,
        },
        path,
    )
    return path


@pytest.fixture(autouse=True)
def _fresh_log_handler(monkeypatch):
    # `rnnt` adds its stderr handler once per process: give each test one on its own stderr.
    import logging

    monkeypatch.setattr(logging.getLogger("rnnt"), "handlers", [])


def _rnnt_transcribe(*args) -> int:
    from rnnt.cli import main

    try:
        main(["transcribe", *map(str, args)])
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def test_cli_prints_every_good_file_and_an_error_line_for_a_bad_one(checkpoint, tmp_path, capsys):
    _corpus(tmp_path, [1.0, 2.0, 0.5], bad={1: "truncated"})
    files = [tmp_path / f"clip{i}.flac" for i in range(3)]
    assert _rnnt_transcribe("--checkpoint", checkpoint, *files) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [
        str(files[0]),
        str(files[2]),
    ]
    assert f"{files[1]}\tERROR: cannot load audio file" in captured.err
    assert "1 of 3 audio files failed" in captured.err and "Traceback" not in captured.err

    assert _rnnt_transcribe("--checkpoint", checkpoint, "--strict", *files) == 2
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(files[0])]
    assert captured.err.count("\n") == 1 and str(files[1]) in captured.err


def test_cli_manifest_skips_a_corrupt_line_and_strict_names_it(checkpoint, tmp_path, capsys):
    manifest = _corpus(tmp_path, [1.0, 2.0, 0.5], bad={1: "truncated"})
    output = tmp_path / "out.jsonl"
    assert (
        _rnnt_transcribe("--checkpoint", checkpoint, "--manifest", manifest, "--output", output)
        == 0
    )
    assert "2 utterances transcribed, 1 skipped (unreadable_audio: 1)" in capsys.readouterr().out
    assert [line["audio_filepath"] for line in _lines(output)] == ["clip0.flac", "clip2.flac"]

    strict = ["--manifest", manifest, "--output", tmp_path / "strict.jsonl", "--strict"]
    assert _rnnt_transcribe("--checkpoint", checkpoint, *strict) == 2
    error = capsys.readouterr().err
    errors = [line for line in error.splitlines() if line.startswith("rnnt transcribe: error:")]
    assert len(errors) == 1 and f"{manifest}:2: cannot load audio file" in errors[0]
    assert "strict.jsonl.partial" in error and "Traceback" not in error  # line 1 is kept


@pytest.mark.parametrize(
    ("output", "extra", "message"),
    [
        ("in.jsonl", [], "would overwrite the input manifest"),
        ("in.jsonl", ["--overwrite"], "would overwrite the input manifest"),
        ("taken.jsonl", [], "already exists; pass --overwrite"),
    ],
)
def test_cli_refuses_an_output_that_would_destroy_a_file(tmp_path, capsys, output, extra, message):
    manifest = _corpus(tmp_path, [1.0])
    (tmp_path / "taken.jsonl").write_text("keep me\n")
    before = manifest.read_bytes()
    # Not a checkpoint: the output is checked before the model is loaded.
    (tmp_path / "not.ckpt").write_text("not a checkpoint")
    args = ["--manifest", manifest, "--output", tmp_path / output, *extra]
    assert _rnnt_transcribe("--checkpoint", tmp_path / "not.ckpt", *args) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert manifest.read_bytes() == before and (tmp_path / "taken.jsonl").read_text() == "keep me\n"
