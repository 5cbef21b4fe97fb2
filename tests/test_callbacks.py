"""Crash safety of `rnnt fit`: SIGTERM saves and exits cleanly, resume picks up the exact batch,
bad `--ckpt_path` files are one-line errors, `save_last="link"` is atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rnnt.callbacks import AtomicCheckpointIO, StopOnSignal
from rnnt.checkpoint import read_checkpoint
from rnnt.cli import main
from rnnt.lightning_cli import make_cli
from tests.probes import BatchRecorder, SendSignal
from tests.tiny import tiny_fit_config

REPO = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 240


def _config(corpus: Path, root: Path, **trainer) -> dict:
    # Small batches and a one-symbol decoding cap keep an untrained model's steps quick.
    config = tiny_fit_config(corpus, root, **trainer)
    config["data"].update(noise_path=None, max_batch_duration=4.0)
    config["model"]["max_symbols_per_frame"] = 1
    return config


def _fit(config: dict, root: Path, *callbacks, ckpt_path: str | None = None):
    config = {**config, "trainer": {**config["trainer"], "default_root_dir": str(root)}}
    config["trainer"]["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(root), "name": "run", "version": ""},
    }
    cli = make_cli(config, run=False, root_dir=str(root))
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli


def _batches(folder: Path, split: str = "train") -> list[dict]:
    path = folder / "batches-rank0.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["split"] == split]


def _last(root: Path) -> dict:
    return torch.load(root / "run" / "checkpoints" / "last.ckpt", weights_only=True)


def test_cli_installs_atomic_io_and_stop_on_signal_next_to_user_callbacks(tiny_corpus, tmp_path):
    config = _config(tiny_corpus, tmp_path)
    config["trainer"]["callbacks"] = [
        {"class_path": "tests.probes.BatchRecorder", "init_args": {"out_dir": str(tmp_path)}}
    ]
    trainer = make_cli(config, run=False, root_dir=str(tmp_path)).trainer
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    kinds = {type(callback) for callback in trainer.callbacks}
    assert {StopOnSignal, BatchRecorder} <= kinds


def test_sigterm_mid_epoch_saves_then_resume_trains_exactly_the_remaining_batches(
    tiny_corpus, tmp_path
):
    config = _config(
        tiny_corpus, tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0
    )
    whole = tmp_path / "whole"
    _fit(config, whole, BatchRecorder(str(whole)))
    expected = [(record["step"], record["ids"]) for record in _batches(whole)]
    steps_per_epoch = sum(1 for record in _batches(whole) if record["epoch"] == 0)
    stop_step = steps_per_epoch + 1  # the second batch of the second epoch

    parts = tmp_path / "parts"
    with pytest.raises(SystemExit) as stopped:
        _fit(config, parts, BatchRecorder(str(parts)), SendSignal(train_step=stop_step))
    assert stopped.value.code is None  # exit status 0
    saved = _last(parts)
    assert saved["global_step"] == stop_step + 1  # the signalled batch was finished
    _fit(config, parts, BatchRecorder(str(parts)), ckpt_path="last")

    resumed = [(record["step"], record["ids"]) for record in _batches(parts)]
    assert resumed == expected  # same batches in the same order, none repeated or lost
    assert _last(parts)["global_step"] == _last(whole)["global_step"] == 2 * steps_per_epoch


def test_sigterm_mid_validation_stops_before_the_validation_ends(tiny_corpus, tmp_path, caplog):
    config = _config(
        tiny_corpus, tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=3
    )
    config["data"]["batch_size"] = 1  # one utterance per batch
    probe = tmp_path / "probe"
    with pytest.raises(SystemExit), caplog.at_level("WARNING", logger="rnnt.callbacks"):
        _fit(config, tmp_path, BatchRecorder(str(probe)), SendSignal(val_batch=1))
    assert len(_batches(probe, "val")) == 2  # stopped after validation batch 1 of 3
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert _last(tmp_path)["global_step"] == 2
    assert f"saved {last}" in caplog.text and "--ckpt_path last" in caplog.text

    # The interrupted validation is abandoned; training and the next validation go on.
    _fit(config, tmp_path, BatchRecorder(str(probe)), ckpt_path="last")
    assert _last(tmp_path)["global_step"] == 4
    assert [record["epoch"] for record in _batches(probe, "val")[2:]] == [1] * 3


def test_sigterm_to_the_whole_job_exits_0_with_a_resumable_checkpoint(tiny_corpus, tmp_path):
    """What SLURM does at a time limit: SIGTERM to every process of the job, the data-loader
    workers included (which must not die first and fail the run)."""
    config = _config(tiny_corpus, tmp_path, max_epochs=1000, limit_val_batches=0)
    config["data"]["num_workers"] = 1
    config["trainer"]["callbacks"] = [_probe_recorder(tmp_path / "probe")]
    config_path = tmp_path / "fit.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    job = subprocess.Popen(
        [sys.executable, "-m", "rnnt", "fit", "--config", str(config_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, like a job
    )
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while len(_batches(tmp_path / "probe")) < 2:
            assert job.poll() is None, job.stdout.read()[-4000:]
            assert time.monotonic() < deadline, "training did not start in time"
            time.sleep(0.1)
        os.killpg(job.pid, signal.SIGTERM)
        output, _ = job.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, output[-4000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert "SIGTERM received: stopped after training batch" in output
    assert f"saved {last}" in output and "--ckpt_path last" in output
    assert read_checkpoint(last)["global_step"] >= 2


def _probe_recorder(folder: Path) -> dict:
    return {"class_path": "tests.probes.BatchRecorder", "init_args": {"out_dir": str(folder)}}


def _write_config(corpus: Path, root: Path) -> Path:
    path = root / "fit.yaml"
    path.write_text(yaml.safe_dump(_config(corpus, root, max_epochs=1)))
    return path


def _bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    truncated = folder / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    foreign = folder / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)

    class Payload:
        def __reduce__(self):
            return (Path.touch, (folder / "pickled code ran",))

    pickled = folder / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, pickled)
    return {
        "truncated": (truncated, "not a readable checkpoint"),
        "foreign": (foreign, "not an rnnt-lightning checkpoint"),
        "pickled": (pickled, "objects other than tensors and plain data"),
    }


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_bad_ckpt_path_is_a_one_line_error_and_runs_no_pickled_code(
    command, tiny_corpus, tmp_path, capsys
):
    config = _write_config(tiny_corpus, tmp_path)
    for path, message in _bad_checkpoints(tmp_path).values():
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--config", str(config), "--ckpt_path", str(path)])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert f"rnnt {command}: error: {path}: " in error and message in error
        assert "Traceback" not in error
    assert not (tmp_path / "pickled code ran").exists()


def test_save_last_link_points_last_at_the_newest_checkpoint(tiny_corpus, tmp_path):
    config = _config(
        tiny_corpus, tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=0
    )
    config["checkpoint"] = {
        "save_last": "link",
        "save_top_k": -1,
        "monitor": None,
        "filename": "rnnt-{epoch:02d}",
    }
    _fit(config, tmp_path)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_symlink() and os.readlink(last) == "rnnt-01.ckpt"
    assert _last(tmp_path)["epoch"] == 1
