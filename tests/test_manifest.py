"""Manifest reading, validation, filtering and writing (rnnt/data/manifest.py)."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest

from rnnt.data.manifest import (
    ManifestError,
    read_manifest,
    read_manifest_with_stats,
    write_manifest,
)
from rnnt.data.manifest_line import Utterance


def _audio(folder, name="a.flac"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really audio")  # existence is all the manifest checks
    return path


def _write_lines(path, lines):
    path.write_bytes(
        b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    )
    return path


def _good(name="a.flac", duration=1.5, text="call mum"):
    return json.dumps({"audio_filepath": name, "duration": duration, "text": text})


@pytest.fixture
def corpus(tmp_path):
    _audio(tmp_path, "a.flac")
    _audio(tmp_path, "sub/b.flac")
    return tmp_path


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2, 3]", "expected a JSON object per line, got list"),
        (b'{"audio_filepath": "a.flac", "text": "hi"}', "missing field 'duration'"),
        (b'{"duration": 1.0}', "missing fields 'audio_filepath', 'text'"),
        (
            b'{"audio_filepath": "a.flac", "duration": "1.5", "text": "hi"}',
            "'duration' must be a number",
        ),
        (
            b'{"audio_filepath": "a.flac", "duration": true, "text": "hi"}',
            "'duration' must be a number",
        ),
        (b'{"audio_filepath": "a.flac", "duration": 1.0, "text": 7}', "'text' must be a string"),
        (
            b'{"audio_filepath": 3, "duration": 1.0, "text": "hi"}',
            "'audio_filepath' must be a non-empty",
        ),
        (b'{"audio_filepath": "a.flac", "duration": -1.0, "text": "hi"}', "'duration' must be > 0"),
        (b'{"audio_filepath": "a.flac", "duration": 0, "text": "hi"}', "'duration' must be > 0"),
        (
            b'{"audio_filepath": "a.flac", "duration": NaN, "text": "hi"}',
            "'duration' must be finite",
        ),
        (
            b'{"audio_filepath": "a.flac", "duration": Infinity, "text": "hi"}',
            "'duration' must be finite",
        ),
        (
            b'{"audio_filepath": "a.flac", "duration": 1.0, "text": "hi", "offset": -0.5}',
            "'offset' must be >= 0",
        ),
        (
            b'{"audio_filepath": "a.flac", "duration": 1.0, "text": "hi", "offset": "0"}',
            "'offset' must be a number",
        ),
        (b'{"audio_filepath": "a.flac", "duration": 1.0, "text": "caf\xe9"}', "not valid UTF-8"),
        (b'{"audio_filepath": "a.flac", "duration": 1.0, "text": "   "}', "empty transcript"),
        (
            b'{"audio_filepath": "missing.flac", "duration": 1.0, "text": "hi"}',
            "audio file not found",
        ),
    ],
)
def test_manifest_error_names_file_line_and_problem(corpus, bad_line, expected):
    manifest = _write_lines(corpus / "m.jsonl", [_good(), b"", bad_line, _good()])
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    error = caught.value
    assert error.line == 3  # the blank line 2 still counts in the numbering
    assert error.path == str(manifest)
    assert str(error).startswith(f"{manifest}:3: ")
    assert expected in str(error)


def test_manifest_error_is_a_picklable_value_error():
    error = ManifestError("m.jsonl", 4, "bad")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, str(copy)) == ("m.jsonl", 4, "m.jsonl:4: bad")


def test_missing_manifest_file_gives_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="not a file"):
        read_manifest(tmp_path)


def test_relative_paths_resolve_against_manifest_folder(corpus, monkeypatch):
    manifest = _write_lines(
        corpus / "m.jsonl",
        [
            _good("a.flac"),
            json.dumps(
                {
                    "audio_filepath": "sub/b.flac",
                    "duration": 2,
                    "text": "hi",
                    "offset": 0.25,
                    "speaker": "x",
                }
            ),
            _good(str(corpus / "a.flac")),
        ],
    )
    monkeypatch.chdir(corpus / "sub")  # the working directory must not matter
    utterances = read_manifest(manifest)
    assert [u.audio_filepath for u in utterances] == [
        str(corpus / "a.flac"),
        str(corpus / "sub" / "b.flac"),
        str(corpus / "a.flac"),
    ]
    second = utterances[1]
    assert (second.duration, second.offset, second.line, second.extra) == (
        2.0,
        0.25,
        2,
        {"speaker": "x"},
    )
    assert isinstance(second.duration, float)


def test_check_audio_false_accepts_missing_files(tmp_path):
    manifest = _write_lines(tmp_path / "m.jsonl", [_good("nowhere.flac")])
    assert len(read_manifest(manifest, check_audio=False)) == 1


def test_skip_invalid_counts_and_logs_each_reason(corpus, caplog):
    manifest = _write_lines(
        corpus / "m.jsonl",
        [
            _good(duration=1.0),
            b"{broken",
            _good(text=""),
            _good("missing.flac"),
            _good(duration=0.05),
            _good(duration=40.0),
            b"   ",
            _good("sub/b.flac", duration=3.0),
            b'{"audio_filepath": "a.flac", "duration": 1.0, "text": "\xff"}',
        ],
    )
    with caplog.at_level(logging.INFO, logger="rnnt.data.manifest"):
        utterances, stats = read_manifest_with_stats(
            manifest, min_duration=0.1, max_duration=30.0, skip_invalid=True
        )
    assert [u.line for u in utterances] == [1, 8]
    assert stats.kept == 2 and stats.kept_duration == pytest.approx(4.0)
    assert dict(stats.skipped) == {
        "invalid": 2,
        "empty_text": 1,
        "missing_audio": 1,
        "too_short": 1,
        "too_long": 1,
    }
    assert stats.num_skipped == 6
    assert stats.examples[0].startswith(f"{manifest}:2: invalid JSON")
    records = [r for r in caplog.records if r.name == "rnnt.data.manifest"]
    assert len(records) == 1  # logged once per manifest, not once per line
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "skipped 6" in message and "invalid: 2" in message and f"{manifest}:2:" in message


def test_duration_filter_is_not_an_error(corpus, caplog):
    manifest = _write_lines(corpus / "m.jsonl", [_good(duration=0.05), _good(duration=2.0)])
    with caplog.at_level(logging.INFO, logger="rnnt.data.manifest"):
        utterances = read_manifest(manifest, min_duration=0.1)  # skip_invalid stays False
    assert [u.duration for u in utterances] == [2.0]
    assert [r.levelno for r in caplog.records if r.name == "rnnt.data.manifest"] == [logging.INFO]


def test_write_then_read_round_trip(tmp_path):
    corpus = tmp_path / "corpus"
    inside = _audio(corpus, "audio/train/0001.flac")
    outside = _audio(tmp_path, "elsewhere/x.flac")
    records = [
        {"audio_filepath": str(inside), "duration": 1.25, "text": "straße und café", "speaker": 3},
        {"audio_filepath": outside, "duration": 2.0, "text": "what is the time", "offset": 0.5},
        Utterance(audio_filepath=str(inside), duration=0.75, text="it's ten", extra={"id": "u3"}),
    ]
    manifest = corpus / "deep" / "train.jsonl"
    assert write_manifest(manifest, records) == 3
    raw = manifest.read_text(encoding="utf-8").splitlines()
    # corpus/audio is not below corpus/deep, so the path stays absolute (no "../" paths).
    assert json.loads(raw[0])["audio_filepath"] == str(inside)
    assert "straße und café" in raw[0]  # ensure_ascii=False: UTF-8, not \u escapes
    # Written relative where the audio is inside the manifest's folder, absolute otherwise.
    manifest_top = corpus / "train.jsonl"
    write_manifest(manifest_top, records)
    top = [json.loads(line) for line in manifest_top.read_text(encoding="utf-8").splitlines()]
    assert top[0]["audio_filepath"] == "audio/train/0001.flac"
    assert top[1]["audio_filepath"] == str(outside)
    assert "offset" not in top[2] and top[2]["id"] == "u3"
    back = read_manifest(manifest_top)
    assert [u.audio_filepath for u in back] == [str(inside), str(outside), str(inside)]
    assert [u.text for u in back] == ["straße und café", "what is the time", "it's ten"]
    assert [u.offset for u in back] == [0.0, 0.5, 0.0]
    assert back[0].extra == {"speaker": 3}
    assert [e for e in os.listdir(corpus) if e.endswith(".tmp")] == []  # no temp file left


def test_write_manifest_is_atomic_on_failure(tmp_path):
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [{"audio_filepath": "a.flac", "duration": 1.0, "text": "old"}])
    before = manifest.read_bytes()

    def records():
        yield {"audio_filepath": "a.flac", "duration": 1.0, "text": "new"}
        yield {"audio_filepath": "b.flac", "text": "no duration"}

    with pytest.raises(ValueError, match="record 1 lacks 'duration'"):
        write_manifest(manifest, records())
    assert manifest.read_bytes() == before  # the old manifest survives a failed write
    assert sorted(os.listdir(tmp_path)) == ["m.jsonl"]
