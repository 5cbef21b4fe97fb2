"""Training end to end on a tiny synthesized corpus: resume after SIGKILL, bf16, checkpoints."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from rnnt.checkpoint import load_checkpoint
from rnnt.lightning_cli import make_cli
from tests.tiny import tiny_fit_config

REPO = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 240


def _rnnt(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnt", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=PROCESS_TIMEOUT_S)
    assert process.returncode == 0, output[-4000:]
    return output


def _adam_steps(checkpoint: dict) -> set[int]:
    states = checkpoint["optimizer_states"][0]["state"].values()
    return {int(state["step"]) for state in states}


def test_sigkill_then_resume_continues_global_step_and_optimizer(tiny_corpus, tmp_path):
    config_path = tmp_path / "fit.yaml"
    config_path.write_text(yaml.safe_dump(tiny_fit_config(tiny_corpus, tmp_path)))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"

    process = _rnnt("fit", "--config", str(config_path))
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not last.exists():
        assert process.poll() is None, process.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint was written in time"
        time.sleep(0.2)
    # Checkpoints are written to a temporary file and renamed: once it exists it is whole.
    before = torch.load(last, map_location="cpu", weights_only=True)
    # Let the run go on past the checkpoint, then kill it without warning.
    while (
        torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        == before["global_step"]
    ):
        assert process.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed = torch.load(last, map_location="cpu", weights_only=True)
    step, epoch = killed["global_step"], killed["epoch"]
    assert step > 0 and _adam_steps(killed) == {step}

    resumed_output = _finish(
        _rnnt(
            "fit",
            "--config",
            str(config_path),
            "--ckpt_path",
            "last",
            "--trainer.max_epochs",
            str(epoch + 2),
        )
    )
    assert "Restoring states from the checkpoint" in resumed_output
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["epoch"] == epoch + 1
    assert resumed["global_step"] > step
    # AdamW's per-parameter step counts went on from the checkpoint rather than from zero.
    assert _adam_steps(resumed) == {resumed["global_step"]}
    scheduler_state = resumed["lr_schedulers"][0]
    assert scheduler_state["last_epoch"] == resumed["global_step"]


class _LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _train_losses(corpus: Path, root: Path, precision: str) -> list[float]:
    config = tiny_fit_config(
        corpus,
        root,
        max_steps=3,
        precision=precision,
        limit_val_batches=0,
    )
    config["data"]["noise_path"] = None  # same batches for both precisions, nothing random
    config["data"]["speed_perturb"] = []
    cli = make_cli(config, run=False, root_dir=str(root))
    recorder = _LossRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return recorder.losses


def test_bf16_mixed_training_on_cpu_is_finite_and_close_to_float32(tiny_corpus, tmp_path):
    full = _train_losses(tiny_corpus, tmp_path / "fp32", "32-true")
    mixed = _train_losses(tiny_corpus, tmp_path / "bf16", "bf16-mixed")
    assert len(full) == len(mixed) == 3
    assert all(math.isfinite(loss) for loss in mixed)
    for loss_32, loss_16 in zip(full, mixed, strict=True):
        assert loss_16 == pytest.approx(loss_32, rel=0.03)


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_corpus, tmp_path_factory) -> Path:
    """A checkpoint of two epochs whose tokenizer file no longer exists anywhere."""
    root = tmp_path_factory.mktemp("trained")
    tokenizer_copy = root / "tokenizer.model"
    shutil.copy(tiny_corpus / "tokenizer.model", tokenizer_copy)
    config = tiny_fit_config(tiny_corpus, root, max_epochs=2)
    config["data"]["tokenizer_path"] = str(tokenizer_copy)
    cli = make_cli(config, run=False, root_dir=str(root))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    tokenizer_copy.unlink()
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.name.startswith("rnnt-") and best.suffix == ".ckpt"
    return best


def test_checkpoint_names_follow_the_origin_pattern(trained_checkpoint):
    names = sorted(p.name for p in trained_checkpoint.parent.glob("*.ckpt"))
    assert "last.ckpt" in names
    epoch, val_loss = trained_checkpoint.stem.split("-")[1:3]
    assert len(epoch) == 2 and epoch.isdigit()
    assert float(val_loss) > 0


def test_checkpoint_alone_transcribes_in_a_fresh_process(trained_checkpoint, tiny_corpus, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(trained_checkpoint, alone / "model.ckpt")
    audio = sorted((tiny_corpus / "audio").rglob("*.flac"))[:2]
    for path in audio:
        shutil.copy(path, alone / path.name)
    names = [path.name for path in audio]

    output = _finish(_rnnt("transcribe", "--checkpoint", "model.ckpt", *names, cwd=alone))
    lines = [line for line in output.splitlines() if "\t" in line]
    assert [line.split("\t")[0] for line in lines] == names

    # The same transcripts as decoding in this process: the checkpoint holds everything.
    from rnnt.transcribe import AudioItem, transcribe

    model, tokenizer = load_checkpoint(alone / "model.ckpt")
    expected, _ = transcribe(model, tokenizer, [AudioItem(str(alone / n)) for n in names])
    assert [line.split("\t", 1)[1] for line in lines] == expected


def test_transcribe_manifest_adds_pred_text_and_reports_wer(
    trained_checkpoint, tiny_corpus, tmp_path
):
    output_manifest = tmp_path / "pred.jsonl"
    output = _finish(
        _rnnt(
            "transcribe",
            "--checkpoint",
            str(trained_checkpoint),
            "--manifest",
            str(tiny_corpus / "test.jsonl"),
            "--output",
            str(output_manifest),
        )
    )
    assert "WER" in output and "real-time factor" in output
    import json

    inputs = [json.loads(line) for line in (tiny_corpus / "test.jsonl").read_text().splitlines()]
    outputs = [json.loads(line) for line in output_manifest.read_text().splitlines()]
    assert len(outputs) == len(inputs)
    for before, after in zip(inputs, outputs, strict=True):
        assert after["text"] == before["text"]
        assert isinstance(after["pred_text"], str)


def test_tensorboard_logs_losses_wer_lr_grad_norm_and_examples(trained_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = trained_checkpoint.parent.parent  # <root>/run, checkpoints/ inside it
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_wer", "grad_norm"} <= scalars
    assert any(tag.startswith("lr") for tag in scalars)
    examples = events.Tensors("val_examples/text_summary")
    assert examples and b"**ref:**" in examples[-1].tensor_proto.string_val[0]


def test_non_finite_losses_skip_steps_then_stop_the_run(tiny_corpus, tmp_path):
    from rnnt.train import NonFiniteLossError

    config = tiny_fit_config(tiny_corpus, tmp_path, limit_val_batches=0)
    config["model"]["max_nonfinite_steps"] = 3
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    module = cli.model
    before = {name: p.detach().clone() for name, p in module.named_parameters()}

    def nan_loss(*args, **kwargs) -> torch.Tensor:
        return next(module.parameters()).sum() * float("nan")

    module.model.forward = nan_loss
    with pytest.raises(NonFiniteLossError, match="3 training steps in a row"):
        cli.trainer.fit(module, datamodule=cli.datamodule)
    # Lightning still counts the skipped steps, but no gradient reached the weights.
    for name, parameter in module.named_parameters():
        assert torch.equal(parameter, before[name]), name


def _module_with_trainer(tokenizer_path: Path, world_size: int):
    """A TransducerModule whose trainer is a stand-in: ranks that all agree, no logging."""
    from types import SimpleNamespace

    from rnnt.train import TransducerModule
    from tests.tiny import TINY_MODEL

    module = TransducerModule(str(tokenizer_path), model_overrides=TINY_MODEL)
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    connector = SimpleNamespace(should_update_logs=False)
    module._trainer = SimpleNamespace(
        strategy=strategy,
        world_size=world_size,
        global_step=0,
        log_every_n_steps=50,
        _logger_connector=connector,
    )
    return module


def _batch(counted: list[bool]) -> dict:
    size = len(counted)
    return {
        "audio": torch.randn(size, 16_000) * 0.1,
        "audio_lengths": torch.full((size,), 16_000),
        "targets": torch.ones(size, 3, dtype=torch.int64),
        "target_lengths": torch.full((size,), 3),
        "texts": ["a"] * size,
        "ids": [f"x:{i}" for i in range(size)],
        "counted": torch.tensor(counted),
        "host_audio_lengths": [16_000] * size,
        "host_target_lengths": [3] * size,
        "host_counted": list(counted),
    }


def test_ddp_stand_in_batch_exchanges_zero_gradients(tiny_corpus):
    module = _module_with_trainer(tiny_corpus / "tokenizer.model", world_size=2)
    loss = module.training_step(_batch([False, False]), 0)
    assert loss.item() == 0
    loss.backward()
    # Every parameter takes part (DDP waits for all of them), with a zero gradient.
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and not parameter.grad.any(), name


def _one_step(module, batch: dict, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """What Lightning does in one step: training_step, backward, the hook, the optimizer."""
    optimizer.zero_grad()
    loss = module.training_step(batch, 0)
    loss.backward()
    module.on_before_optimizer_step(optimizer)
    optimizer.step()
    return loss


def test_a_non_finite_step_is_skipped_on_the_device_by_fused_adamw(tiny_corpus):
    from rnnt.op_counts import count_ops
    from rnnt.optim import adamw, is_fused

    module = _module_with_trainer(tiny_corpus / "tokenizer.model", world_size=1)
    optimizer = adamw(module.named_parameters(), weight_decay=0.1, lr=1e-3)
    assert is_fused(optimizer)  # CPU and CUDA have the fused kernel (torch >= 2.4)
    _one_step(module, _batch([True, True]), optimizer)  # moments and step counts exist now
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    state = {k: v.clone() for k, v in optimizer.state[next(module.parameters())].items()}
    module.model.forward = lambda *args, **kwargs: next(module.parameters()).sum() * float("nan")
    with count_ops() as counts:
        loss = _one_step(module, _batch([True]), optimizer)
    assert not torch.isfinite(loss)
    # Backward ran on the NaN loss, yet nothing moved: weights, moments, step counts.
    for name, parameter in module.named_parameters():
        assert torch.equal(parameter, before[name]), name
    after = optimizer.state[next(module.parameters())]
    assert all(torch.equal(after[key], value) for key, value in state.items())
    # Decided on the device: the host never read the loss or the flag.
    assert counts.host_reads == 0, counts.reads_by_kind


def test_without_fused_adamw_a_non_finite_step_drops_the_gradients(tiny_corpus):
    module = _module_with_trainer(tiny_corpus / "tokenizer.model", world_size=2)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, foreach=True)
    module.model.forward = lambda *args, **kwargs: next(module.parameters()).sum() * float("nan")
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    loss = _one_step(module, _batch([True]), optimizer)  # DDP forbids returning None
    assert loss is not None and not torch.isfinite(loss)
    # AdamW skips parameters without gradients: no update, no weight decay, no moment step.
    assert all(parameter.grad is None for parameter in module.parameters())
    for name, parameter in module.named_parameters():
        assert torch.equal(parameter, before[name]), name


def test_adamw_is_fused_only_where_the_device_has_the_kernel():
    from rnnt.optim import adamw, is_fused

    cpu = torch.nn.Linear(2, 2)
    assert is_fused(adamw(cpu.named_parameters(), weight_decay=0.1))
    # Float16 training's gradient scaler unscales inside a fused step, after clipping.
    assert not is_fused(adamw(cpu.named_parameters(), weight_decay=0.1, allow_fused=False))
    meta = torch.nn.Linear(2, 2, device="meta")  # a device without it: foreach, no error
    optimizer = adamw(meta.named_parameters(), weight_decay=0.1)
    assert not is_fused(optimizer)
    # Weight decay shrinks weight matrices only, not biases (nor norms and embeddings).
    assert [len(group["params"]) for group in optimizer.param_groups] == [1, 1]
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.1, 0.0]


def test_non_finite_guard_counts_on_the_device_and_raises_on_a_run_seen_late(caplog):
    from rnnt.op_counts import count_ops
    from rnnt.optim import NonFiniteGuard, NonFiniteLossError

    guard = NonFiniteGuard(max_in_a_row=3)
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    with count_ops() as counts:
        flags = []
        for step, loss in enumerate([one, nan, nan, one]):
            flags.append(guard.update(loss, step))
            guard.found_inf = None  # the optimizer took it
    assert counts.host_reads == 0
    assert [float(flag) for flag in flags] == [0, 1, 1, 0]
    with caplog.at_level("WARNING", logger="rnnt.optim"):
        guard.check()  # a run of 2: a warning, no error
    assert (
        "step 2: non-finite loss (nan), step skipped (2 in a row); 2 steps skipped" in caplog.text
    )
    for step in range(4, 7):  # a run of 3, over before the check looks
        guard.update(nan, step)
        guard.found_inf = None
    guard.update(one, 7)
    with pytest.raises(NonFiniteLossError, match="3 training steps in a row"):
        guard.check()


def test_non_finite_guard_taints_an_accumulated_update_by_any_of_its_losses():
    from rnnt.optim import NonFiniteGuard

    guard = NonFiniteGuard(max_in_a_row=3)
    guard.update(torch.tensor(float("inf")), 0)
    assert float(guard.update(torch.tensor(1.0), 0)) == 1.0  # micro-batches of one update


def test_a_stop_for_non_finite_losses_may_come_one_logging_interval_late(tiny_corpus, tmp_path):
    from rnnt.train import NonFiniteLossError

    config = tiny_fit_config(tiny_corpus, tmp_path, limit_val_batches=0, log_every_n_steps=4)
    config["model"]["max_nonfinite_steps"] = 2
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    module = cli.model
    module.model.forward = lambda *args, **kwargs: next(module.parameters()).sum() * float("nan")
    with pytest.raises(NonFiniteLossError, match="4 training steps in a row"):
        cli.trainer.fit(module, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 4  # read at the first logging step, not at step 2


@pytest.mark.parametrize("by_value", [False, True])
def test_clip_gradients_computes_the_norm_once_for_clipping_and_the_log(by_value):
    from rnnt.op_counts import count_ops
    from rnnt.optim import clip_gradients

    layer = torch.nn.Linear(50, 50)
    layer(torch.randn(8, 50)).square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    expected = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    with count_ops() as counts:
        norm = clip_gradients(layer.parameters(), 0.01, by_value=by_value, measure=True)
    torch.testing.assert_close(norm, expected)  # the norm before clipping, for the log
    assert counts.host_reads == 0 and counts.by_op["_foreach_norm"] == 1
    clipped = torch.cat([p.grad.flatten() for p in layer.parameters()])
    if by_value:
        assert clipped.abs().max() <= 0.01
    else:
        torch.testing.assert_close(torch.linalg.vector_norm(clipped), torch.tensor(0.01))
    assert clip_gradients(layer.parameters(), 0.0, by_value=False, measure=False) is None


class _HostReadsPerStep(pl.Callback):
    """Host reads of tensor values from the start of each training step to the start of the
    next (its forward, backward, optimizer step, logging and progress bar), and whether the
    trainer logged at that step."""

    def __init__(self, counts) -> None:
        self.counts = counts
        self.starts: list[tuple[int, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from rnnt.callbacks import logs_this_step

        self.starts.append((self.counts.host_reads, logs_this_step(trainer)))

    def steps(self) -> list[tuple[int, bool]]:
        """(host reads, logging step?) of every step but the last."""
        return [(b[0] - a[0], a[1]) for a, b in itertools.pairwise(self.starts)]


# Reads at a logging step: the logger's three values (train_loss, train_audio_seconds,
# grad_norm), the progress bar's train_loss and the non-finite guard's counts.
HOST_READS_PER_LOGGING_STEP = 5


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_training_step_reads_no_device_value_outside_logging_steps(
    tiny_corpus, tmp_path, precision
):
    """Every read of a tensor value on the host would stall a GPU; outside the steps where the
    trainer logs, a step (gradient clipping, progress bar and checkpoint callbacks on) makes
    none. On this CPU every tensor is a host tensor, so every read is counted."""
    from rnnt.op_counts import count_ops

    config = tiny_fit_config(
        tiny_corpus,
        tmp_path,
        max_steps=7,
        limit_val_batches=0,
        log_every_n_steps=3,
        precision=precision,
    )
    config["trainer"]["enable_progress_bar"] = True
    # Audio is loaded and collated in a worker process, as in every real run (NUM_WORKERS):
    # host-only tensors, out of this process's count.
    config["data"].update(noise_path=None, num_workers=1)
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    assert cli.trainer.gradient_clip_val  # the default clipping takes part
    with count_ops() as counts:
        probe = _HostReadsPerStep(counts)
        cli.trainer.callbacks.append(probe)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    steps = probe.steps()
    assert [logging for _, logging in steps] == [False, False, True, False, False, True]
    assert [reads for reads, logging in steps if not logging] == [0, 0, 0, 0]
    assert [reads for reads, logging in steps if logging] == [HOST_READS_PER_LOGGING_STEP] * 2
    assert cli.trainer.optimizers[0].param_groups[0]["fused"]
    # The progress bar still shows the loss, as read at the last logging step.
    assert "train_loss=" in cli.trainer.progress_bar_callback.train_progress_bar.postfix


def test_loading_a_checkpoint_adopts_the_fields_that_give_its_weights_their_meaning(
    tiny_corpus,
):
    from rnnt.train import TransducerModule
    from tests.tiny import TINY_MODEL

    trained = TransducerModule(
        str(tiny_corpus / "tokenizer.model"),
        model_overrides={**TINY_MODEL, "joiner_activation": "relu"},
    )
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    # Built from a configuration that says otherwise (as `rnnt validate --ckpt_path` does).
    module = TransducerModule(str(tiny_corpus / "tokenizer.model"), model_overrides=TINY_MODEL)
    assert module.model.config.joiner_activation == "tanh"
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    assert module.model.config.joiner_activation == "relu"
    assert module.model.joiner.activation == "relu"


class _StartProbe(pl.Callback):
    """What the run holds when training starts: step, optimizer state and weights."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.global_step = trainer.global_step
        self.optimizer_state = trainer.optimizers[0].state_dict()["state"]
        self.weights = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def test_init_from_starts_a_new_run_from_the_checkpoints_weights_at_step_0(
    trained_checkpoint, tiny_corpus, tmp_path
):
    trained = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    assert trained["global_step"] > 1
    config = tiny_fit_config(tiny_corpus, tmp_path, max_steps=1, limit_val_batches=0)
    config["model"]["init_from"] = str(trained_checkpoint)
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    probe = _StartProbe()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    # Fine-tuning, not resuming: step 0, no optimizer moments, the checkpoint's weights.
    assert probe.global_step == 0 and probe.optimizer_state == {}
    assert probe.weights.keys() == {k.removeprefix("model.") for k in trained["state_dict"]}
    for key, value in probe.weights.items():
        assert torch.equal(value, trained["state_dict"][f"model.{key}"]), key
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1 and last["lr_schedulers"][0]["last_epoch"] == 1


def test_init_from_another_vocabulary_takes_every_weight_but_the_vocabulary_layers(
    trained_checkpoint, tiny_corpus, tmp_path, caplog
):
    from rnnt.data.tokenizer import train_tokenizer
    from rnnt.train import TransducerModule
    from tests.tiny import TINY_MODEL, TINY_VOCAB_SIZE

    other = train_tokenizer([tiny_corpus / "train.jsonl"], tmp_path / "other.model", 40)
    with caplog.at_level("WARNING", logger="rnnt.warm_start"):
        module = TransducerModule(
            str(other), model_overrides=TINY_MODEL, init_from=str(trained_checkpoint)
        )
    assert f"trained with another tokenizer ({TINY_VOCAB_SIZE} pieces" in caplog.text
    trained = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = module.model.state_dict()
    fresh = {k for k, v in weights.items() if v.shape != trained[f"model.{k}"].shape}
    assert any(key.startswith("joiner.") for key in fresh)  # the output layer: 41 classes now
    assert any(key.startswith("encoder.") for key in weights) and not any(
        key.startswith("encoder.") for key in fresh
    )
    for key in weights.keys() - fresh:
        assert torch.equal(weights[key], trained[f"model.{key}"]), key


def test_init_from_another_model_size_or_a_missing_file_is_a_one_line_error(
    trained_checkpoint, tiny_corpus, tmp_path, capsys
):
    from rnnt.checkpoint import CheckpointError
    from rnnt.cli import main
    from rnnt.train import TransducerModule
    from tests.tiny import TINY_MODEL

    with pytest.raises(CheckpointError, match=r"another model .*d_model=32 \(configured: 16\)"):
        TransducerModule(
            str(tiny_corpus / "tokenizer.model"),
            model_overrides={**TINY_MODEL, "d_model": 16},
            init_from=str(trained_checkpoint),
        )
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump(tiny_fit_config(tiny_corpus, tmp_path)))
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(SystemExit) as refused:
        main(["fit", "--config", str(config), "--model.init_from", str(missing)])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("rnnt fit: error: ") and error.count("\n") == 1
    assert str(missing) in error and "init_from" in error


class _NoSyncOutsideLogging(pl.Callback):
    """Makes any CUDA synchronisation an error from the start of each non-logging training
    step to the start of the next one (torch.cuda.set_sync_debug_mode); not in the last
    step, after which the run ends (checkpoint, epoch-end checks)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from rnnt.callbacks import logs_this_step

        last = trainer.global_step + 1 >= trainer.max_steps
        strict = not (logs_this_step(trainer) or last)
        torch.cuda.set_sync_debug_mode("error" if strict else "default")

    def on_train_end(self, trainer, pl_module) -> None:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_training_step_does_not_synchronize_outside_logging_steps(tiny_corpus, tmp_path):
    """The GPU form of the host-read count: bf16-mixed steps on CUDA where any
    synchronising call (a device read, a blocking copy either way) raises. The CTC term is
    off: ATen's CUDA CTC loss uploads the lengths with blocking copies whatever we give it."""
    from tests.tiny import TINY_MODEL

    config = tiny_fit_config(
        tiny_corpus,
        tmp_path,
        accelerator="gpu",
        precision="bf16-mixed",
        max_steps=7,
        limit_val_batches=0,
        log_every_n_steps=3,
    )
    config["model"]["model_overrides"] = {**TINY_MODEL, "ctc_weight": 0.0}
    config["data"].update(noise_path=None, num_workers=1)
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    cli.trainer.callbacks.append(_NoSyncOutsideLogging())
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert cli.trainer.global_step == 7
