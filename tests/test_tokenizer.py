"""Tests for rnnt/data/tokenizer.py: normalisation, training, encode/decode, pickling."""

from __future__ import annotations

import json
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnt.constants import BLANK_ID, BLANK_PIECE
from rnnt.data.tokenizer import Tokenizer, _normalize_any, normalize_text, train_tokenizer

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
    "don't",
]


def _write_manifest(path, texts):
    with open(path, "w", encoding="utf-8") as handle:
        for index, text in enumerate(texts):
            record = {"audio_filepath": f"a{index}.wav", "duration": 1.0, "text": text}
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=6)).capitalize() + "." for _ in range(300)]
    return _write_manifest(tmp_path_factory.mktemp("tok") / "train.jsonl", texts)


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    path = train_tokenizer([corpus], tmp_path_factory.mktemp("model") / "tokenizer.model", 30)
    return Tokenizer.load(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  It's   'quoted'  ", "it's quoted"),
        ("don\u2019t stop", "don't stop"),  # typographic apostrophe
        ("rock 'n' roll", "rock n roll"),
        ("ＦＵＬＬ ｗｉｄｔｈ ２", "full width 2"),  # NFKC
        ("ﬁne café — e-mail", "fine café e mail"),
        ("नमस्ते, 東京!", "नमस्ते 東京"),  # other scripts and their combining marks
        ("x² + y = 3.5%", "x2 y 3 5"),
        ("!!! ...", ""),
    ],
)
def test_normalize_text_examples(text, expected):
    assert normalize_text(text) == expected


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalize_text_is_idempotent_and_tidy(text):
    normalized = normalize_text(text)
    assert normalize_text(normalized) == normalized
    assert normalized == normalized.strip()
    assert "  " not in normalized


def test_round_trip_equals_normalized_text(tokenizer):
    for text in ["The cat ran FAST!", "don't  sat, red dog", "  Big blue mat. "]:
        ids = tokenizer.encode(text)
        assert ids and min(ids) >= 1 and max(ids) < tokenizer.num_classes
        assert tokenizer.decode(ids) == normalize_text(text)


def test_decode_ignores_blank(tokenizer):
    ids = tokenizer.encode("red cat")
    with_blanks = [BLANK_ID, *ids[:1], BLANK_ID, *ids[1:], BLANK_ID]
    assert tokenizer.decode(with_blanks) == "red cat"


def test_unseen_characters_map_to_unknown(tokenizer):
    unk_model_id = 1  # SentencePiece unk id 0, shifted by the blank
    ids = tokenizer.encode("cat ü 東")
    assert ids.count(unk_model_id) == 2
    assert tokenizer.id_to_piece(unk_model_id) == "<unk>"
    assert isinstance(tokenizer.decode(ids), str)


def test_pieces_and_sizes(tokenizer):
    assert tokenizer.vocab_size == 30
    assert tokenizer.num_classes == 31
    pieces = tokenizer.pieces
    assert len(pieces) == tokenizer.num_classes
    assert pieces[BLANK_ID] == BLANK_PIECE
    assert tokenizer.id_to_piece(5) == pieces[5]
    with pytest.raises(IndexError):
        tokenizer.id_to_piece(tokenizer.num_classes)


def test_pickle_and_bytes_round_trip(tokenizer):
    text = "the small green dog"
    assert pickle.loads(pickle.dumps(tokenizer)).encode(text) == tokenizer.encode(text)
    assert Tokenizer.from_bytes(tokenizer.model_bytes).encode(text) == tokenizer.encode(text)


def test_training_is_deterministic_and_writes_exact_path(corpus, tmp_path):
    first = train_tokenizer([corpus], tmp_path / "one" / "tokenizer.model", 30)
    second = train_tokenizer([corpus], tmp_path / "two.model", 30)
    assert first == tmp_path / "one" / "tokenizer.model"
    assert first.read_bytes() == second.read_bytes()


def test_bpe_and_several_manifests(corpus, tmp_path):
    other = _write_manifest(tmp_path / "other.jsonl", ["zebra zone"] * 5)
    tokenizer = Tokenizer.load(train_tokenizer([corpus, other], tmp_path / "b.model", 40, "bpe"))
    assert tokenizer.decode(tokenizer.encode("Zebra zone!")) == "zebra zone"


def test_vocab_too_large_names_manifest_and_flag(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"train\.jsonl.*smaller --vocab-size \(at most \d+"):
        train_tokenizer([corpus], tmp_path / "t.model", 5000)
    assert not (tmp_path / "t.model").exists()


def test_vocab_too_small_asks_for_larger(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"train\.jsonl.*larger --vocab-size"):
        train_tokenizer([corpus], tmp_path / "t.model", 5)


def test_bad_model_type_and_missing_model(corpus, tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizer([corpus], tmp_path / "t.model", 30, "word2vec")
    with pytest.raises(FileNotFoundError, match="rnnt tokenizer"):
        Tokenizer.load(tmp_path / "missing.model")


def _with_bad_lines(corpus, path):
    # The corpus plus a line that is not JSON and one with an empty transcript.
    lines = corpus.read_text().splitlines()
    lines[3:3] = [
        '{"audio_filepath": "x.wav", "duration": ',
        '{"audio_filepath": "y.wav", "duration": 1.0, "text": ""}',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_lines_are_skipped_and_counted_by_default_as_in_training(corpus, tmp_path, caplog):
    from rnnt.data.manifest import ManifestError

    manifest = _with_bad_lines(corpus, tmp_path / "mixed.jsonl")
    with caplog.at_level("WARNING"):
        path = train_tokenizer([manifest], tmp_path / "t.model", 30)
    # The same model as from the good lines alone, and one warning with the counts.
    assert path.read_bytes() == train_tokenizer([corpus], tmp_path / "clean.model", 30).read_bytes()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(manifest) in warnings[0] and "2" in warnings[0]
    with pytest.raises(ManifestError, match=rf"{manifest}:4:"):
        train_tokenizer([manifest], tmp_path / "strict.model", 30, skip_invalid=False)
    assert not (tmp_path / "strict.model").exists()


def test_rnnt_tokenizer_skips_bad_lines_unless_told_not_to(corpus, tmp_path, capsys):
    from rnnt.cli import main

    manifest = _with_bad_lines(corpus, tmp_path / "mixed.jsonl")
    main(
        [
            "tokenizer",
            "--manifest",
            str(manifest),
            "--out",
            str(tmp_path / "t.model"),
            "--vocab-size",
            "30",
        ]
    )
    assert capsys.readouterr().out == f"tokenizer: {tmp_path / 't.model'}\n"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "tokenizer",
                "--manifest",
                str(manifest),
                "--out",
                str(tmp_path / "s.model"),
                "--vocab-size",
                "30",
                "--no-skip-invalid",
            ]
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"rnnt tokenizer: error: {manifest}:4:")


def test_rnnt_tokenizer_never_replaces_a_model_unless_asked(corpus, tmp_path, capsys):
    from rnnt.cli import main

    out = tmp_path / "tokenizer.model"
    out.write_bytes(b"the model a run was trained with")
    argv = ["tokenizer", "--manifest", str(corpus), "--out", str(out), "--vocab-size", "30"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--out: {out}" in error and "--overwrite" in error
    assert out.read_bytes() == b"the model a run was trained with"
    main([*argv, "--overwrite"])
    assert Tokenizer.load(out).vocab_size == 30


def test_loading_a_folder_as_the_tokenizer_says_so(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not a tokenizer model"):
        Tokenizer.load(tmp_path)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_the_ascii_fast_path_normalises_exactly_like_the_general_rules(text):
    assert normalize_text(text) == _normalize_any(text)
