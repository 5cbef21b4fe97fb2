"""Tests for rnnt/data/records.py: transcripts checked against their audio, offsets, progress."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile

import rnnt.data.manifest_stats as manifest_stats
import rnnt.data.records as records_module
from rnnt.constants import MAX_SYMBOLS_PER_FRAME, SAMPLE_RATE
from rnnt.data.manifest import ManifestError
from rnnt.data.records import encoder_frames, load_audio_records_with_stats
from rnnt.data.tokenizer import Tokenizer, train_tokenizer

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "off", "big", "dog"]
ONE_MB_TEXT = ("the cat sat on the mat " * 50_000)[:1_000_000]  # 1 MB, under the line limit


def _write_manifest(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Clips of 2 s (16 kHz) and 3 s (8 kHz) with realistic transcripts, and a tokenizer."""
    folder = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    for name, rate, seconds in (("two.wav", SAMPLE_RATE, 2.0), ("three.flac", 8000, 3.0)):
        soundfile.write(folder / name, 0.1 * rng.standard_normal(int(rate * seconds)), rate)
    lines = [
        {"audio_filepath": "two.wav", "duration": 2.0, "text": " ".join(rng.choice(WORDS, 6))}
        for _ in range(20)
    ]
    _write_manifest(folder / "train.jsonl", lines)
    train_tokenizer([folder / "train.jsonl"], folder / "tokenizer.model", vocab_size=20)
    return folder


@pytest.fixture(scope="module")
def count_tokens(corpus):
    tokenizer = Tokenizer.load(corpus / "tokenizer.model")
    return lambda text: len(tokenizer.encode(text))


def _good(text="the cat sat on the mat", audio="two.wav", duration=2.0, **extra):
    return {"audio_filepath": audio, "duration": duration, "text": text, **extra}


def test_one_megabyte_transcript_on_a_two_second_clip_is_skipped_and_counted(
    corpus, count_tokens, caplog
):
    manifest = _write_manifest(
        corpus / "huge.jsonl", [_good(), _good(ONE_MB_TEXT), _good(audio="three.flac", duration=3)]
    )
    assert len(manifest.read_bytes().splitlines()[1]) < (1 << 20)  # a line the reader accepts
    calls = []

    def counting(text):
        calls.append(len(text))
        return count_tokens(text)

    with caplog.at_level(logging.WARNING, logger="rnnt.data.records"):
        records, stats = load_audio_records_with_stats(
            manifest, skip_invalid=True, count_tokens=counting
        )
    assert [record.id for record in records] == ["huge.jsonl:1", "huge.jsonl:3"]
    assert dict(stats.skipped) == {"text_too_long_for_audio": 1}
    words = len(ONE_MB_TEXT.split())
    assert stats.examples[0].startswith(f"{manifest}:2: {words} words in 2 s of audio")
    assert (
        "text_too_long_for_audio: 1" in caplog.text
        and f"huge.jsonl:2: {words} words" in caplog.text
    )
    assert max(calls) < 100  # the 1 MB transcript was refused on its word count, not tokenized
    with pytest.raises(ManifestError, match=rf"huge\.jsonl:2: {words} words in 2 s of audio"):
        load_audio_records_with_stats(manifest, count_tokens=count_tokens)


def test_more_tokens_than_encoder_frames_can_emit_is_refused_after_tokenizing(corpus, count_tokens):
    # One long "word" of 300 letters in 0.5 s: few words, but more tokens than 13 frames x 5.
    word = "".join(np.random.default_rng(1).choice(list("abcdefghijklmnopqrstuvwxyz"), 300))
    manifest = _write_manifest(
        corpus / "long_word.jsonl", [_good(word, duration=0.5), _good(duration=0.5)]
    )
    allowed = encoder_frames(0.5) * MAX_SYMBOLS_PER_FRAME
    assert count_tokens(word) > allowed
    pattern = rf"long_word\.jsonl:1: {count_tokens(word)} tokens in 0.5 s of audio .* {allowed} "
    with pytest.raises(ManifestError, match=pattern):
        load_audio_records_with_stats(manifest, count_tokens=count_tokens)
    records, stats = load_audio_records_with_stats(
        manifest, skip_invalid=True, count_tokens=count_tokens
    )
    assert [r.id for r in records] == ["long_word.jsonl:2"] and stats.num_skipped == 1


def test_realistic_transcripts_are_all_kept_with_their_token_counts(corpus, count_tokens):
    manifest = corpus / "train.jsonl"
    records, stats = load_audio_records_with_stats(
        manifest, count_tokens=count_tokens, speed_factors=[0.9, 1.0, 1.1]
    )
    assert stats.num_skipped == 0 and len(records) == 20
    for record in records:
        assert record.num_tokens == count_tokens(record.text) > 0
        cut = record.to_cut()
        assert cut.custom["num_tokens"] == record.num_tokens
        assert cut.perturb_speed(1.1).custom["num_tokens"] == record.num_tokens
    plain, _ = load_audio_records_with_stats(manifest)  # no tokenizer: no count, no check
    assert plain[0].num_tokens is None and not plain[0].to_cut().custom


def test_the_fastest_speed_factor_gives_the_fewest_frames(corpus):
    # 1 s: 25 frames at speed 1 (125 tokens allowed), 23 at speed 1.1 (115 allowed).
    manifest = _write_manifest(corpus / "speed.jsonl", [_good(duration=1.0)])
    fixed = lambda text: 120  # noqa: E731
    kept, _ = load_audio_records_with_stats(manifest, count_tokens=fixed)
    assert [r.num_tokens for r in kept] == [120]
    with pytest.raises(ManifestError, match=r"120 tokens in 0.909091 s of audio at speed x1.1"):
        load_audio_records_with_stats(manifest, count_tokens=fixed, speed_factors=[1.0, 1.1])


def test_lattice_above_the_bound_is_a_counted_skip_even_when_strict(corpus, monkeypatch):
    monkeypatch.setattr(records_module, "MAX_BATCH_LATTICE_CELLS", 60 * 11)
    manifest = _write_manifest(
        corpus / "lattice.jsonl", [_good(duration=2.0), _good(duration=2.0), _good(duration=0.5)]
    )
    tokens = iter([10, 9, 10])
    records, stats = load_audio_records_with_stats(manifest, count_tokens=lambda t: next(tokens))
    # 2 s at speed 1: 50 frames x (10 + 1) = 550 cells, within 660.
    assert [r.id for r in records] == ["lattice.jsonl:1", "lattice.jsonl:2", "lattice.jsonl:3"]
    tokens = iter([10, 9, 10])
    records, stats = load_audio_records_with_stats(
        manifest, count_tokens=lambda t: next(tokens), speed_factors=[0.8, 1.0]
    )
    # At speed 0.8, 2 s become 2.5 s: 63 frames x 11 = 693 > 660 cells, and 63 x 10 = 630 fits.
    assert [r.id for r in records] == ["lattice.jsonl:2", "lattice.jsonl:3"]
    assert dict(stats.skipped) == {"lattice_too_large": 1}
    assert "63 encoder frames x 11 token positions = 693 lattice cells" in stats.examples[0]


def test_explicit_zero_offset_is_a_segment_not_a_missing_offset(corpus, caplog):
    manifest = _write_manifest(
        corpus / "offsets.jsonl",
        [_good(duration=1.0), _good(duration=1.0, offset=0.0), _good(duration=2.0)],
    )
    with caplog.at_level(logging.WARNING, logger="rnnt.data.records"):
        records, stats = load_audio_records_with_stats(manifest)
    assert len(records) == 3
    assert stats.partial_audio == 1  # line 1 only: line 2 wrote its offset, line 3 is whole
    assert "1 utterances with no 'offset' field" in caplog.text
    assert "offsets.jsonl:1: duration 1 s" in caplog.text


def test_a_long_scan_logs_its_progress_only_when_asked(corpus, monkeypatch, caplog):
    manifest = corpus / "train.jsonl"
    with caplog.at_level(logging.INFO, logger="rnnt.data"):
        load_audio_records_with_stats(manifest, progress=True)  # quick: nothing to say
        assert "read:" not in caplog.text
        monkeypatch.setattr(manifest_stats, "MANIFEST_PROGRESS_SECONDS", 0.0)
        load_audio_records_with_stats(manifest, progress=False)  # e.g. DDP rank 1
        assert "read:" not in caplog.text
        load_audio_records_with_stats(manifest, progress=True)
    assert "train.jsonl: manifest lines read: 20 so far" in caplog.text
    assert "train.jsonl: audio headers read: 19 of 20 (95%)" in caplog.text
