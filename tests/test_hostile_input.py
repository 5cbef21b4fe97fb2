"""Hostile input: every bad manifest line, audio file, transcript and noise folder ends in a
clear error (naming file, line or field) or a counted skip, never in a crash of another kind,
a NaN, a hang or a lost training run. docs/reliability.md lists each case and its test here.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
import tracemalloc
import unicodedata
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnt.constants import (
    MANIFEST_MAX_LINE_BYTES,
    MAX_DECODE_DURATION,
    MAX_UTTERANCE_DURATION,
    SAMPLE_RATE,
)
from rnnt.data.audio import load_mono
from rnnt.data.augment import BackgroundNoise, NoiseSource
from rnnt.data.datamodule import TransducerDataModule
from rnnt.data.manifest import (
    ManifestError,
    read_manifest,
    read_manifest_with_stats,
    write_manifest,
)
from rnnt.data.manifest_line import KNOWN_FIELDS, Utterance
from rnnt.data.records import load_audio_records_with_stats
from rnnt.data.tokenizer import Tokenizer, normalize_text
from rnnt.decoding import transcribe_ids
from rnnt.models.transducer import Transducer, config_from_preset
from rnnt.transcribe import AudioItem, load_audio, transcribe
from tests.tiny import TINY_MODEL

TONE_HZ = 440.0
# NFKC expands one character into at most 18 (U+FDFA); lower-casing never lengthens after it.
NFKC_MAX_EXPANSION = 18
HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _tone(rate: int, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    return (
        amplitude * np.sin(2 * np.pi * TONE_HZ * np.arange(round(rate * seconds)) / rate)
    ).astype(np.float32)


def _line(audio: str = "a.wav", duration: float = 1.0, text: str = "call mum", **extra) -> bytes:
    return json.dumps(
        {"audio_filepath": audio, "duration": duration, "text": text, **extra}
    ).encode()


def _write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(b"".join(line + end for line in lines))
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    soundfile.write(tmp_path / "a.wav", _tone(SAMPLE_RATE, 1.0), SAMPLE_RATE)
    return tmp_path


# --- manifests ---------------------------------------------------------------------------------

HOSTILE_LINES = [
    (
        b'{"audio_filepath": "a.wav", "duration": 1' + b"0" * 400 + b', "text": "hi"}',
        "integer of 401 digits",
    ),
    (
        b'{"audio_filepath": "a.wav", "duration": 1' + b"0" * 5000 + b', "text": "hi"}',
        "invalid JSON: Exceeds the limit",
    ),
    (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (
        b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "hi \\ud800"}',
        "unpaired UTF-16 surrogate",
    ),
    (b'{"audio_filepath": "a\\u0000.wav", "duration": 1.0, "text": "hi"}', "NUL character"),
    (
        b'{"audio_filepath": "a.wav", "duration": "1.5", "text": "hi"}',
        "'duration' must be a number",
    ),
    (
        b'{"audio_filepath": "a.wav", "duration": [1.5], "text": "hi"}',
        "'duration' must be a number",
    ),
    (b'{"audio_filepath": "a.wav", "duration": -2, "text": "hi"}', "'duration' must be > 0"),
    (b'{"audio_filepath": "a.wav", "duration": NaN, "text": "hi"}', "'duration' must be finite"),
    (
        b'{"audio_filepath": "a.wav", "duration": -Infinity, "text": "hi"}',
        "'duration' must be finite",
    ),
    (b'{"audio_filepath": "a.wav", "duration": 1.0, "text": 42}', "'text' must be a string"),
    (
        b'{"audio_filepath": 7, "duration": 1.0, "text": "hi"}',
        "'audio_filepath' must be a non-empty",
    ),
    (
        b'{"audio_filepath": "", "duration": 1.0, "text": "hi"}',
        "'audio_filepath' must be a non-empty",
    ),
    (b'{"audio_filepath": "a.wav", "duration": 1.0}', "missing field 'text'"),
    (b'{"audio_filepath": "a.wav", "duration": 1.0, "text": ""}', "empty transcript"),
    (b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "caf\xe9"}', "not valid UTF-8"),
    (b"\x00\x01\x02 binary", "invalid JSON"),
    (b'"just a string"', "expected a JSON object per line, got str"),
    (b"x" * (MANIFEST_MAX_LINE_BYTES + 10), f"longer than {MANIFEST_MAX_LINE_BYTES} bytes"),
    (_line() + b"\r" + _line(), "CR only"),
]


@pytest.mark.parametrize(("bad_line", "expected"), HOSTILE_LINES, ids=range(len(HOSTILE_LINES)))
def test_hostile_manifest_line_names_file_and_line_or_is_counted(folder, bad_line, expected):
    manifest = _write(folder / "m.jsonl", [_line(), b"", bad_line, _line()])
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    assert str(caught.value).startswith(f"{manifest}:3: ") and expected in str(caught.value)
    kept, stats = read_manifest_with_stats(manifest, skip_invalid=True)
    assert [utterance.line for utterance in kept] == [1, 4]
    assert stats.num_skipped == 1 and stats.examples[0].startswith(f"{manifest}:3: ")


def test_bom_crlf_blank_and_whitespace_lines_are_read(folder):
    bom = b"\xef\xbb\xbf"
    manifest = _write(
        folder / "m.jsonl", [bom + _line(), b"", b"  \t", bom + _line(text="two"), _line()], b"\r\n"
    )
    utterances = read_manifest(manifest)
    assert [(u.line, u.text) for u in utterances] == [(1, "call mum"), (4, "two"), (5, "call mum")]


def _wav_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    soundfile.write(buffer, _tone(SAMPLE_RATE, 0.1), SAMPLE_RATE, format="WAV")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (gzip.compress(_line() + b"\n"), "gzip-compressed"),
        ((_line() + b"\n").decode().encode("utf-16"), "UTF-16"),
        (_wav_bytes(), "WAV/RIFF audio file"),
        (b"fLaC\x00\x00\x00\x22", "FLAC audio file"),
        (None, "zip archive"),
    ],
)
def test_file_that_is_not_json_lines_is_refused_as_a_whole(folder, content, expected):
    manifest = folder / "m.jsonl"
    if content is None:
        with zipfile.ZipFile(manifest, "w") as archive:
            archive.writestr("m.jsonl", _line())
    else:
        manifest.write_bytes(content)
    for skip_invalid in (False, True):
        with pytest.raises(ManifestError, match=expected) as caught:
            read_manifest(manifest, skip_invalid=skip_invalid)
        assert caught.value.line == 0 and str(caught.value).startswith(f"{manifest}: ")


def test_fifo_audio_and_manifest_are_refused_without_blocking(folder):
    os.mkfifo(folder / "pipe.wav")
    manifest = _write(folder / "m.jsonl", [_line(), _line("pipe.wav")])
    with pytest.raises(ManifestError, match="m.jsonl:2: audio file not found"):
        read_manifest(manifest)
    assert dict(read_manifest_with_stats(manifest, skip_invalid=True)[1].skipped) == {
        "missing_audio": 1
    }
    with pytest.raises(FileNotFoundError, match="pipe.wav"):
        load_audio(AudioItem(str(folder / "pipe.wav")))
    os.mkfifo(folder / "pipe.jsonl")
    with pytest.raises(ManifestError, match="not a file"):
        read_manifest(folder / "pipe.jsonl")


def test_directory_missing_and_empty_manifests(folder, caplog):
    with pytest.raises(ManifestError, match="not a file"):
        read_manifest(folder)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(folder / "none.jsonl")
    empty = folder / "empty.jsonl"
    empty.write_bytes(b"\n \n")
    with caplog.at_level(logging.WARNING, logger="rnnt.data.manifest"):
        assert read_manifest(empty) == []
    assert "the manifest is empty" in caplog.text


def test_huge_line_is_skipped_without_being_held_in_memory(folder):
    manifest = folder / "m.jsonl"
    huge_bytes = 64 * MANIFEST_MAX_LINE_BYTES
    with open(manifest, "wb") as handle:
        handle.write(b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "')
        for _ in range(huge_bytes // MANIFEST_MAX_LINE_BYTES):
            handle.write(b"a" * MANIFEST_MAX_LINE_BYTES)
        handle.write(b'"}\n' + _line() + b"\n")
    tracemalloc.start()
    try:
        utterances, stats = read_manifest_with_stats(manifest, skip_invalid=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [u.line for u in utterances] == [2] and stats.skipped["invalid"] == 1
    assert peak < 8 * MANIFEST_MAX_LINE_BYTES <= huge_bytes / 8


# Arbitrary JSON values, and records whose known fields hold arbitrary values.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()  # NaN and infinities included: Python's json writes and reads them
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "a\udfff", "\x00", "\u2028"]),  # lone surrogates: not Unicode
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
# Records whose known fields are often good and otherwise hostile, so that one bad field is
# seen on its own: huge integers, NaN, lone surrogates, control characters, wrong types.
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "audio_filepath": st.just("a.wav") | JSON_VALUES,
        "duration": st.just(1.5)
        | st.integers(min_value=10**300, max_value=10**400)
        | st.floats()
        | JSON_VALUES,
        "text": st.just("call mum")
        | st.text(st.characters(categories=["Cs", "Cc", "Lo", "So", "Zs", "Ll"]))
        | JSON_VALUES,
        "offset": st.floats() | JSON_VALUES,
    },
)


def _check_read(manifest: Path, num_lines: int, skip_invalid: bool) -> None:
    try:
        utterances = read_manifest(manifest, skip_invalid=skip_invalid, check_audio=False)
    except ManifestError as error:
        assert error.path == str(manifest)
        assert 0 <= error.line <= num_lines
        assert str(error).startswith(
            f"{manifest}:{error.line}: " if error.line else f"{manifest}: "
        )
        return
    for utterance in utterances:
        assert isinstance(utterance, Utterance) and 1 <= utterance.line <= num_lines
        assert math.isfinite(utterance.duration) and utterance.duration > 0
        assert math.isfinite(utterance.offset) and utterance.offset >= 0
        assert isinstance(utterance.text, str) and utterance.text.strip()
        utterance.text.encode("utf-8")  # valid Unicode: writing it back cannot fail


@HYPOTHESIS
@given(lines=st.lists(JSON_VALUES | RECORDS, max_size=6))
def test_read_manifest_on_arbitrary_json_values(tmp_path_factory, lines):
    manifest = tmp_path_factory.mktemp("json") / "m.jsonl"
    manifest.write_text("".join(json.dumps(value) + "\n" for value in lines), encoding="utf-8")
    for skip_invalid in (False, True):
        _check_read(manifest, len(lines), skip_invalid)


@HYPOTHESIS
@given(
    lines=st.lists(
        st.binary(max_size=80)
        | st.just(_line())
        | st.sampled_from([line for line, _ in HOSTILE_LINES if len(line) < 10_000])
        | st.sampled_from([b"[" * 50_000, b"\xef\xbb\xbf" + _line(), _line() + b"\r"]),
        max_size=6,
    )
)
def test_read_manifest_on_arbitrary_bytes(tmp_path_factory, lines):
    manifest = tmp_path_factory.mktemp("bytes") / "m.jsonl"
    content = b"\n".join(lines)
    manifest.write_bytes(content)
    for skip_invalid in (False, True):
        _check_read(manifest, content.count(b"\n") + 1, skip_invalid)


PATHS = st.from_regex(
    r"[A-Za-z0-9_][A-Za-z0-9_ .-]{0,15}(/[A-Za-z0-9_.-]{1,10}){0,2}", fullmatch=True
)
EXTRA = st.dictionaries(
    st.text(max_size=8).filter(lambda key: key not in KNOWN_FIELDS),
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=10)
    | st.lists(st.integers(), max_size=3),
    max_size=3,
)


@HYPOTHESIS
@given(
    records=st.lists(
        st.tuples(
            PATHS,
            st.floats(min_value=1e-6, max_value=1e6),
            st.text(min_size=1).filter(str.strip),
            st.floats(min_value=0, max_value=1e6),
            EXTRA,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_valid_records_round_trip_through_write_and_read(tmp_path_factory, records):
    manifest = tmp_path_factory.mktemp("round") / "m.jsonl"
    written = [
        {"audio_filepath": path, "duration": duration, "text": text, "offset": offset, **extra}
        for path, duration, text, offset, extra in records
    ]
    assert write_manifest(manifest, written) == len(written)
    first = read_manifest(manifest, check_audio=False)
    for utterance, record in zip(first, written, strict=True):
        assert utterance.audio_filepath == str(
            (manifest.parent / record["audio_filepath"]).resolve()
        )
        assert (utterance.duration, utterance.text, utterance.offset) == (
            record["duration"],
            record["text"],
            record["offset"],
        )
        assert utterance.extra == {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    write_manifest(manifest, first)
    second = read_manifest(manifest, check_audio=False)
    assert [(u.audio_filepath, u.duration, u.text, u.offset, u.extra) for u in second] == [
        (u.audio_filepath, u.duration, u.text, u.offset, u.extra) for u in first
    ]


# --- transcripts -------------------------------------------------------------------------------


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


@settings(max_examples=200, deadline=None)
@given(
    text=st.text()
    | st.text(st.characters(codec="utf-8"), max_size=5)
    | st.sampled_from(
        ["\ufdfa", "😀 hi", "東京 ok", "ÉCOLE", "a\x00b\x07c", "\u202e\u200b", "x'", "'y", "a''b"]
    )
)
def test_normalize_text_is_total_idempotent_bounded_and_in_the_alphabet(text):
    normalized = normalize_text(text)
    assert normalize_text(normalized) == normalized
    assert len(normalized) <= NFKC_MAX_EXPANSION * len(text)
    assert normalized == normalized.strip() and "  " not in normalized
    for index, char in enumerate(normalized):
        if char == "'":  # an apostrophe only inside a word
            assert 0 < index < len(normalized) - 1
            assert _is_word_char(normalized[index - 1]) and _is_word_char(normalized[index + 1])
        else:
            assert char == " " or _is_word_char(char), (char, unicodedata.category(char))


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus) -> Tokenizer:
    return Tokenizer.load(tiny_corpus / "tokenizer.model")


@settings(max_examples=150, deadline=None)
@given(text=st.text())
def test_tokenizer_ids_are_always_in_range(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(1 <= index < tokenizer.num_classes for index in ids)
    assert isinstance(tokenizer.decode(ids), str)
    assert bool(ids) == bool(normalize_text(text))


def test_unseen_characters_become_the_unknown_piece(tokenizer):
    assert "東" not in tokenizer.known_characters and "e" in tokenizer.known_characters
    ids = tokenizer.encode("東京 😀 the\x07end")
    assert 1 in ids and max(ids) < tokenizer.num_classes  # model id 1 = <unk>


# --- audio files -------------------------------------------------------------------------------


def _audio_cases(folder: Path) -> dict[str, tuple[str, float, str, str]]:
    """name -> (audio file, manifest duration, skip reason, error fragment), files written."""
    audio = folder / "bad"
    audio.mkdir(exist_ok=True)
    (audio / "empty.wav").write_bytes(b"")
    (audio / "text.wav").write_text("this is a text file renamed .wav\n" * 50)
    (audio / "random.flac").write_bytes(np.random.default_rng(0).bytes(20_000))
    soundfile.write(audio / "no_samples.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    soundfile.write(audio / "whole.wav", _tone(SAMPLE_RATE, 2.0), SAMPLE_RATE)
    whole = (audio / "whole.wav").read_bytes()
    (audio / "truncated.wav").write_bytes(whole[: len(whole) // 2])  # header fixed by libsndfile
    return {
        "empty": ("bad/empty.wav", 1.0, "unreadable_audio", "cannot read audio file"),
        "text": ("bad/text.wav", 1.0, "unreadable_audio", "cannot read audio file"),
        "random": ("bad/random.flac", 1.0, "unreadable_audio", "cannot read audio file"),
        "no_samples": ("bad/no_samples.wav", 1.0, "unreadable_audio", "holds no sample"),
        "truncated_wav": ("bad/truncated.wav", 2.0, "duration_mismatch", "overruns"),
        "overrun": ("bad/whole.wav", 3.0, "duration_mismatch", "overruns"),
    }


@pytest.mark.parametrize(
    "case", ["empty", "text", "random", "no_samples", "truncated_wav", "overrun"]
)
def test_unusable_audio_header_names_file_line_or_is_counted(folder, case):
    path, duration, reason, fragment = _audio_cases(folder)[case]
    manifest = _write(folder / "m.jsonl", [_line(), _line(path, duration)])
    with pytest.raises(ManifestError, match=f"m.jsonl:2: .*{fragment}"):
        load_audio_records_with_stats(manifest)
    records, stats = load_audio_records_with_stats(manifest, skip_invalid=True)
    assert [record.id for record in records] == ["m.jsonl:1"]
    assert dict(stats.skipped) == {reason: 1} and stats.kept == 1


def test_offset_past_the_end_and_tiny_durations(folder):
    manifest = _write(
        folder / "m.jsonl",
        [_line(offset=5.0), _line(duration=0.004), _line(duration=0.3, offset=0.2), _line()],
    )
    records, stats = load_audio_records_with_stats(manifest, skip_invalid=True)
    assert [record.id for record in records] == ["m.jsonl:3", "m.jsonl:4"]
    assert dict(stats.skipped) == {"duration_mismatch": 1, "too_short": 1}
    # Too short for one feature frame is filtering, not an error, even when reading strictly.
    assert (
        len(load_audio_records_with_stats(_write(folder / "s.jsonl", [_line(duration=0.004)]))[0])
        == 0
    )


def test_manifest_duration_shorter_than_the_file_uses_its_start_and_is_counted(folder, caplog):
    manifest = _write(folder / "m.jsonl", [_line(duration=0.5), _line(duration=1.05)])
    with caplog.at_level(logging.WARNING, logger="rnnt.data.records"):
        records, stats = load_audio_records_with_stats(manifest)
    assert [record.duration for record in records] == [0.5, 1.0]  # 1.05 s: clamped to the file
    assert stats.partial_audio == 1 and "only their first `duration` seconds" in caplog.text


@pytest.mark.parametrize(("rate", "channels"), [(7350, 1), (44_100, 2), (96_000, 1), (22_050, 6)])
def test_odd_rates_and_channel_counts_become_16_khz_mono(tmp_path, rate, channels):
    tone = _tone(rate, 1.5)
    path = tmp_path / f"tone.{'wav' if rate == 96_000 else 'flac'}"
    soundfile.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate)
    manifest = _write(tmp_path / "m.jsonl", [_line(path.name, 1.5)])
    (record,), _ = load_audio_records_with_stats(manifest)
    for waveform in (load_mono(record.to_cut()), load_audio(AudioItem(str(path)))):
        assert waveform.shape == (round(1.5 * SAMPLE_RATE),) and waveform.dtype == torch.float32
        middle = waveform[2000:-2000].double()
        spectrum = torch.fft.rfft(middle * torch.hann_window(middle.numel(), dtype=torch.float64))
        peak_hz = float(spectrum.abs().argmax()) * SAMPLE_RATE / middle.numel()
        assert peak_hz == pytest.approx(TONE_HZ, abs=3.0)
        assert float(middle.abs().max()) == pytest.approx(0.3, abs=0.02)  # averaged, not summed


def _load_time_failures(folder: Path) -> dict[str, str]:
    """Files whose header is fine but whose audio is not: name -> error fragment."""
    soundfile.write(folder / "full.flac", _tone(SAMPLE_RATE, 2.0), SAMPLE_RATE)
    whole = (folder / "full.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(whole[: len(whole) * 2 // 5])
    nan = _tone(SAMPLE_RATE, 1.0)
    nan[::500] = np.nan
    soundfile.write(folder / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
    soundfile.write(
        folder / "scaled.wav", _tone(SAMPLE_RATE, 1.0) / 0.3 * 32767, SAMPLE_RATE, subtype="FLOAT"
    )
    return {"truncated.flac": "", "nan.wav": "NaN or infinite", "scaled.wav": "mis-scaled"}


def test_file_that_shrank_after_setup_is_a_counted_skip_at_load(folder, tokenizer):
    from lhotse import CutSet

    from rnnt.data.dataset import TransducerDataset

    manifest = _write(folder / "m.jsonl", [_line(duration=1.0), _line(duration=1.0)])
    records, _ = load_audio_records_with_stats(manifest)
    soundfile.write(folder / "a.wav", _tone(SAMPLE_RATE, 0.3), SAMPLE_RATE)  # rewritten shorter
    with pytest.raises(Exception, match="number of declared samples .* diverged"):  # lhotse's
        load_mono(records[0].to_cut())
    dataset = TransducerDataset(tokenizer)
    assert dataset[CutSet([record.to_cut() for record in records])] is None
    assert dataset.num_skipped == 2


@pytest.mark.parametrize(
    "name", ["truncated.flac", "nan.wav", "scaled.wav", "missing.wav", "empty.wav", "text.wav"]
)
def test_transcribe_load_audio_errors_name_the_file(folder, name):
    from rnnt.cli import _is_user_error

    fragments = _load_time_failures(folder)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio")
    path = folder / name
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        load_audio(AudioItem(str(path)))
    assert str(path) in str(caught.value) and fragments.get(name, "") in str(caught.value)
    assert _is_user_error(caught.value)  # the CLI prints one line, not a traceback


@pytest.mark.parametrize(
    ("offset", "duration", "fragment"),
    [
        (5.0, None, "offset 5 s is outside"),
        (-1.0, None, "outside"),
        (0.0, 0.0, "must be > 0"),
        (0.5, 2.0, "overruns"),
        (0.0, 0.005, "shorter than"),
    ],
)
def test_transcribe_offset_and_duration_outside_the_file(folder, offset, duration, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_audio(AudioItem(str(folder / "a.wav"), offset, duration))


def test_transcribe_refuses_overlong_audio_before_decoding_it(tmp_path, tokenizer):
    path = tmp_path / "long.flac"
    seconds = MAX_DECODE_DURATION + 1
    soundfile.write(path, np.zeros(int(seconds * SAMPLE_RATE), np.float32), SAMPLE_RATE)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"{path}: {seconds:g} s of audio is longer than"):
            load_audio(AudioItem(str(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < seconds * SAMPLE_RATE  # bytes: far less than the decoded audio would take
    stretch = load_audio(AudioItem(str(path), offset=100.0, duration=10.0))
    assert stretch.numel() == 10 * SAMPLE_RATE
    model = Transducer(config_from_preset("tiny", 8, **TINY_MODEL)).eval()
    with pytest.raises(ValueError, match="longer than"):  # refused before any decoding
        transcribe(model, tokenizer, [AudioItem(str(path))])


def _tiny_model() -> Transducer:
    torch.manual_seed(0)
    return Transducer(config_from_preset("tiny", 20, **TINY_MODEL))


def test_silent_and_clipped_audio_give_finite_features_loss_and_gradients():
    model = _tiny_model().train()
    silent = torch.zeros(2, 2 * SAMPLE_RATE)  # first batch all silent: the normaliser's first stats
    clipped = torch.from_numpy(np.clip(_tone(SAMPLE_RATE, 2.0, amplitude=3.0), -1, 1))
    lengths = torch.tensor([2 * SAMPLE_RATE, SAMPLE_RATE])
    targets, target_lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    for audio in (silent, torch.stack([clipped, torch.zeros_like(clipped)])):
        features, _ = model.frontend(audio, lengths)
        assert torch.isfinite(features).all()  # log-mel floored, not log(0)
        loss = model(audio, lengths, targets, target_lengths)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()
    assert (
        torch.isfinite(model.normalizer.mean).all() and torch.isfinite(model.normalizer.var).all()
    )
    model.eval()
    assert torch.isfinite(model(silent, lengths, targets, target_lengths))
    assert len(transcribe_ids(model, silent, lengths)) == 2


# --- the DataModule: setup counts, noise folders, a whole epoch --------------------------------

BAD_TRAIN_LINES = [
    b"{not json",
    b'{"audio_filepath": "audio/x.wav", "duration": "2", "text": "two"}',
    _line("audio/missing.flac", 1.0, "where is it"),
    _line("bad/text.wav", 1.0, "text file"),
    _line("bad/no_samples.wav", 1.0, "no samples"),
    _line("bad/whole.wav", 2.0, "😀 🎉 !!!"),  # nothing left after normalisation
    _line("bad/long.flac", MAX_UTTERANCE_DURATION + 1, "far too long"),
]
SETUP_SKIPS = {
    "invalid": 2,
    "missing_audio": 1,
    "unreadable_audio": 2,
    "empty_text": 1,
    "too_long": 1,
}
LOAD_TIME_BAD = [("truncated.flac", 2.0), ("nan.wav", 1.0), ("scaled.wav", 1.0)]


@pytest.fixture()
def hostile_corpus(tiny_corpus, tmp_path) -> tuple[Path, set[str]]:
    """The tiny corpus with bad lines and files appended to train.jsonl; its good ids."""
    corpus = Path(shutil.copytree(tiny_corpus, tmp_path / "corpus"))
    _audio_cases(corpus)
    soundfile.write(
        corpus / "bad" / "long.flac",
        np.zeros(int((MAX_UTTERANCE_DURATION + 1) * SAMPLE_RATE), np.float32),
        SAMPLE_RATE,
    )
    _load_time_failures(corpus / "bad")
    manifest = corpus / "train.jsonl"
    good = manifest.read_bytes().splitlines()
    # Unseen characters (CJK, accents, emoji, control) on a good file: trained as <unk>.
    first = json.loads(good[0])
    unseen = _line(first["audio_filepath"], first["duration"], "東京 café 😀\x07 " + first["text"])
    load_time = [_line(f"bad/{name}", seconds, "call mum") for name, seconds in LOAD_TIME_BAD]
    lines = [
        *good[:3],
        *BAD_TRAIN_LINES[:4],
        *good[3:10],
        *BAD_TRAIN_LINES[4:],
        *load_time,
        unseen,
        *good[10:],
    ]
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    good_lines = {lines.index(line) + 1 for line in [*good, unseen]}
    return corpus, {f"train.jsonl:{number}" for number in good_lines}


def _datamodule(corpus: Path, **overrides) -> TransducerDataModule:
    options = dict(
        train_manifest=str(corpus / "train.jsonl"),
        val_manifest=str(corpus / "val.jsonl"),
        test_manifest=str(corpus / "test.jsonl"),
        tokenizer_path=str(corpus / "tokenizer.model"),
        noise_path=str(corpus / "noise"),
        noise_probability=1.0,
        max_batch_duration=12.0,
        num_workers=0,
        num_buckets=2,
    )
    options.update(overrides)
    return TransducerDataModule(**options)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_datamodule_epoch_delivers_every_good_utterance_and_counts_the_bad(
    hostile_corpus, num_workers, caplog
):
    corpus, good_ids = hostile_corpus
    module = _datamodule(corpus, num_workers=num_workers)
    with caplog.at_level(logging.WARNING):
        module.setup("fit")
        seen = []
        for batch in module.train_dataloader():
            seen += batch["ids"]
            assert torch.isfinite(batch["audio"]).all()
            assert int(batch["targets"].max()) < module.tokenizer.num_classes
            assert int(batch["target_lengths"].min()) >= 1
    assert sorted(seen) == sorted(good_ids)  # each good utterance exactly once
    assert dict(module.setup_stats["train"].skipped) == SETUP_SKIPS
    assert module.setup_stats["train"].kept == len(good_ids) + len(LOAD_TIME_BAD)
    assert module.num_skipped_utterances == len(LOAD_TIME_BAD)
    assert "characters the tokenizer never saw" in caplog.text and "'東'" in caplog.text
    if num_workers == 0:  # a worker's log records stay in the worker process
        assert "3 skipped so far" in caplog.text


def test_training_epoch_survives_hostile_data(hostile_corpus):
    from rnnt.train import TransducerModule

    corpus, good_ids = hostile_corpus
    module = _datamodule(corpus, num_workers=1)
    trained: list[str] = []

    class RecordIds(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trained.extend(batch["ids"])
            assert outputs is not None and torch.isfinite(outputs["loss"])

    model = TransducerModule(
        tokenizer_path=str(corpus / "tokenizer.model"),
        preset="tiny",
        model_overrides=TINY_MODEL,
        warmup_steps=5,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[RecordIds()],
    )
    trainer.fit(model, datamodule=module)
    assert trainer.state.finished and not trainer.interrupted
    assert sorted(trained) == sorted(good_ids)
    assert math.isfinite(float(trainer.callback_metrics["val_loss"]))
    assert module.num_skipped_utterances == len(LOAD_TIME_BAD)


def test_validation_skips_utterances_beyond_max_eval_duration(hostile_corpus):
    corpus, _ = hostile_corpus
    long_line = _line("bad/long.flac", MAX_UTTERANCE_DURATION + 1, "far too long")
    with open(corpus / "val.jsonl", "ab") as handle:
        handle.write(long_line + b"\n" + _line("bad/whole.wav", 0.004, "too short") + b"\n")
    module = _datamodule(corpus, max_eval_duration=MAX_UTTERANCE_DURATION)
    module.setup("validate")
    assert dict(module.setup_stats["val"].skipped) == {"too_long": 1, "too_short": 1}
    assert len(module._splits["val"].records) == 6
    unlimited = _datamodule(corpus, max_eval_duration=None)
    unlimited.setup("validate")
    assert dict(unlimited.setup_stats["val"].skipped) == {"too_short": 1}


def test_noise_folder_without_readable_audio_fails_at_setup(tiny_corpus, tmp_path):
    empty, corrupt = tmp_path / "empty", tmp_path / "corrupt"
    empty.mkdir()
    (empty / "README.txt").write_text("noise goes here")
    corrupt.mkdir()
    (corrupt / "a.wav").write_bytes(b"junk" * 100)
    (corrupt / "b.flac").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"no readable audio file under .*empty .*looked at 1 files"
    ):
        _datamodule(tiny_corpus, noise_path=str(empty)).setup("fit")
    with pytest.raises(ValueError, match=r"2 of them unreadable audio: .*a\.wav.*b\.flac"):
        _datamodule(tiny_corpus, noise_path=str(corrupt)).setup("fit")
    # No noise asked for: the folder is never looked at.
    _datamodule(tiny_corpus, noise_path=str(empty), noise_probability=0.0).setup("fit")


def test_corrupt_noise_files_are_left_out_or_dropped_with_one_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "good.wav", rng.normal(size=SAMPLE_RATE) * 0.1, SAMPLE_RATE)
    soundfile.write(tmp_path / "long.flac", rng.normal(size=10 * SAMPLE_RATE) * 0.1, SAMPLE_RATE)
    whole = (tmp_path / "long.flac").read_bytes()
    (tmp_path / "long.flac").write_bytes(whole[: len(whole) // 3])  # header fine, data cut
    (tmp_path / "bad.wav").write_bytes(b"junk" * 100)
    (tmp_path / "LICENSE").write_text("not audio, not reported")
    os.mkfifo(tmp_path / "pipe.wav")  # opening it would wait for a writer forever
    with caplog.at_level(logging.WARNING, logger="rnnt.data.augment"):
        source = NoiseSource(tmp_path)
        assert len(source) == 2 and "left out 1 unreadable audio files" in caplog.text
        assert "bad.wav" in caplog.text and "LICENSE" not in caplog.text
        noise = BackgroundNoise(source, probability=1.0, snr_range_db=[10.0, 10.0])
        speech = torch.from_numpy(_tone(SAMPLE_RATE, 3.0))
        generator = np.random.default_rng(1)
        outputs = [noise(speech, generator) for _ in range(30)]
    assert all(torch.isfinite(output).all() for output in outputs)
    assert caplog.text.count("dropped from the noise files") == 1
    assert sum(not torch.equal(output, speech) for output in outputs) >= 25  # good.wav still used
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.move(tmp_path / "long.flac", only_bad / "long.flac")
    source = NoiseSource(only_bad)
    noise = BackgroundNoise(source, probability=1.0)
    assert all(torch.equal(noise(speech, generator), speech) for _ in range(5))  # no noise left
