"""Tests for rnnt/prepare/ (``rnnt prepare``): each corpus in its real on-disk layout, made here.

Every fixture is a few utterances of 0.3-1 s noise written with soundfile: LibriSpeech's
SPLIT/SPEAKER/CHAPTER folders with .trans.txt and .flac, Common Voice's clips/*.mp3 with its
TSVs (the header of an old release and of a new one), MLS's transcripts.txt with
audio/SPEAKER/BOOK/*.flac, and a home-made folder of audio with .txt/.lab transcripts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from rnnt.cli import main

# Common Voice TSV headers: releases up to 13 (no 'variant') and 17 on (sentence_id, domain).
CV_HEADER_OLD = "client_id path sentence up_votes down_votes age gender accents locale segment"
CV_HEADER_NEW = (
    "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender "
    "accents variant locale segment"
)


def _audio(path: Path, seconds: float, rate: int, seed: int, **options) -> tuple[str, float]:
    """Write ``seconds`` of noise; return (absolute path, exact duration in seconds)."""
    frames = round(seconds * rate)
    noise = np.random.default_rng(seed).uniform(-0.3, 0.3, frames).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, noise, rate, **options)
    return str(path), frames / rate


def _prepare(capsys, corpus: str, corpus_dir: Path, out: Path, *more: str) -> str:
    main(["prepare", corpus, "--corpus-dir", str(corpus_dir), "--out", str(out), *more])
    return capsys.readouterr().out


def _error(capsys, corpus: str, corpus_dir: Path, out: Path, *more: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _prepare(capsys, corpus, corpus_dir, out, *more)
    *progress, line = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and line.startswith("rnnt prepare: error: "), line
    assert all(earlier.startswith("INFO ") for earlier in progress), progress  # log lines only
    return line


def _lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def _assert_manifest(manifest: Path, expected: list[tuple[str, float, str]]) -> None:
    """Exact paths and texts, durations within a sample (at 48 kHz, the highest rate here)."""
    lines = _lines(manifest)
    assert [(line["audio_filepath"], line["text"]) for line in lines] == [
        (path, text) for path, _, text in expected
    ]
    for line, (_, duration, _) in zip(lines, expected, strict=True):
        assert set(line) == {"audio_filepath", "duration", "text"}
        assert line["duration"] == pytest.approx(duration, abs=1 / 48_000)


def _summary(out: Path) -> dict:
    return json.loads((out / "prepare.json").read_text(encoding="utf-8"))


def make_librispeech(root: Path) -> dict[str, list[tuple[str, float, str]]]:
    """LibriSpeech/{dev-clean,test-other}: 2 utterances each, plus a line whose flac is missing."""
    expected = {}
    for split, speaker, chapter in (("dev-clean", 84, 121123), ("test-other", 1688, 142285)):
        folder = root / "LibriSpeech" / split / str(speaker) / str(chapter)
        lines, expected[split] = [], []
        for index, seconds in enumerate((0.5, 0.8)):
            utterance = f"{speaker}-{chapter}-{index:04d}"
            text = f"HE HOPED THERE WOULD BE STEW FOR DINNER {split.upper()} {index}"
            path, duration = _audio(folder / f"{utterance}.flac", seconds, 16_000, index)
            lines.append(f"{utterance} {text}")
            expected[split].append((path, duration, text))
        lines.append(f"{speaker}-{chapter}-0002 THIS ONE WAS NEVER EXTRACTED")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return expected


def make_commonvoice(root: Path, header: str) -> dict[str, list[tuple[str, float, str]]]:
    """cv-corpus-*/eo: 48 kHz MP3 clips; train.tsv also lists a missing clip and a sentence
    with no word in it."""
    language = root / "cv-corpus-15.0-2023-09-08" / "eo"
    columns = header.split()
    sentences = {
        "train": ["Ĉu vi parolas Esperanton?", "La hundo kuras rapide.", "Bonan matenon, amiko!"],
        "dev": ["Kie estas la stacidomo?", "Mi ŝatas legi librojn."],
        "test": ['Li diris: "Saluton".', "Dankon pro via helpo."],
    }
    expected = {}
    for split, texts in sentences.items():
        rows, expected[split] = ["\t".join(columns)], []
        for index, text in enumerate(texts):
            name = f"common_voice_eo_{split}_{index}.mp3"
            path, duration = _audio(
                language / "clips" / name, 0.4 + 0.2 * index, 48_000, index, format="MP3"
            )
            values = {"client_id": "f00d" * 8, "path": name, "sentence": text, "locale": "eo"}
            rows.append("\t".join(values.get(column, "") for column in columns))
            expected[split].append((path, duration, text))
        if split == "train":
            for name, text in (("common_voice_eo_gone.mp3", "Ne plu."), ("x.mp3", "… !")):
                values = {"path": name, "sentence": text}
                rows.append("\t".join(values.get(column, "") for column in columns))
        (language / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    _audio(language / "clips" / "x.mp3", 0.3, 48_000, 9, format="MP3")
    return expected


def make_mls(root: Path) -> dict[str, list[tuple[str, float, str]]]:
    """mls_polish/{train,dev,test}: 2 utterances each; test's transcripts.txt has a bad line."""
    language = root / "mls_polish"
    expected = {}
    for split_index, split in enumerate(("train", "dev", "test")):
        lines, expected[split] = [], []
        for index in range(2):
            utterance = f"{6892 + split_index}_10350_{index:06d}"
            text = f"ale to już było dawno {split} {index}"
            flac = language / split / "audio" / utterance.split("_")[0] / "10350"
            path, duration = _audio(flac / f"{utterance}.flac", 0.3 + 0.4 * index, 16_000, index)
            lines.append(f"{utterance}\t{text}")
            expected[split].append((path, duration, text))
        if split == "test":
            lines.append("no tab and no id here")
        (language / split / "transcripts.txt").write_text("\n".join(lines) + "\n")
    (language / "metainfo.txt").write_text("SPEAKER | GENDER | PARTITION | MINUTES | BOOK ID\n")
    return expected


def make_folder(root: Path) -> list[tuple[str, float, str]]:
    """Nested audio (wav, flac, ogg, mp3) with .txt and .lab transcripts, and three to skip."""
    corpus = root / "recordings"
    expected = []
    files = [
        ("alice/0001.wav", "wav", 22_050, ".txt", "Turn the lights off.\n"),
        ("alice/0002.ogg", "ogg", 16_000, ".lab", "what time is it\n"),
        ("bob/day2/a.flac", "flac", 16_000, ".lab", "Call mum\nat six\n"),
        ("bob/day2/b.mp3", "mp3", 44_100, ".txt", "\ufeffset a timer\n"),
    ]
    for index, (name, kind, rate, transcript, text) in enumerate(files):
        path, duration = _audio(corpus / name, 0.3 + 0.1 * index, rate, index, format=kind.upper())
        (corpus / name).with_suffix(transcript).write_text(text, encoding="utf-8")
        expected.append((path, duration, " ".join(text.lstrip("\ufeff").split("\n")).strip()))
    _audio(corpus / "alice" / "0001.mp3", 0.3, 16_000, 7, format="MP3")  # a duplicate name
    _audio(corpus / "bob" / "untranscribed.wav", 0.3, 16_000, 8)
    for name, content in (("empty.wav", None), ("broken.flac", b"fLaC but no more")):
        if content is None:
            soundfile.write(corpus / name, np.zeros(0, np.float32), 16_000)
        else:
            (corpus / name).write_bytes(content)
        (corpus / name).with_suffix(".txt").write_text("it does not load")
    (corpus / "README.txt").write_text("Recorded in 2024.\n")
    (corpus / ".hidden").mkdir()
    _audio(corpus / ".hidden" / "x.wav", 0.3, 16_000, 9)
    return expected


def test_librispeech_goes_through_the_lhotse_recipe_one_manifest_per_split(tmp_path, capsys):
    expected = make_librispeech(tmp_path)
    out = tmp_path / "out"
    printed = _prepare(capsys, "librispeech", tmp_path, out)
    for split in ("dev-clean", "test-other"):
        _assert_manifest(out / f"{split}.jsonl", expected[split])
        assert f"{split}: 2 utterances, 1.3 s -> {out / split}.jsonl; skipped 1" in printed
    summary = _summary(out)
    assert summary["reader"] == "lhotse.recipes.prepare_librispeech"
    dev = summary["splits"]["dev-clean"]
    assert (dev["utterances"], dev["seconds"], dev["skipped"]) == (2, 1.3, {"missing_audio": 1})
    missing = tmp_path / "LibriSpeech/dev-clean/84/121123"
    assert dev["skipped_examples"]["missing_audio"] == [
        f"{missing}/84-121123.trans.txt:3: audio file not found: {missing}/84-121123-0002.flac"
    ]
    assert summary["total"] == {
        "utterances": 4,
        "seconds": 2.6,
        "hours": 0.0007,
        "skipped": {"missing_audio": 2},
    }


def test_librispeech_unreadable_flac_is_one_line_naming_it(tmp_path, capsys):
    make_librispeech(tmp_path)
    broken = tmp_path / "LibriSpeech/test-other/1688/142285/1688-142285-0001.flac"
    broken.write_bytes(b"not a flac")
    line = _error(capsys, "librispeech", tmp_path / "LibriSpeech", tmp_path / "out")
    assert f"error: {broken}: unreadable audio" in line


@pytest.mark.parametrize("header", [CV_HEADER_OLD, CV_HEADER_NEW], ids=["cv11", "cv17"])
def test_commonvoice_mp3_and_tsvs_of_old_and_new_releases(tmp_path, capsys, header):
    expected = make_commonvoice(tmp_path, header)
    out = tmp_path / "out"
    printed = _prepare(capsys, "commonvoice", tmp_path / "cv-corpus-15.0-2023-09-08", out)
    for split in ("train", "dev", "test"):
        _assert_manifest(out / f"{split}.jsonl", expected[split])
    train = _summary(out)["splits"]["train"]
    assert train["utterances"] == 3 and train["seconds"] == pytest.approx(1.8)
    assert train["skipped"] == {"empty_text": 1, "missing_audio": 1}
    assert train["skipped_examples"]["missing_audio"] == [
        f"train.tsv:5: audio file not found: "
        f"{tmp_path}/cv-corpus-15.0-2023-09-08/eo/clips/common_voice_eo_gone.mp3"
    ]
    assert train["skipped_examples"]["empty_text"][0].startswith("train.tsv:6: transcript '… !'")
    assert "train: 3 utterances, 1.8 s" in printed and "(empty_text 1, missing_audio 1)" in printed


def test_mls_flac_layout_with_a_bad_transcript_line(tmp_path, capsys):
    expected = make_mls(tmp_path)
    out = tmp_path / "out"
    _prepare(capsys, "mls", tmp_path, out, "--language", "polish")
    for split in ("train", "dev", "test"):
        _assert_manifest(out / f"{split}.jsonl", expected[split])
    test = _summary(out)["splits"]["test"]
    assert (test["utterances"], test["skipped"]) == (2, {"invalid": 1})
    where = tmp_path / "mls_polish" / "test" / "transcripts.txt"
    assert test["skipped_examples"]["invalid"] == [f"{where}:3: not 'SPEAKER_BOOK_NNNNNN<TAB>text'"]


def test_folder_of_nested_audio_with_txt_and_lab_transcripts(tmp_path, capsys):
    expected = make_folder(tmp_path)
    out = tmp_path / "out"
    _prepare(capsys, "folder", tmp_path / "recordings", out)
    _assert_manifest(out / "all.jsonl", sorted(expected))
    summary = _summary(out)["splits"]["all"]
    assert summary["utterances"] == 4
    assert summary["skipped"] == {
        "duplicate_audio": 1,
        "missing_audio": 1,
        "no_transcript": 1,
        "unreadable_audio": 2,
    }
    corpus = tmp_path / "recordings"
    assert summary["skipped_examples"]["duplicate_audio"] == [
        f"{corpus}/alice/0001.mp3: 0001.wav of the same name is used instead"
    ]
    assert summary["skipped_examples"]["missing_audio"] == [
        f"{corpus}/README.txt: a transcript without an audio file of the same name beside it"
    ]
    broken, empty = summary["skipped_examples"]["unreadable_audio"]
    assert broken.startswith(f"{corpus}/broken.txt: cannot read audio file {corpus}/broken.flac")
    assert empty == f"{corpus}/empty.txt: audio file {corpus}/empty.wav holds no sample (empty)"


def test_folder_held_out_split_is_stable_when_files_are_added(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    for index in range(24):
        _audio(corpus / f"s{index % 3}" / f"{index:03d}.wav", 0.3, 8_000, index)
        (corpus / f"s{index % 3}" / f"{index:03d}.txt").write_text(f"utterance {index}")
    fractions = ("--dev-fraction", "0.25", "--test-fraction", "0.25")

    def splits(out: Path) -> dict[str, set[str]]:
        _prepare(capsys, "folder", corpus, out, *fractions)
        return {
            name: {line["audio_filepath"] for line in _lines(out / f"{name}.jsonl")}
            for name in ("train", "dev", "test")
        }

    first = splits(tmp_path / "a")
    assert splits(tmp_path / "b") == first  # the same on every run
    assert sum(map(len, first.values())) == 24 and all(first.values())
    assert not (first["train"] & first["dev"] or first["train"] & first["test"])
    _audio(corpus / "s9" / "new.wav", 0.3, 8_000, 99)
    (corpus / "s9" / "new.txt").write_text("a new one")
    grown = splits(tmp_path / "c")
    for name in first:
        assert first[name] <= grown[name]  # nothing held out moved into training
    line = _error(capsys, "folder", corpus, tmp_path / "d", "--dev-fraction", "0.000001")
    assert "--dev-fraction 1e-06 held out none of the 25 utterances" in line


MAKERS = {
    "librispeech": make_librispeech,
    "commonvoice": lambda root: make_commonvoice(root, CV_HEADER_NEW),
    "mls": make_mls,
    "folder": make_folder,
}
# (corpus, the folder given, what is deleted below it, the start of the error after "error: ")
LAYOUT_HOLES = [
    ("librispeech", "LibriSpeech", ["dev-clean", "test-other"], "{dir}: no split folder"),
    ("commonvoice", "cv-corpus-15.0-2023-09-08", ["eo/dev.tsv"], "{dir}/eo/dev.tsv: no such"),
    ("commonvoice", "cv-corpus-15.0-2023-09-08/eo", ["clips"], "{dir}/clips: no such folder"),
    ("mls", "mls_polish", ["test/transcripts.txt"], "{dir}/test/transcripts.txt: no such"),
    ("mls", ".", ["mls_polish/dev"], "{dir}/mls_polish/dev: no such"),
    ("folder", "recordings", ["alice", "bob", "empty.wav", "broken.flac"], "{dir}: no audio file"),
]


@pytest.mark.parametrize(("corpus", "given", "deleted", "expected"), LAYOUT_HOLES)
def test_a_missing_part_of_the_layout_is_one_line_naming_it(
    tmp_path, capsys, corpus, given, deleted, expected
):
    import shutil

    MAKERS[corpus](tmp_path)
    corpus_dir = (tmp_path / given).resolve()
    for name in deleted:
        target = corpus_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    line = _error(capsys, corpus, corpus_dir, tmp_path / "out")
    assert line.startswith("rnnt prepare: error: " + expected.format(dir=corpus_dir)), line
    assert not (tmp_path / "out").exists()


def test_commonvoice_tsv_without_sentence_column_names_it(tmp_path, capsys):
    make_commonvoice(tmp_path, CV_HEADER_NEW)
    language = tmp_path / "cv-corpus-15.0-2023-09-08" / "eo"
    tsv = language / "test.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8").replace("\tsentence\t", "\ttext\t", 1))
    line = _error(capsys, "commonvoice", language, tmp_path / "out")
    assert f"{tsv}: no 'sentence' column in its header line" in line


def test_several_languages_ask_for_language(tmp_path, capsys):
    make_commonvoice(tmp_path, CV_HEADER_NEW)
    release = tmp_path / "cv-corpus-15.0-2023-09-08"
    (release / "pt" / "clips").mkdir(parents=True)
    line = _error(capsys, "commonvoice", release, tmp_path / "out")
    assert "--language: " in line and "2 languages (eo, pt)" in line
    _prepare(capsys, "commonvoice", release, tmp_path / "out", "--language", "eo")
    assert (tmp_path / "out" / "test.jsonl").is_file()


def test_existing_manifests_are_kept_without_overwrite(tmp_path, capsys):
    make_mls(tmp_path)
    out = tmp_path / "out"
    _prepare(capsys, "mls", tmp_path / "mls_polish", out)
    (out / "dev.jsonl").write_text("mine\n")
    line = _error(capsys, "mls", tmp_path / "mls_polish", out)
    assert "--out: " in line and "pass --overwrite" in line
    assert (out / "dev.jsonl").read_text() == "mine\n"
    _prepare(capsys, "mls", tmp_path / "mls_polish", out, "--overwrite")
    assert len(_lines(out / "dev.jsonl")) == 2


def test_a_few_training_steps_on_prepared_common_voice_mp3(tmp_path, capsys):
    from rnnt.data.tokenizer import train_tokenizer
    from rnnt.lightning_cli import make_cli
    from tests.tiny import tiny_fit_config

    make_commonvoice(tmp_path, CV_HEADER_NEW)
    out = tmp_path / "prepared"
    _prepare(capsys, "commonvoice", tmp_path / "cv-corpus-15.0-2023-09-08", out)
    tokenizer = train_tokenizer([out / "train.jsonl", out / "dev.jsonl"], out / "bpe.model", 24)
    # No validation: greedy decoding of an untrained model is the slow part, and the training
    # loader already decodes the MP3s (48 kHz, resampled) that this test is about.
    config = tiny_fit_config(out, tmp_path / "runs", max_steps=3, limit_val_batches=0)
    config["data"].update(
        val_manifest=str(out / "dev.jsonl"),
        tokenizer_path=str(tokenizer),
        noise_path=None,
        speed_perturb=[],
    )
    cli = make_cli(config, run=False, root_dir=str(tmp_path / "runs"))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 3
    assert math.isfinite(float(cli.trainer.callback_metrics["train_loss"]))
    assert float(cli.trainer.callback_metrics["train_audio_seconds"]) > 0


def test_writer_keeps_order_and_writes_offset_only_where_the_utterance_starts_later(tmp_path):
    from rnnt.prepare.writer import Entry, Skipped, Split, write_split

    path, duration = _audio(tmp_path / "a.wav", 0.5, 16_000, 0)
    entries = [
        Entry("list:1", path, "Second half.", duration=0.25, offset=0.25),
        Skipped("list:2", "invalid", "a line that did not parse"),
        Entry("list:3", path, "The whole file."),
    ]
    report = write_split(tmp_path, Split("mixed", entries), jobs=2)
    assert _lines(tmp_path / "mixed.jsonl") == [
        {"audio_filepath": "a.wav", "duration": 0.25, "text": "Second half.", "offset": 0.25},
        {"audio_filepath": "a.wav", "duration": duration, "text": "The whole file."},
    ]
    assert (report.utterances, report.seconds, dict(report.skipped)) == (2, 0.75, {"invalid": 1})
