"""`rnnt average`: the mean of checkpoints' weights, its normaliser, its refusals, its picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from rnnt import constants as C
from rnnt.average import (
    AVERAGED_FROM_KEY,
    average_checkpoints,
    refuse_resuming,
    select_checkpoints,
)
from rnnt.checkpoint import (
    MODEL_CONFIG_KEY,
    STATE_DICT_PREFIX,
    TOKENIZER_KEY,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
)
from rnnt.cli import main
from rnnt.models.normalizer import FeatureNormalizer
from rnnt.models.transducer import Transducer, config_from_preset
from tests.tiny import TINY_MODEL, tiny_fit_config

NORMALISER = STATE_DICT_PREFIX + "normalizer."


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus):
    from rnnt.data.tokenizer import Tokenizer

    return Tokenizer.load(tiny_corpus / "tokenizer.model")


def _model(tokenizer, seed: int, **overrides) -> Transducer:
    # A random tiny model whose normaliser holds statistics of its own (not the 0/1 init).
    torch.manual_seed(seed)
    config = config_from_preset("tiny", tokenizer.num_classes, **{**TINY_MODEL, **overrides})
    model = Transducer(config)
    model.normalizer.mean.uniform_(-9.0, -3.0)
    model.normalizer.var.uniform_(2.0, 30.0)
    model.normalizer.batches_seen.fill_(seed + 100)
    return model


def _save(path: Path, model: Transducer, tokenizer, **extra) -> Path:
    # The way TransducerModule saves one, with what Lightning adds to resume.
    state = {STATE_DICT_PREFIX + key: value for key, value in model.state_dict().items()}
    checkpoint = {
        "state_dict": state,
        MODEL_CONFIG_KEY: model.config.to_dict(),
        TOKENIZER_KEY: tokenizer.model_bytes,
        "epoch": 1,
        "global_step": 10,
        "optimizer_states": [{"state": {}}],
        **extra,
    }
    torch.save(checkpoint, path)
    return path


def test_average_of_identical_checkpoints_equals_them_exactly(tokenizer, tmp_path):
    model = _model(tokenizer, 1)
    paths = [_save(tmp_path / f"{index}.ckpt", model, tokenizer) for index in range(3)]
    averaged = average_checkpoints(paths)["state_dict"]
    stored = read_checkpoint(paths[0])["state_dict"]
    assert list(averaged) == list(stored)
    for key, value in stored.items():
        assert averaged[key].dtype == value.dtype and torch.equal(averaged[key], value), key


def test_average_of_two_checkpoints_is_their_mean(tokenizer, tmp_path):
    first = _save(tmp_path / "a.ckpt", _model(tokenizer, 1), tokenizer)
    second = _save(tmp_path / "b.ckpt", _model(tokenizer, 2), tokenizer)
    averaged = average_checkpoints([first, second])["state_dict"]
    a, b = read_checkpoint(first)["state_dict"], read_checkpoint(second)["state_dict"]
    weights = [key for key in a if key.startswith("model.encoder.") or "joiner" in key]
    assert weights
    for key in weights:
        assert torch.equal(averaged[key], ((a[key].double() + b[key].double()) / 2).float()), key
    assert averaged[NORMALISER + "batches_seen"].item() == 102  # the larger count


def test_averaged_normaliser_outputs_the_mean_of_the_normalised_features(tokenizer, tmp_path):
    models = [_model(tokenizer, seed) for seed in (1, 2, 3)]
    paths = [_save(tmp_path / f"{i}.ckpt", m, tokenizer) for i, m in enumerate(models)]
    state = average_checkpoints(paths)["state_dict"]
    averaged = FeatureNormalizer(C.N_MELS).eval()
    averaged.load_state_dict({n: state[NORMALISER + n] for n in ("mean", "var", "batches_seen")})
    torch.manual_seed(0)
    features = torch.randn(2, 50, C.N_MELS) * 4 - 6
    lengths = torch.tensor([50, 31])
    expected = torch.stack([m.normalizer.eval()(features, lengths) for m in models]).mean(0)
    torch.testing.assert_close(averaged(features, lengths), expected, rtol=1e-5, atol=1e-5)
    # The plain mean of the means and variances is not that map (why it is not used).
    plain = FeatureNormalizer(C.N_MELS).eval()
    plain.mean.copy_(torch.stack([m.normalizer.mean for m in models]).mean(0))
    plain.var.copy_(torch.stack([m.normalizer.var for m in models]).mean(0))
    assert (plain(features, lengths) - expected).abs().max() > 1e-2


def _differently(tokenizer, tmp_path, what: str) -> Path:
    path = tmp_path / f"other-{what}.ckpt"
    if what == "config":
        return _save(path, _model(tokenizer, 2, d_model=48), tokenizer)
    if what == "tokenizer":
        from rnnt.data.tokenizer import train_tokenizer

        manifest = tmp_path / "words.jsonl"
        words = ["alpha beta", "gamma delta", "epsilon zeta", "eta theta iota"] * 30
        line = {"audio_filepath": "a.wav", "duration": 1.0}
        manifest.write_text("".join(json.dumps({**line, "text": w}) + "\n" for w in words))
        from rnnt.data.tokenizer import Tokenizer

        other = Tokenizer.load(train_tokenizer([manifest], tmp_path / "other.model", 20))
        model = _model(tokenizer, 2)
        checkpoint_path = _save(path, model, tokenizer)
        checkpoint = torch.load(checkpoint_path, weights_only=True)
        checkpoint[TOKENIZER_KEY] = other.model_bytes
        torch.save(checkpoint, path)
        return path
    checkpoint = torch.load(_save(path, _model(tokenizer, 2), tokenizer), weights_only=True)
    if what == "missing":
        del checkpoint["state_dict"]["model.joiner.output.bias"]
    elif what == "ema":
        checkpoint["weights"] = "ema"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("what", "named"),
    [
        ("config", "d_model 32 vs 48"),
        ("tokenizer", "tokenizers of"),
        ("missing", "model.joiner.output.bias missing in other-missing.ckpt"),
        ("ema", "raw weights vs ema weights"),
    ],
)
def test_checkpoints_of_different_models_are_one_line_naming_both_files(
    tokenizer, tmp_path, capsys, what, named
):
    first = _save(tmp_path / "first.ckpt", _model(tokenizer, 1), tokenizer)
    other = _differently(tokenizer, tmp_path, what)
    with pytest.raises(SystemExit) as exit_info:
        main(["average", "--checkpoints", str(first), str(other), "--out", str(tmp_path / "x")])
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("rnnt average: error: ") and named in lines[0], lines[0]
    assert str(first) in lines[0] and str(other) in lines[0]
    assert not (tmp_path / "x").exists()


def test_an_unreadable_checkpoint_is_one_line_naming_it(tokenizer, tmp_path, capsys):
    first = _save(tmp_path / "first.ckpt", _model(tokenizer, 1), tokenizer)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(first.read_bytes()[:5000])
    with pytest.raises(SystemExit):
        main(["average", "--checkpoints", str(first), str(broken), "--out", str(tmp_path / "x")])
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{broken}: not a readable checkpoint" in line


def _ranked(path: Path, tokenizer, model, epoch: int, step: int, score: float | None) -> Path:
    # A file as AtomicModelCheckpoint writes it: its own score recorded in best_k_models.
    key = "AtomicModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}"
    best = {} if score is None else {f"runs/x/checkpoints/{path.name}": torch.tensor(score)}
    state = {"monitor": "val_loss", "best_k_models": best}
    return _save(path, model, tokenizer, epoch=epoch, global_step=step, callbacks={key: state})


def test_run_last_and_best_pick_by_the_steps_and_scores_stored_in_the_files(tokenizer, tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    model = _model(tokenizer, 1)
    _ranked(folder / "rnnt-00-5.00.ckpt", tokenizer, model, 0, 10, 5.0)
    _ranked(folder / "rnnt-01-1.00.ckpt", tokenizer, model, 1, 20, 6.0)  # the record wins
    _ranked(folder / "rnnt-02-3.00.ckpt", tokenizer, model, 2, 30, 3.0)
    _ranked(folder / "rnnt-03-4.00.ckpt", tokenizer, model, 3, 40, 4.0)
    _ranked(folder / "last.ckpt", tokenizer, model, 3, 45, None)  # a later resume point
    (folder / "last-v1.ckpt").symlink_to("rnnt-03-4.00.ckpt")  # counted once

    def names(**pick) -> list[str]:
        return [found.path.name for found in select_checkpoints(tmp_path / "run", **pick)]

    assert names(best=2) == ["rnnt-02-3.00.ckpt", "rnnt-03-4.00.ckpt"]
    assert names(best=3) == ["rnnt-00-5.00.ckpt", "rnnt-02-3.00.ckpt", "rnnt-03-4.00.ckpt"]
    assert names(last=2) == ["rnnt-03-4.00.ckpt", "last.ckpt"]
    assert names(last=5)[0] == "rnnt-00-5.00.ckpt"
    with pytest.raises(ValueError, match=r"--best 5: .* keeps only 4 ranked checkpoint"):
        names(best=5)
    # Without a record in the file, the score in its name ranks it.
    (folder / "rnnt-04-0.50.ckpt").write_bytes((folder / "last.ckpt").read_bytes())
    checkpoint = torch.load(folder / "rnnt-04-0.50.ckpt", weights_only=True)
    checkpoint.update(epoch=4, global_step=50, callbacks={})
    torch.save(checkpoint, folder / "rnnt-04-0.50.ckpt")
    assert names(best=1) == ["rnnt-04-0.50.ckpt"]


def test_an_average_refuses_to_be_resumed_and_says_what_to_do(tokenizer, tmp_path):
    paths = [_save(tmp_path / f"{i}.ckpt", _model(tokenizer, i), tokenizer) for i in (1, 2)]
    averaged = average_checkpoints(paths)
    assert "optimizer_states" not in averaged and "epoch" not in averaged
    assert [source["path"] for source in averaged[AVERAGED_FROM_KEY]] == list(map(str, paths))
    with pytest.raises(CheckpointError, match=r"x\.ckpt: an average of 2 .* --model\.init_from"):
        refuse_resuming(averaged, "x.ckpt")
    refuse_resuming(read_checkpoint(paths[0]), paths[0])  # a training checkpoint: fine


# --- a real run: `rnnt fit` keeping every epoch, averaged, transcribed -------------------------
@pytest.fixture(scope="module")
def fitted_run(tiny_corpus, tmp_path_factory) -> Path:
    """A run folder of three short epochs, each validated and kept (save_top_k -1)."""
    root = tmp_path_factory.mktemp("average_run")
    config = tiny_fit_config(
        tiny_corpus,
        root,
        max_epochs=3,
        limit_train_batches=2,  # (an int: batches; 1 would read as 1.0, the whole epoch)
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    config["data"].update(noise_path=None, max_batch_duration=4.0)
    config["model"]["max_symbols_per_frame"] = 1
    config["checkpoint"] = {"save_top_k": -1}
    path = root / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    return root / "run"


@pytest.mark.usefixtures("log_lines_aside")
def test_the_average_of_a_trained_run_transcribes(fitted_run, tiny_corpus, tmp_path, capsys):
    chosen = select_checkpoints(fitted_run, last=3)
    assert [found.epoch for found in chosen] == [0, 1, 2]
    assert [found.global_step for found in chosen] == [2, 4, 6]
    best = select_checkpoints(fitted_run, best=2)
    scores = sorted(found.score for found in select_checkpoints(fitted_run, last=3))
    assert sorted(found.score for found in best) == scores[:2]
    out = tmp_path / "average.ckpt"
    main(["average", "--run", str(fitted_run), "--last", "3", "--out", str(out)])
    model, _ = load_checkpoint(out)
    stored = [read_checkpoint(found.path)["state_dict"] for found in chosen]
    key = "model.joiner.output.weight"
    mean = (sum(state[key].double() for state in stored) / 3).float()
    assert torch.equal(model.state_dict()[key[len(STATE_DICT_PREFIX) :]], mean)
    capsys.readouterr()
    output = tmp_path / "out.jsonl"
    main(
        ["transcribe", "--checkpoint", str(out), "--manifest", str(tiny_corpus / "test.jsonl")]
        + ["--output", str(output), "--device", "cpu"]
    )
    assert "WER" in capsys.readouterr().out
    lines = output.read_text().splitlines()
    assert len(lines) == len((tiny_corpus / "test.jsonl").read_text().splitlines())
    assert all("pred_text" in json.loads(line) for line in lines)
    with pytest.raises(SystemExit) as exit_info:  # an average is not a point to resume from
        main(["fit", "--config", str(fitted_run.parent / "fit.yaml"), "--ckpt_path", str(out)])
    assert exit_info.value.code == 2
    assert "holds weights only" in capsys.readouterr().err
