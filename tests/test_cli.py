"""The `rnnt` command: configs that parse, the demo config in sync, errors as one clear line."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from rnnt import constants as C
from rnnt.cli import main
from rnnt.demo import demo_config
from rnnt.lightning_cli import make_cli
from tests.tiny import tiny_fit_config

REPO = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 120


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "init_args":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_configs_demo_yaml_is_what_rnnt_demo_trains_with():
    shipped = _flatten(yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()))
    demo = _flatten(demo_config(C.DEMO_DATA_DIR))
    for key, value in demo.items():
        assert shipped.get(key) == value, (
            f"configs/demo.yaml {key}: {shipped.get(key)!r} != {value!r}"
        )


@pytest.mark.parametrize("config", ["demo.yaml", "large.yaml", "streaming.yaml"])
def test_shipped_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "--config", str(REPO / "configs" / config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    # The model's tokenizer is linked to the data's: one place to set it.
    assert printed["data"]["tokenizer_path"].endswith("tokenizer.model")
    assert "tokenizer_path" not in printed["model"]
    assert printed["checkpoint"]["filename"] == "rnnt-{epoch:02d}-{val_loss:.2f}"


def test_librispeech_yaml_is_the_recipe_the_readme_describes(capsys):
    path = REPO / "configs" / "librispeech.yaml"
    train = yaml.safe_load(path.read_text())["data"]["train_manifest"]
    # The three training parts as `rnnt prepare librispeech` names them, one pass each an epoch.
    assert [Path(entry).name for entry in train] == [
        "train-clean-100.jsonl",
        "train-clean-360.jsonl",
        "train-other-500.jsonl",
    ]
    with pytest.raises(SystemExit) as exit_info:
        make_cli(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    trainer, model, data = printed["trainer"], printed["model"], printed["data"]
    assert (trainer["strategy"], trainer["precision"], trainer["devices"]) == (
        "ddp",
        "bf16-mixed",
        8,
    )
    assert model["preset"] == "medium" and model["model_overrides"]["spec_augment"] is True
    assert data["noise_path"] is None and data["noise_probability"] == 0.0
    assert data["speed_perturb"] == [0.9, 1.0, 1.1]
    assert [Path(manifest).name for manifest in data["test_manifest"]] == [
        "test-clean.jsonl",
        "test-other.jsonl",
    ]
    assert printed["checkpoint"]["filename"] == "rnnt-{epoch:02d}-{val_loss:.2f}"


def test_bad_manifest_line_is_one_line_error_with_exit_2(tmp_path, capsys):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        '{"audio_filepath": "a.wav", "duration": 1.0, "text": "hi"}\n{"duration": \n'
    )
    out = ["--out", str(tmp_path / "t.model")]
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenizer", "--manifest", str(manifest), *out, "--no-skip-invalid"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"{manifest}:2:" in error and "Traceback" not in error


def test_truncated_and_foreign_checkpoints_are_clear_errors(tmp_path, capsys):
    import torch

    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    for path, message in [
        (truncated, "not a readable checkpoint"),
        (foreign, "not an rnnt-lightning checkpoint"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["transcribe", "--checkpoint", str(path), "a.wav"])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert str(path) in error and message in error


def _random_checkpoint(corpus: Path, path: Path, **overrides) -> Path:
    """A random tiny model saved the way TransducerModule saves one (weights, config, tokenizer)."""
    import lightning
    import torch

    from rnnt.checkpoint import MODEL_CONFIG_KEY, STATE_DICT_PREFIX, TOKENIZER_KEY
    from rnnt.data.tokenizer import Tokenizer
    from rnnt.models.transducer import Transducer, config_from_preset
    from tests.tiny import TINY_MODEL

    torch.manual_seed(0)
    tokenizer = Tokenizer.load(corpus / "tokenizer.model")
    config = config_from_preset("tiny", tokenizer.num_classes, **TINY_MODEL, **overrides)
    model = Transducer(config)
    torch.save(
        {
            "state_dict": {STATE_DICT_PREFIX + k: v for k, v in model.state_dict().items()},
            MODEL_CONFIG_KEY: config.to_dict(),
            TOKENIZER_KEY: tokenizer.model_bytes,
            "pytorch-lightning_version": lightning.__version__,  # as Lightning writes it
        },
        path,
    )
    return path


def _first_audio(corpus: Path, count: int) -> list[str]:
    return [str(p) for p in sorted((corpus / "audio").rglob("*.flac"))[:count]]


def test_transcribe_beam_and_streaming_flags_reach_the_decoders(tiny_corpus, tmp_path, capsys):
    streaming = {"attention_context_size": [4, 0], "causal_conv": True}
    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "s.ckpt", **streaming)
    audio = _first_audio(tiny_corpus, 2)

    main(["transcribe", "--checkpoint", str(checkpoint), *audio])
    greedy = capsys.readouterr().out.splitlines()
    main(["transcribe", "--checkpoint", str(checkpoint), "--beam", "1", *audio])
    assert capsys.readouterr().out.splitlines() == greedy  # a beam of one is greedy search
    main(["transcribe", "--checkpoint", str(checkpoint), "--beam", "3", *audio])
    beam = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in beam] == audio

    main(
        ["transcribe", "--checkpoint", str(checkpoint), "--streaming", "--chunk-ms", "160", *audio]
    )
    captured = capsys.readouterr()
    assert captured.out.splitlines() == greedy  # streamed = full-context greedy for this model
    assert captured.err.count("\tlatency: ") == len(audio) and "compute_ms_p95" in captured.err
    assert all(line.split("\t")[1] for line in greedy)  # the comparison is not of empty texts


def test_streaming_picks_the_chunks_context_and_whole_files_take_any_listed_one(
    tiny_corpus, tmp_path, capsys
):
    contexts = {"attention_context_size": [[4, 1], [4, 3], [-1, -1]], "causal_conv": True}
    checkpoint = _random_checkpoint(
        tiny_corpus, tmp_path / "m.ckpt", **contexts, attention_context_style="chunked"
    )
    audio = _first_audio(tiny_corpus, 2)
    transcribe = ["transcribe", "--checkpoint", str(checkpoint)]
    whole = {}
    for context in ("4 1", "4 3", "-1 -1"):
        main([*transcribe, "--attention-context", *context.split(), *audio])
        whole[context] = capsys.readouterr().out.splitlines()
    main([*transcribe, *audio])
    assert capsys.readouterr().out.splitlines() == whole["4 1"]  # the first listed: the default
    main([*transcribe, "--streaming", "--chunk-ms", "160", *audio])
    captured = capsys.readouterr()
    assert captured.out.splitlines() == whole["4 3"]  # 160 ms = 4 frames: [4, 3]
    assert captured.err.count("attention_context [4, 3]") == len(audio)
    assert len(set(map(tuple, whole.values()))) > 1  # the contexts do differ
    with pytest.raises(SystemExit) as exit_info:
        main([*transcribe, "--attention-context", "8", "3", *audio])
    assert exit_info.value.code == 2
    assert "[8, 3] is not one this model was trained at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*transcribe, "--streaming", "--attention-context", "4", "3", *audio])
    assert "--streaming picks the attention context" in str(exit_info.value.code)


def test_streaming_a_model_that_sees_the_future_is_a_one_line_error(tiny_corpus, tmp_path, capsys):
    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "full.ckpt")
    audio = _first_audio(tiny_corpus, 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", "--checkpoint", str(checkpoint), "--streaming", *audio])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "attention_context_size" in error and "causal_conv" in error
    assert "Traceback" not in error
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", "--checkpoint", str(checkpoint), "--beam", "0", *audio])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "rnnt transcribe: error: argument --beam: 0 must be >= 1\n"


def test_export_command_writes_what_sherpa_onnx_loads(tiny_corpus, tmp_path, capsys):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install .[export])")
    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "m.ckpt")
    main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "onnx")])
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert sorted(printed) == ["decoder", "encoder", "joiner", "tokens"]
    assert all(Path(path).is_file() and Path(path).stat().st_size > 0 for path in printed.values())


# --- files that are not checkpoints, and checkpoints that do not fit ---------------------------
def _not_checkpoints(folder: Path) -> dict[str, Path]:
    """Files a user might give as a checkpoint by mistake, by kind."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "six.txt").write_text("hello\n")  # 6 bytes: torch.load said `KeyError: 101`
    sf.write(folder / "a.wav", np.zeros(1600, dtype=np.float32), 16000)  # `IndexError`
    with zipfile.ZipFile(folder / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "a zip, but not one torch wrote")

    class Payload:
        def __reduce__(self):
            return (Path.touch, (folder / "pickled code ran",))

    (folder / "code.pkl").write_bytes(pickle.dumps(Payload()))  # plain pickle, not torch's zip
    (folder / "runs").mkdir(exist_ok=True)
    return {
        "empty": folder / "empty.ckpt",
        "text": folder / "six.txt",
        "wav": folder / "a.wav",
        "zip": folder / "other.zip",
        "pickle": folder / "code.pkl",
        "folder": folder / "runs",
    }


def _one_error_line(capsys, command: str) -> str:
    error = capsys.readouterr().err
    assert "Traceback" not in error, error
    lines = error.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rnnt {command}: error: "), error
    return lines[0]


def _other_vocabulary_checkpoint(corpus: Path, folder: Path, vocab_size: int, model_type: str):
    """A random tiny model with a tokenizer of ``vocab_size`` pieces trained on ``corpus``."""
    from rnnt.data.tokenizer import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    other = folder / f"{model_type}{vocab_size}"
    other.mkdir(exist_ok=True)
    train_tokenizer([corpus / "train.jsonl"], other / "tokenizer.model", vocab_size, model_type)
    return _random_checkpoint(other, folder / f"{model_type}{vocab_size}.ckpt")


def test_every_non_checkpoint_file_is_one_line_in_transcribe_and_export(tmp_path, capsys):
    for kind, path in _not_checkpoints(tmp_path).items():
        for argv in (
            ["transcribe", "--checkpoint", str(path), str(tmp_path / "a.wav")],
            ["export", "--checkpoint", str(path), "--out", str(tmp_path / "onnx")],
        ):
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            assert exit_info.value.code == 2, kind
            line = _one_error_line(capsys, argv[0])
            assert str(path) in line, (kind, line)
    assert not (tmp_path / "pickled code ran").exists()
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("command", ["validate", "fit"])  # (test reads it as validate does)
def test_every_non_checkpoint_file_is_one_line_as_ckpt_path(
    command, tiny_corpus, tmp_path, capsys, log_lines_aside
):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_fit_config(tiny_corpus, tmp_path, max_steps=1)))
    for kind, path in _not_checkpoints(tmp_path / "files").items():
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--config", str(config), "--ckpt_path", str(path)])
        assert exit_info.value.code == 2, kind
        line = _one_error_line(capsys, command)
        assert str(path) in line, (kind, line)
    assert not (tmp_path / "files" / "pickled code ran").exists()


@pytest.mark.parametrize("command", ["validate", "fit"])
def test_checkpoint_of_another_vocabulary_says_both_sizes_and_how_to_fine_tune(
    command, tiny_corpus, tmp_path, capsys, log_lines_aside
):
    from tests.tiny import TINY_VOCAB_SIZE

    config = tiny_fit_config(tiny_corpus, tmp_path, max_steps=1)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    smaller = _other_vocabulary_checkpoint(tiny_corpus, tmp_path, TINY_VOCAB_SIZE - 8, "unigram")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(config_path), "--ckpt_path", str(smaller)])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys, command)
    assert f"{smaller}: trained with a vocabulary of {TINY_VOCAB_SIZE - 8} pieces" in line
    assert f"has {TINY_VOCAB_SIZE}" in line and f"--model.init_from {smaller}" in line
    assert "size mismatch" not in line

    # Same size, other pieces: it would load, and read every output as the wrong piece.
    same_size = _other_vocabulary_checkpoint(tiny_corpus, tmp_path, TINY_VOCAB_SIZE, "bpe")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(config_path), "--ckpt_path", str(same_size)])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys, command)
    assert "another tokenizer of the same size" in line and "--model.init_from" in line


def test_transcribe_with_a_device_this_machine_lacks_blames_the_device(
    tiny_corpus, tmp_path, capsys, monkeypatch
):
    import torch

    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "good.ckpt")
    audio = _first_audio(tiny_corpus, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in [
        (
            "cuda",
            "cuda: CUDA is not available on this machine (torch.cuda.is_available() is False)",
        ),
        ("gpu7", "gpu7: not a device name"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["transcribe", "--checkpoint", str(checkpoint), "--device", device, *audio])
        assert exit_info.value.code == 2
        line = _one_error_line(capsys, "transcribe")
        assert line.startswith(f"rnnt transcribe: error: argument --device: {message}"), line
        assert "checkpoint" not in line  # the file is fine: the message must not blame it


# --- one data location ----------------------------------------------------------------------
def test_origin_constants_point_where_make_demo_writes_its_corpus():
    makefile = (REPO / "Makefile").read_text()
    demo_dir = re.search(r"^DEMO_DIR \?= (\S+)$", makefile, re.MULTILINE)[1]
    assert re.search(r"rnnt demo --out \$\(DEMO_DIR\)", makefile)
    # `rnnt demo --out DIR` puts its corpus in DIR/data (rnnt.demo.run_demo).
    data = demo_config(Path(demo_dir) / "data")["data"]
    assert Path(C.DEMO_DATA_DIR) == Path(demo_dir) / "data"
    assert Path(C.TRAIN_MANIFEST) == Path(data["train_manifest"])
    assert Path(C.VAL_MANIFEST) == Path(data["val_manifest"])
    assert Path(C.TEST_MANIFEST) == Path(data["test_manifest"])
    assert Path(C.BG_NOISE_PATH) == Path(data["noise_path"])
    assert Path(C.TOKENIZER_MODEL_PATH) == Path(data["tokenizer_path"])


def test_run_py_without_data_is_one_line_naming_the_missing_tokenizer(tmp_path):
    # A fresh clone before `make demo`: the origin's entry must say what is missing.
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--trainer.accelerator", "cpu"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # Lightning logs the seed it set as an info line before the model is built.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("Seed set to")]
    assert lines == [
        f"rnnt fit: error: tokenizer model not found: {C.TOKENIZER_MODEL_PATH}; train one with "
        "`rnnt tokenizer` (rnnt.data.tokenizer.train_tokenizer) or fix the path "
        "(e.g. --data.tokenizer_path)"
    ], result.stderr


def _json_lines(text: str) -> list[dict]:
    import json

    return [json.loads(line) for line in text.splitlines()]


def test_transcribe_timestamps_and_subtitles_whole_file_and_streamed(tiny_corpus, tmp_path, capsys):
    import soundfile as sf
    import srt

    streaming = {"attention_context_size": [4, 0], "causal_conv": True}
    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "s.ckpt", **streaming)
    audio = _first_audio(tiny_corpus, 2)
    transcribe = ["transcribe", "--checkpoint", str(checkpoint)]
    main([*transcribe, *audio])
    texts = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    main([*transcribe, "--timestamps", *audio])
    lines = _json_lines(capsys.readouterr().out)
    assert [line["audio"] for line in lines] == audio and [line["text"] for line in lines] == texts
    for line in lines:
        words = line["words"]
        assert " ".join(word["word"] for word in words) == line["text"] != ""
        starts = [word["start"] for word in words]
        assert starts == sorted(starts) and all(w["start"] < w["end"] for w in words)
        assert words[-1]["end"] <= sf.info(line["audio"]).duration + 0.04
        assert all(0 < word["confidence"] <= 1 for word in words)
    # Streamed ([4, 0] streams exactly): the same words at the same times.
    main([*transcribe, "--timestamps", "--streaming", "--chunk-ms", "160", *audio])
    streamed = _json_lines(capsys.readouterr().out)
    timed = [[(w["word"], w["start"], w["end"]) for w in line["words"]] for line in lines]
    assert [[(w["word"], w["start"], w["end"]) for w in s["words"]] for s in streamed] == timed

    subtitles = tmp_path / "subtitles"
    main([*transcribe, "--format", "srt", "--subtitle-dir", str(subtitles), *audio])
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == texts
    for path, text in zip(audio, texts, strict=True):
        cues = list(srt.parse((subtitles / f"{Path(path).stem}.srt").read_text()))
        assert " ".join(cue.content for cue in cues) == text
    with pytest.raises(SystemExit) as exit_info:  # an existing subtitle file is kept
        main([*transcribe, "--format", "srt", "--subtitle-dir", str(subtitles), *audio])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    twice = [*transcribe, "--format", "vtt", "--subtitle-dir", str(tmp_path / "x"), *audio[:1] * 2]
    with pytest.raises(SystemExit) as exit_info:  # two files, one subtitle file: refused first
        main(twice)
    assert exit_info.value.code == 2 and "would both write" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as exit_info:
        main([*transcribe, "--format", "vtt", "--manifest", str(tiny_corpus / "test.jsonl")])
    assert "--timestamps adds each line's timed words" in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        main([*transcribe, "--subtitle-dir", str(subtitles), *audio])
    assert "give both" in str(exit_info.value.code)


def test_transcribe_streamed_beam_and_hotwords(tiny_corpus, tmp_path, capsys):
    from rnnt.data.tokenizer import Tokenizer

    streaming = {"attention_context_size": [4, 0], "causal_conv": True}
    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "s.ckpt", **streaming)
    audio = _first_audio(tiny_corpus, 2)
    transcribe = ["transcribe", "--checkpoint", str(checkpoint)]
    main([*transcribe, "--beam", "3", *audio])
    beam = capsys.readouterr().out.splitlines()
    main([*transcribe, "--beam", "3", "--streaming", "--chunk-ms", "160", *audio])
    assert capsys.readouterr().out.splitlines() == beam  # beam search continued across chunks

    # A phrase the model does not say, boosted hard, is said; a bad line is named first.
    said = " ".join(line.split("\t")[1] for line in beam)
    vocabulary = (tiny_corpus / "train.jsonl").read_text()
    words = {w for w in re.findall(r"[a-z]+", vocabulary.lower()) if len(w) > 3}
    phrase = sorted(w for w in words if w not in said.split())[0]
    hotwords = tmp_path / "hotwords.txt"
    hotwords.write_text(f"{phrase} :30\n")
    main([*transcribe, "--beam", "3", "--hotwords", str(hotwords), *audio])
    biased = capsys.readouterr().out.splitlines()
    assert all(phrase in line.split("\t")[1].split() for line in biased)
    assert Tokenizer.load(tiny_corpus / "tokenizer.model").encode(phrase)  # spellable
    hotwords.write_text(f"{phrase}\nzzz :-1\n")
    with pytest.raises(SystemExit) as exit_info:
        main([*transcribe, "--hotwords", str(hotwords), *audio])
    assert exit_info.value.code == 2 and f"{hotwords}:2:" in capsys.readouterr().err
