"""The `rnnt` command: configs that parse, the demo config in sync, errors as one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rnnt.cli import main
from rnnt.demo import demo_config
from rnnt.lightning_cli import make_cli

REPO = Path(__file__).resolve().parents[1]


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
    demo = _flatten(demo_config("data/demo"))
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


def test_bad_manifest_line_is_one_line_error_with_exit_2(tmp_path, capsys):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        '{"audio_filepath": "a.wav", "duration": 1.0, "text": "hi"}\n{"duration": \n'
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenizer", "--manifest", str(manifest), "--out", str(tmp_path / "t.model")])
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


def test_streaming_a_model_that_sees_the_future_is_a_one_line_error(tiny_corpus, tmp_path, capsys):
    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "full.ckpt")
    audio = _first_audio(tiny_corpus, 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", "--checkpoint", str(checkpoint), "--streaming", *audio])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "attention_context_size" in error and "causal_conv" in error
    assert "Traceback" not in error
    with pytest.raises(SystemExit, match="--beam 0 must be >= 1"):
        main(["transcribe", "--checkpoint", str(checkpoint), "--beam", "0", *audio])


def test_export_command_writes_what_sherpa_onnx_loads(tiny_corpus, tmp_path, capsys):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install .[export])")
    checkpoint = _random_checkpoint(tiny_corpus, tmp_path / "m.ckpt")
    main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "onnx")])
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert sorted(printed) == ["decoder", "encoder", "joiner", "tokens"]
    assert all(Path(path).is_file() and Path(path).stat().st_size > 0 for path in printed.values())
