"""Every flag of every ``rnnt`` subcommand: a wrong value is one line naming it, exit status 2.

``ROWS`` holds, per subcommand, wrong values for its flags (types, ranges, files that are
folders and folders that are files, outputs that exist already). Each row runs through
``rnnt.cli.main`` and must end in ``SystemExit(2)`` with exactly one stderr line, starting
``rnnt COMMAND: error:`` and naming the flag, and no traceback.
``test_every_flag_of_every_subcommand_has_a_row`` lists the flags of the real parser, so a
new flag without a row fails. The ``--data.*``/``--model.*`` settings of fit, validate and
test are covered one by one in ``tests/test_arguments.py``; ``LIGHTNING_ROWS`` shows each way
such an error reaches the user.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rnnt import cli_args
from rnnt.cli import _parser, main

# Placeholders, replaced by paths the `places` fixture makes.
FILE = "{file}"  # an existing file that is nothing in particular
FOLDER = "{folder}"  # an existing folder
MISSING = "{folder}/missing.ckpt"
CORPUS = "{corpus}"  # a folder holding a corpus (train.jsonl, ...)
MANIFEST = "{manifest}"  # a manifest with transcripts
MODEL = "{model}"  # an existing tokenizer model
EXPORTED = "{exported}"  # a folder holding an ONNX export
NEW = "{folder}/new"  # a folder or file that does not exist yet
PREPARE_FOLDER = ["--corpus-dir", FOLDER, "--out", NEW]  # rnnt prepare: an empty corpus folder

# (subcommand, arguments, the flag the one line must name)
ROWS = [
    ("demo-data", ["--out", FILE], "--out"),
    ("demo-data", ["--out", "{file}/below"], "--out"),
    ("demo-data", ["--out", CORPUS], "--out"),  # another corpus there: not replaced
    ("demo-data", ["--out", NEW, "--train-hours", "0"], "--train-hours"),
    ("demo-data", ["--out", NEW, "--train-hours", "inf"], "--train-hours"),
    ("demo-data", ["--out", NEW, "--val-utterances", "0"], "--val-utterances"),
    ("demo-data", ["--out", NEW, "--test-utterances", "two"], "--test-utterances"),
    ("demo-data", ["--out", NEW, "--unseen-utterances", "0"], "--unseen-utterances"),
    ("demo-data", ["--out", NEW, "--engines", "festivox"], "--engines"),
    ("demo-data", ["--out", NEW, "--engines"], "--engines"),  # at least one
    (
        "demo-data",
        ["--out", NEW, "--with-recordings", "--without-recordings"],
        "--without-recordings",
    ),
    ("demo-data", ["--out", NEW, "--human-training=yes"], "--human-training"),
    ("demo-data", ["--out", NEW, "--seed", "-1"], "--seed"),
    ("demo-data", ["--out", NEW, "--workers", "0"], "--workers"),
    ("demo-data", ["--out", NEW, "--overwrite=yes"], "--overwrite"),
    ("demo-data", [], "--out"),  # required
    ("tokenizer", ["--manifest", FOLDER, "--out", NEW], "--manifest"),
    ("tokenizer", ["--manifest", MISSING, "--out", NEW], "--manifest"),
    ("tokenizer", ["--manifest", MANIFEST, "--out", FOLDER], "--out"),
    ("tokenizer", ["--manifest", MANIFEST, "--out", MODEL], "--out"),  # exists: not replaced
    ("tokenizer", ["--manifest", MANIFEST, "--out", NEW, "--vocab-size", "0"], "--vocab-size"),
    ("tokenizer", ["--manifest", MANIFEST, "--out", NEW, "--model-type", "word"], "--model-type"),
    ("tokenizer", ["--manifest", MANIFEST, "--out", NEW, "--skip-invalid=no"], "--skip-invalid"),
    ("tokenizer", ["--manifest", MANIFEST, "--out", NEW, "--overwrite=1"], "--overwrite"),
    ("demo", ["--out", FILE], "--out"),
    ("demo", ["--out", NEW, "--train-hours", "nan"], "--train-hours"),
    ("demo", ["--out", NEW, "--max-epochs", "0"], "--max-epochs"),
    ("demo", ["--out", NEW, "--max-minutes", "-5"], "--max-minutes"),
    ("demo", ["--out", NEW, "--preset", "huge"], "--preset"),
    ("demo", ["--out", NEW, "--workers", "-1"], "--workers"),
    ("demo", ["--out", NEW, "--seed", "1.5"], "--seed"),
    ("transcribe", ["--checkpoint", FOLDER, FILE], "--checkpoint"),
    ("transcribe", ["--checkpoint", MISSING, FILE], "--checkpoint"),
    ("transcribe", ["--checkpoint", FILE, "--manifest", FOLDER], "--manifest"),
    ("transcribe", ["--checkpoint", FILE, "--manifest", MANIFEST, "--output", FOLDER], "--output"),
    ("transcribe", ["--checkpoint", FILE, "--batch-seconds", "0", FILE], "--batch-seconds"),
    ("transcribe", ["--checkpoint", FILE, "--device", "gpu7", FILE], "--device"),
    ("transcribe", ["--checkpoint", FILE, "--beam", "0", FILE], "--beam"),
    ("transcribe", ["--checkpoint", FILE, "--streaming=1", FILE], "--streaming"),
    ("transcribe", ["--checkpoint", FILE, "--chunk-ms", "-320", FILE], "--chunk-ms"),
    ("transcribe", ["--checkpoint", FILE, "--strict=1", FILE], "--strict"),
    ("transcribe", ["--checkpoint", FILE, "--overwrite=1", FILE], "--overwrite"),
    ("transcribe", ["--checkpoint", FILE, "--weights", "mean", FILE], "--weights"),
    ("transcribe", ["--checkpoint", FILE, "--hotwords", MISSING, FILE], "--hotwords"),
    ("transcribe", ["--checkpoint", FILE, "--hotwords", FOLDER, FILE], "--hotwords"),
    ("transcribe", ["--checkpoint", FILE, "--hotword-boost", "-1", FILE], "--hotword-boost"),
    ("transcribe", ["--checkpoint", FILE, "--timestamps=1", FILE], "--timestamps"),
    ("transcribe", ["--checkpoint", FILE, "--format", "ass", FILE], "--format"),
    ("transcribe", ["--checkpoint", FILE, "--subtitle-dir", FILE, FILE], "--subtitle-dir"),
    (
        "transcribe",
        ["--checkpoint", FILE, "--attention-context", "x", "0", FILE],
        "--attention-context",
    ),
    ("export", ["--checkpoint", MISSING, "--out", NEW], "--checkpoint"),
    ("export", ["--checkpoint", FILE, "--out", FILE], "--out"),
    ("export", ["--checkpoint", FILE, "--out", EXPORTED], "--out"),  # exists: not replaced
    ("export", ["--checkpoint", FILE, "--out", NEW, "--opset", "13"], "--opset"),
    ("export", ["--checkpoint", FILE, "--out", NEW, "--overwrite=1"], "--overwrite"),
    ("export", ["--checkpoint", FILE, "--out", NEW, "--weights", "EMA"], "--weights"),
    ("export", ["--checkpoint", FILE, "--out", NEW, "--streaming=1"], "--streaming"),
    ("export", ["--checkpoint", FILE, "--out", NEW, "--chunk-ms", "0"], "--chunk-ms"),
    ("prepare", ["folder", "--corpus-dir", FILE, "--out", NEW], "--corpus-dir"),
    ("prepare", ["folder", "--corpus-dir", MISSING, "--out", NEW], "--corpus-dir"),
    ("prepare", ["folder", "--corpus-dir", FOLDER, "--out", FILE], "--out"),
    ("prepare", ["librispeech", *PREPARE_FOLDER, "--language", "en"], "--language"),  # English
    ("prepare", ["folder", *PREPARE_FOLDER, "--jobs", "0"], "--jobs"),
    ("prepare", ["folder", *PREPARE_FOLDER, "--dev-fraction", "1"], "--dev-fraction"),
    ("prepare", ["mls", *PREPARE_FOLDER, "--dev-fraction", "0.1"], "--dev-fraction"),  # split
    (
        "prepare",
        ["folder", *PREPARE_FOLDER, "--dev-fraction", ".5", "--test-fraction", ".5"],
        "--test-fraction 0.5",  # the two add up to 1: nothing left to train on
    ),
    ("prepare", ["folder", *PREPARE_FOLDER, "--test-fraction", "x"], "--test-fraction"),
    ("prepare", ["folder", *PREPARE_FOLDER, "--overwrite=1"], "--overwrite"),
    ("shard", ["--manifest", FOLDER, "--out", NEW], "--manifest"),
    ("shard", ["--manifest", MISSING, "--out", NEW], "--manifest"),
    ("shard", ["--manifest", MANIFEST, "--out", FILE], "--out"),
    ("shard", ["--manifest", MANIFEST, "--out", "{file}/below"], "--out"),
    ("shard", ["--manifest", MANIFEST, "--out", NEW, "--shard-size", "0"], "--shard-size"),
    ("shard", ["--manifest", MANIFEST, "--out", NEW, "--shard-size", "1.5"], "--shard-size"),
    ("shard", ["--manifest", MANIFEST, "--out", NEW, "--format", "mp3"], "--format"),
    ("shard", ["--manifest", MANIFEST, "--out", NEW, "--workers", "0"], "--workers"),
    ("shard", ["--manifest", MANIFEST, "--out", NEW, "--skip-invalid=no"], "--skip-invalid"),
    ("shard", ["--manifest", MANIFEST, "--out", NEW, "--overwrite=1"], "--overwrite"),
    ("shard", ["--out", NEW], "--manifest"),  # required
    ("average", ["--checkpoints", FOLDER, "--out", NEW], "--checkpoints"),
    ("average", ["--checkpoints", MISSING, "--out", NEW], "--checkpoints"),
    ("average", ["--out", NEW], "--checkpoints"),  # --checkpoints or --run: one is required
    ("average", ["--run", FILE, "--last", "2", "--out", NEW], "--run"),
    ("average", ["--run", MISSING, "--last", "2", "--out", NEW], "--run"),
    ("average", ["--run", FOLDER, "--last", "2", "--out", NEW], "--run"),  # no checkpoint there
    ("average", ["--run", FOLDER, "--out", NEW], "--last"),  # --last or --best: which files
    ("average", ["--run", FOLDER, "--last", "0", "--out", NEW], "--last"),
    ("average", ["--checkpoints", FILE, "--last", "2", "--out", NEW], "--last"),  # not a run
    ("average", ["--run", FOLDER, "--best", "two", "--out", NEW], "--best"),
    ("average", ["--run", FOLDER, "--last", "2", "--best", "2", "--out", NEW], "--best"),
    ("average", ["--checkpoints", FILE, "--out", FOLDER], "--out"),
    ("average", ["--checkpoints", FILE, "--out", FILE], "--out"),  # exists: not replaced
    ("average", ["--checkpoints", FILE, "--out", NEW, "--overwrite=1"], "--overwrite"),
]

# fit | validate | test: each way a wrong setting reaches the user (the settings one by one:
# tests/test_arguments.py). "{tokenizer}" is a real tokenizer, so that only the row is wrong.
TOKENIZER = ["--data.tokenizer_path", "{model}"]
LIGHTNING_ROWS = [
    ("fit", [*TOKENIZER, "--data.batch_size", "-3"], "--data.batch_size -3 must be >= 1"),
    ("fit", [*TOKENIZER, "--data.max_batch_duration", "0"], "--data.max_batch_duration 0"),
    ("fit", [*TOKENIZER, "--data.num_workers", "-1"], "--data.num_workers -1 must be >= 0"),
    ("fit", [*TOKENIZER, "--data.train_manifest", FOLDER], "--data.train_manifest"),
    ("fit", [*TOKENIZER, "--model.preset", "huge"], "--model.preset huge must be one of"),
    ("fit", [*TOKENIZER, "--model.learning_rate", "-1"], "--model.learning_rate -1.0 must be"),
    ("fit", [*TOKENIZER, "--model.attention_context_size", "[1]"], "attention_context_size [1]"),
    (
        "fit",
        [*TOKENIZER, "--model.attention_context_size", "[[8, 3], [8, 3]]"],
        "--model.attention_context_size [[8, 3], [8, 3]] lists [8, 3] twice",
    ),
    ("fit", ["--data.tokenizer_path", MISSING], "--data.tokenizer_path"),
    ("fit", [*TOKENIZER, "--trainer.max_epochs", "x"], "--trainer.max_epochs x: expected int"),
    ("fit", [*TOKENIZER, "--checkpoint.every_n_train_steps", "-1"], "every_n_train_steps=-1"),
    ("fit", [*TOKENIZER, "--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
    ("fit", ["--config", FOLDER], "--config"),
    ("validate", [*TOKENIZER, "--ckpt_path", FOLDER], "is a folder, not a checkpoint file"),
    ("test", [*TOKENIZER, "--ckpt_path", FILE], "not a readable checkpoint"),
]


@pytest.fixture
def places(tmp_path, monkeypatch) -> dict[str, str]:
    """The paths the placeholders stand for; the working folder is a fresh one."""
    from rnnt.data.tokenizer import train_tokenizer

    monkeypatch.chdir(tmp_path)  # (defaults like runs/ and demo/data/ point here)
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "file.txt").write_text("hello\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    lines = [
        json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": " ".join(words[i:])})
        for i in range(len(words))
    ]
    (corpus / "train.jsonl").write_text("\n".join(lines * 20) + "\n")
    model = train_tokenizer([corpus / "train.jsonl"], tmp_path / "tokenizer.model", 20)
    exported = tmp_path / "onnx"
    exported.mkdir()
    (exported / "encoder.onnx").write_bytes(b"an earlier export")
    return {
        "file": str(tmp_path / "file.txt"),
        "folder": str(folder),
        "corpus": str(corpus),
        "manifest": str(corpus / "train.jsonl"),
        "model": str(model),
        "exported": str(exported),
    }


def _run(command: str, arguments: list[str], places: dict[str, str], capsys) -> str:
    argv = [command, *(argument.format(**places) for argument in arguments)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, (argv, captured.err)
    assert "Traceback" not in captured.err, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, (argv, captured.err)
    assert lines[0].startswith(f"rnnt {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(("command", "arguments", "flag"), ROWS)
def test_a_wrong_value_is_one_line_naming_the_flag(command, arguments, flag, places, capsys):
    line = _run(command, arguments, places, capsys)
    assert flag in line, line


def test_outputs_the_user_did_not_name_for_replacing_are_left_alone(places, capsys):
    _run("demo-data", ["--out", CORPUS], places, capsys)
    _run("export", ["--checkpoint", FILE, "--out", EXPORTED], places, capsys)
    assert (Path(places["exported"]) / "encoder.onnx").read_bytes() == b"an earlier export"
    assert Path(places["manifest"]).read_text().count("\n") == 200


@pytest.mark.parametrize(("command", "arguments", "expected"), LIGHTNING_ROWS)
def test_a_wrong_training_setting_is_one_line_naming_it(
    command, arguments, expected, places, capsys, log_lines_aside
):
    line = _run(command, arguments, places, capsys)
    assert expected.format(**places) in line, line


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_of_every_subcommand_has_a_row():
    missing = []
    for command, parser in _subcommands().items():
        arguments = [argument for c, arguments, _ in ROWS if c == command for argument in arguments]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            if not any(
                argument == flag or argument.startswith(f"{flag}=")
                for flag in action.option_strings
                for argument in arguments
            ):
                missing.append(f"rnnt {command} {action.option_strings[0]}")
    assert not missing, (
        "flags without a wrong-value row in ROWS of tests/test_cli_args.py: " + ", ".join(missing)
    )


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: rnnt transcribe")


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (
            'Parser key "trainer.precision":\n  Does not validate against any of the Union '
            "subtypes\n  Errors:\n    - Expected a typing.Literal['16-mixed', '32-true']\n"
            "    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n"
            "  Given value: 17",
            "--trainer.precision 17: expected '16-mixed', '32-true' or None",
        ),
        (
            "Parser key \"config\": File does not exist: '/x.yaml'",
            "--config: File does not exist: '/x.yaml'",
        ),
        ("unrecognized arguments: --bogus 1", "unrecognized arguments: --bogus 1"),
    ],
)
def test_jsonargparse_messages_become_one_line_starting_with_the_flag(message, line):
    assert cli_args.one_line_parse_error(message) == line
