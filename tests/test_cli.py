"""The `rnnt` command: configs that parse, the demo config in sync, errors as one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rnnt.cli import main, make_cli
from rnnt.demo import demo_config

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


@pytest.mark.parametrize("config", ["demo.yaml", "large.yaml"])
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
