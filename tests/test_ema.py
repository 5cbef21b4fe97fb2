"""The EMA of the weights (rnnt.ema): the update rule, validation on the EMA weights, checkpoints
that say which weights they hold, an exact resume, and one EMA under DDP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import nn

from rnnt.checkpoint import (
    RAW_STATE_DICT_KEY,
    WEIGHTS_KEY,
    CheckpointError,
    load_checkpoint,
    select_state_dict,
)
from rnnt.ema import EMA_STATE_KEY, ExponentialMovingAverage, ema_decay_at
from rnnt.lightning_cli import make_cli
from tests.tiny import TINY_MODEL, tiny_fit_config

REPO = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 240
STEPS = 2  # optimizer steps between validations (fewer than in an epoch)
VAL_BATCHES = 2


# --- the update rule ----------------------------------------------------------------------------
def _scalar_module(value: float) -> nn.Module:
    module = nn.Module()
    module.weight = nn.Parameter(torch.tensor([value]))
    return module


def test_update_follows_the_warmup_rule_computed_by_hand():
    module = _scalar_module(0.0)
    ema = ExponentialMovingAverage(decay=0.2)
    ema.attach(module)
    # decays: min(0.2, 1/10) = 0.1, min(0.2, 2/11) = 2/11, min(0.2, 3/12) = 0.2 (the cap)
    assert [ema_decay_at(0.2, n) for n in range(3)] == [0.1, 2 / 11, 0.2]
    shadows = []
    for weight in (1.0, 2.0, 4.0):
        with torch.no_grad():
            module.weight.fill_(weight)
        ema.update()
        shadows.append(ema.shadow["weight"].item())
    # 0.1 * 0 + 0.9 * 1 = 0.9;  2/11 * 0.9 + 9/11 * 2 = 1.8;  0.2 * 1.8 + 0.8 * 4 = 3.56
    assert shadows == pytest.approx([0.9, 1.8, 3.56], abs=1e-6)
    assert ema.updates == 3
    assert module.weight.item() == 4.0  # the trained weights are left alone


def test_an_update_is_one_fused_op_with_no_host_read():
    from rnnt.op_counts import count_ops

    module = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    ema = ExponentialMovingAverage(decay=0.999)
    ema.attach(module)
    with count_ops() as counts:
        ema.update()
    assert counts.host_reads == 0 and counts.kernels == 1, counts.by_op
    assert counts.by_op["_foreach_lerp_"] == 1, counts.by_op


def test_a_bfloat16_model_keeps_a_float32_shadow():
    module = nn.Linear(3, 3).to(torch.bfloat16)
    ema = ExponentialMovingAverage(decay=0.5)
    ema.attach(module)
    ema.update()
    assert all(value.dtype == torch.float32 for value in ema.shadow.values())


def test_a_save_during_validation_keeps_the_raw_weights_apart():
    # A stop signal may save in the middle of a validation, with the EMA weights swapped in.
    module = _scalar_module(1.0)
    ema = ExponentialMovingAverage(decay=0.5)
    ema.attach(module)
    with torch.no_grad():
        module.weight.fill_(3.0)
    ema.update()  # shadow 0.1 * 1 + 0.9 * 3 = 2.8
    ema.swap_in()
    assert module.weight.item() == pytest.approx(2.8)
    checkpoint = {"state_dict": module.state_dict()}
    ema.store(checkpoint)
    ema.swap_out()
    assert module.weight.item() == 3.0
    assert checkpoint[WEIGHTS_KEY] == "ema" and checkpoint[EMA_STATE_KEY]["updates"] == 1
    assert checkpoint["state_dict"]["weight"].item() == pytest.approx(2.8)
    assert checkpoint[RAW_STATE_DICT_KEY]["weight"].item() == 3.0


def test_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="EMA decay 1.0 must be in"):
        ExponentialMovingAverage(decay=1.0)


# --- training with an EMA -----------------------------------------------------------------------
def _config(corpus: Path, root: Path, max_steps: int, validate: bool = True) -> dict:
    """Deterministic training (no noise, speed perturbation, dropout or SpecAugment), a
    validation every STEPS steps (mid-epoch) where asked, a decay whose average lags."""
    config = tiny_fit_config(
        corpus,
        root,
        max_steps=max_steps,
        val_check_interval=STEPS,
        limit_val_batches=VAL_BATCHES if validate else 0,
        num_sanity_val_steps=0,
    )
    config["data"].update(noise_path=None, speed_perturb=[], max_batch_duration=4.0)
    config["model"].update(
        model_overrides={**TINY_MODEL, "dropout": 0.0, "spec_augment": False},
        learning_rate=0.02,
        warmup_steps=1,
        ema_decay=0.9,
        max_symbols_per_frame=1,
    )
    return config


def _fit(corpus: Path, root: Path, max_steps: int, ckpt_path: str | None = None, **kwargs):
    cli = make_cli(_config(corpus, root, max_steps, **kwargs), run=False, root_dir=str(root))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli


def _last(root: Path) -> Path:
    return root / "run" / "checkpoints" / "last.ckpt"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _params(module: pl.LightningModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.fixture(scope="module")
def uninterrupted(tiny_corpus, tmp_path_factory) -> dict:
    """2 * STEPS steps in one run, validated every STEPS: its trainer's metrics, its weights
    after fit, and its last.ckpt."""
    root = tmp_path_factory.mktemp("ema_once")
    cli = _fit(tiny_corpus, root, 2 * STEPS)
    return {
        "root": root,
        "val_loss": float(cli.trainer.callback_metrics["val_loss"]),
        "params": _params(cli.model),
        "last": _load(_last(root)),
    }


def test_the_checkpoint_holds_the_ema_weights_and_names_them(uninterrupted):
    last = uninterrupted["last"]
    assert last[WEIGHTS_KEY] == "ema"
    assert last[EMA_STATE_KEY] == {"decay": 0.9, "updates": 2 * STEPS}
    ema, raw = last["state_dict"], last[RAW_STATE_DICT_KEY]
    assert ema.keys() == raw.keys()
    differing = [key for key in ema if not torch.equal(ema[key], raw[key])]
    assert differing and all(key in uninterrupted["params"] for key in differing)
    # Buffers are copied, not averaged: the feature normaliser's statistics are the current ones.
    assert any("normalizer" in key for key in ema)
    for key in ema.keys() - uninterrupted["params"].keys():
        assert torch.equal(ema[key], raw[key]), key


def test_training_goes_on_from_the_raw_weights_after_validation(uninterrupted):
    raw = uninterrupted["last"][RAW_STATE_DICT_KEY]
    for name, value in uninterrupted["params"].items():
        assert torch.equal(value, raw[name]), name


def test_validation_scores_the_ema_weights(uninterrupted, tiny_corpus, tmp_path):
    last = _last(uninterrupted["root"])
    config = _config(tiny_corpus, tmp_path, 1)
    # `rnnt validate --ckpt_path last.ckpt`: the weights its state_dict holds, the EMA ones.
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    (ema,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=str(last))
    # The raw weights, scored by the same validation.
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    cli.model.load_state_dict(select_state_dict(_load(last), "raw"))
    (raw,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    assert uninterrupted["val_loss"] == pytest.approx(ema["val_loss"], rel=1e-5)
    assert abs(raw["val_loss"] - ema["val_loss"]) > 1e-3 * ema["val_loss"]


def test_resuming_continues_the_ema_exactly(uninterrupted, tiny_corpus, tmp_path):
    # Validation changes no weight: these runs skip it.
    _fit(tiny_corpus, tmp_path, STEPS, validate=False)
    stopped = _load(_last(tmp_path))
    assert stopped["global_step"] == STEPS
    assert stopped[EMA_STATE_KEY]["updates"] == STEPS
    _fit(tiny_corpus, tmp_path, 2 * STEPS, ckpt_path=str(_last(tmp_path)), validate=False)
    resumed, once = _load(_last(tmp_path)), uninterrupted["last"]
    assert resumed[EMA_STATE_KEY] == once[EMA_STATE_KEY]
    for key in (RAW_STATE_DICT_KEY, "state_dict"):
        for name, value in once[key].items():
            assert torch.equal(resumed[key][name], value), (key, name)


def test_resuming_without_an_ema_trains_on_the_raw_weights(uninterrupted, tiny_corpus, tmp_path):
    config = _config(tiny_corpus, tmp_path, 2 * STEPS + 1, validate=False)
    config["model"]["ema_decay"] = 0
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    starts = []
    cli.trainer.callbacks.append(_OnTrainStart(lambda module: starts.append(_params(module))))
    last = str(_last(uninterrupted["root"]))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=last)
    raw = uninterrupted["last"][RAW_STATE_DICT_KEY]
    assert all(torch.equal(value, raw[name]) for name, value in starts[0].items())
    assert WEIGHTS_KEY not in _load(_last(tmp_path))  # no EMA: the state_dict is the raw one


class _OnTrainStart(pl.Callback):
    def __init__(self, action) -> None:
        self.action = action

    def on_train_start(self, trainer, pl_module) -> None:
        self.action(pl_module)


# --- consumers: transcribe, export ---------------------------------------------------------------
def test_load_checkpoint_reads_the_ema_weights_unless_asked_for_the_raw(uninterrupted, tmp_path):
    path = _last(uninterrupted["root"])
    last = uninterrupted["last"]
    for weights, key in ((None, "state_dict"), ("ema", "state_dict"), ("raw", RAW_STATE_DICT_KEY)):
        model, _ = load_checkpoint(path, weights=weights)
        for name, value in model.state_dict().items():
            assert torch.equal(value, last[key][f"model.{name}"]), (weights, name)
    without_ema = {k: v for k, v in last.items() if k not in (WEIGHTS_KEY, RAW_STATE_DICT_KEY)}
    torch.save(without_ema, tmp_path / "plain.ckpt")
    load_checkpoint(tmp_path / "plain.ckpt", weights="raw")  # state_dict: raw by default
    with pytest.raises(CheckpointError, match=r"plain.ckpt: holds no EMA weights.*--weights raw"):
        load_checkpoint(tmp_path / "plain.ckpt", weights="ema")


@pytest.mark.parametrize("command", ["transcribe", "export"])
@pytest.mark.parametrize("weights", [None, "ema", "raw"])
def test_transcribe_and_export_pass_the_weights_asked_for(
    command, weights, uninterrupted, tiny_corpus, tmp_path, monkeypatch
):
    import rnnt.checkpoint
    import rnnt.export
    from rnnt.cli import main

    asked = []

    def load(path, map_location="cpu", weights=None):
        asked.append(weights)
        raise CheckpointError("stop here")

    monkeypatch.setattr(rnnt.checkpoint, "load_checkpoint", load)
    monkeypatch.setattr(rnnt.export, "load_checkpoint", load)
    audio = str(next((tiny_corpus / "audio").rglob("*.flac")))
    rest = [audio] if command == "transcribe" else ["--out", str(tmp_path / "onnx")]
    flag = ["--weights", weights] if weights else []
    with pytest.raises(SystemExit):
        main([command, "--checkpoint", str(_last(uninterrupted["root"])), *flag, *rest])
    assert asked == [weights]


# --- DDP ----------------------------------------------------------------------------------------
_COLLECTIVES = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "reduce",
    "reduce_scatter",
    "barrier",
    "all_gather_object",
    "broadcast_object_list",
)


class EmaProbe(pl.Callback):
    """Under DDP: counts the torch.distributed collectives called during EMA updates, and
    saves each rank's shadow and counts to ``out_dir/ema-rank{R}.pt`` when training ends."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.collectives = 0

    def on_train_start(self, trainer, pl_module) -> None:
        ema = pl_module._ema
        update = ema.update

        def counted() -> None:
            with self._counting():
                update()

        ema.update = counted

    @contextlib.contextmanager
    def _counting(self):
        import torch.distributed as dist

        originals = {name: getattr(dist, name) for name in _COLLECTIVES if hasattr(dist, name)}

        def wrap(original):
            def call(*args, **kwargs):
                self.collectives += 1
                return original(*args, **kwargs)

            return call

        for name, original in originals.items():
            setattr(dist, name, wrap(original))
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(dist, name, original)

    def on_train_end(self, trainer, pl_module) -> None:
        ema = pl_module._ema
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "shadow": {k: v.cpu() for k, v in ema.shadow.items()},
            "updates": ema.updates,
            "collectives": self.collectives,
            "global_step": trainer.global_step,
        }
        torch.save(record, self.out_dir / f"ema-rank{trainer.global_rank}.pt")


def test_ddp_keeps_one_identical_ema_on_every_rank_with_no_collective(tiny_corpus, tmp_path):
    config = _config(tiny_corpus, tmp_path, STEPS)
    probe = {"class_path": "tests.test_ema.EmaProbe", "init_args": {"out_dir": str(tmp_path)}}
    config["trainer"].update(devices=2, strategy="ddp", limit_val_batches=0, callbacks=[probe])
    config_path = tmp_path / "fit.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    process = subprocess.run(
        [sys.executable, "-m", "rnnt", "fit", "--config", str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert process.returncode == 0, (process.stdout + process.stderr)[-4000:]
    ranks = [_load(tmp_path / f"ema-rank{rank}.pt") for rank in (0, 1)]
    for record in ranks:
        assert record["updates"] == record["global_step"] == STEPS
        assert record["collectives"] == 0
    first, second = (record["shadow"] for record in ranks)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    saved = _load(_last(tmp_path))["state_dict"]  # rank 0 wrote it
    assert all(torch.equal(saved[name], first[name]) for name in first)
