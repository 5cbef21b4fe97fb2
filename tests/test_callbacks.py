"""Crash safety of `rnnt fit`: SIGTERM and Ctrl-C save and exit cleanly, resume picks up the exact
batch, last.ckpt is written from the first step interval (and every few minutes) and is never
behind, bad `--ckpt_path` files are one-line errors, `save_last="link"` is atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from rnnt import model_checkpoint
from rnnt.callbacks import AtomicCheckpointIO, EstimatingProgressBar, StopOnSignal
from rnnt.checkpoint import read_checkpoint
from rnnt.cli import main
from rnnt.lightning_cli import make_cli
from rnnt.model_checkpoint import AtomicModelCheckpoint
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


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_the_whole_job_exits_0_with_a_resumable_checkpoint(
    signal_name, tiny_corpus, tmp_path
):
    """What SLURM does at a time limit (SIGTERM) and what Ctrl-C in a terminal does (SIGINT):
    the signal goes to every process of the job, the data-loader workers included (which must
    not die first and fail the run)."""
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
        os.killpg(job.pid, signal.Signals[signal_name])
        output, _ = job.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, output[-4000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"{signal_name} received: stopped after training batch" in output
    assert f"saved {last}" in output and "--ckpt_path last" in output
    assert read_checkpoint(last)["global_step"] >= 2


def test_ctrl_c_mid_epoch_saves_the_finished_batch_and_exits_0(tiny_corpus, tmp_path, caplog):
    config = _config(tiny_corpus, tmp_path, max_epochs=1, limit_val_batches=0)
    with pytest.raises(SystemExit) as stopped, caplog.at_level("WARNING", logger="rnnt.callbacks"):
        _fit(config, tmp_path, SendSignal(train_step=2, signal="SIGINT"))
    assert stopped.value.code is None  # exit status 0, not Lightning's 1 after Ctrl-C
    assert _last(tmp_path)["global_step"] == 3  # the interrupted batch was finished and saved
    assert "SIGINT received: stopped after training batch 2" in caplog.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back


def test_a_second_ctrl_c_stops_at_once_and_workers_leave_the_decision_to_the_trainer():
    stop = StopOnSignal()
    stop._owner_pid = os.getpid()
    stop._handle(signal.SIGINT, None)
    assert stop.received is signal.SIGINT
    with pytest.raises(KeyboardInterrupt):  # Lightning: exit 1, nothing saved
        stop._handle(signal.SIGINT, None)
    # A data-loader worker forked from the trainer inherits the handler: it does nothing there.
    worker_copy = StopOnSignal()
    worker_copy._owner_pid = os.getpid() + 1
    worker_copy._handle(signal.SIGINT, None)
    worker_copy._handle(signal.SIGINT, None)
    assert worker_copy.received is None


def test_step_interval_checkpoint_of_epoch_0_survives_sigkill_and_resume_continues_there(
    tiny_corpus, tmp_path
):
    """A long first epoch: `--checkpoint.every_n_train_steps` writes last.ckpt from the first
    interval on, before any validation (Lightning waits for the first val_loss); a SIGKILL
    then loses at most one interval, and `--ckpt_path last` goes on with the next batch."""
    probe = tmp_path / "probe"
    config = _config(tiny_corpus, tmp_path, max_epochs=1, limit_val_batches=1)
    config["trainer"]["callbacks"] = [_probe_recorder(probe)]
    config["checkpoint"] = {"every_n_train_steps": 2}
    config_path = tmp_path / "fit.yaml"
    config_path.write_text(yaml.safe_dump(config))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "rnnt", "fit", "--config", str(config_path)]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while True:
            assert job.poll() is None, job.stdout.read()[-4000:]
            assert time.monotonic() < deadline, "no step-interval checkpoint was written"
            time.sleep(0.05)
            if not last.exists():
                continue
            job.send_signal(signal.SIGSTOP)  # frozen: what it saved and trained holds still
            saved_step = read_checkpoint(last)["global_step"]
            killed_run = {record["step"]: record["ids"] for record in _batches(probe)}
            if saved_step in killed_run:  # it had started the batch after the save
                break
            job.send_signal(signal.SIGCONT)
    finally:
        job.kill()  # SIGKILL: nothing runs after it
        job.communicate()
    killed = read_checkpoint(last)
    assert killed["global_step"] == saved_step
    assert killed["epoch"] == 0 and saved_step % 2 == 0 and saved_step > 0
    (checkpoint_state,) = killed["callbacks"].values()
    assert checkpoint_state["best_model_score"] is None  # no validation has run yet
    # The data position is saved too: the resumed epoch goes on after the batches trained on.
    assert killed["TransducerDataModule"] == {"train_epoch": 0, "train_batches_done": saved_step}

    config["trainer"]["max_steps"] = saved_step + 2
    config["trainer"]["callbacks"] = [_probe_recorder(tmp_path / "resumed")]
    config_path.write_text(yaml.safe_dump(config))
    output, _ = subprocess.Popen(
        [*command, "--ckpt_path", "last"], env=env, stdout=subprocess.PIPE, text=True
    ).communicate(timeout=PROCESS_TIMEOUT_S)
    resumed = _batches(tmp_path / "resumed")
    assert [record["step"] for record in resumed][:2] == [saved_step, saved_step + 1], output
    assert resumed[0]["ids"] == killed_run[saved_step]  # the very batch the killed run was on
    assert read_checkpoint(last)["global_step"] == saved_step + 2


class _LastCheckpointProbe(pl.Callback):
    """Records, at the start of each training batch, the global step stored in last.ckpt."""

    def __init__(self, last: Path, clock: list[float], jump_at_step: int, minutes: float):
        self.last, self.clock, self.jump_at_step, self.minutes = last, clock, jump_at_step, minutes
        self.seen: list[int | None] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(read_checkpoint(self.last)["global_step"] if self.last.exists() else None)
        if trainer.global_step == self.jump_at_step:
            self.clock[0] += self.minutes  # this batch takes "half an hour"


def test_last_ckpt_is_written_after_save_last_every_minutes_of_training(
    tiny_corpus, tmp_path, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr(model_checkpoint, "_minutes", lambda: clock[0])
    config = _config(tiny_corpus, tmp_path, max_steps=5, limit_val_batches=0)
    config["checkpoint"] = {"save_last_every_minutes": 30}
    probe = _LastCheckpointProbe(tmp_path / "run" / "checkpoints" / "last.ckpt", clock, 2, 31)
    _fit(config, tmp_path, probe)
    # Minute 31 passes during the batch of step 2: last.ckpt at step 3, nothing before.
    assert probe.seen == [None, None, None, 3, 3]
    assert _last(tmp_path)["global_step"] == 5  # and at the end of training


def test_timed_saves_are_off_with_0_or_null_and_a_negative_interval_is_a_one_line_error(
    monkeypatch,
):
    from types import SimpleNamespace

    clock = [1000.0]
    monkeypatch.setattr(model_checkpoint, "_minutes", lambda: clock[0])
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision)
    trainer = SimpleNamespace(strategy=strategy)
    for minutes, due in [(30, True), (0, False), (None, False)]:
        callback = AtomicModelCheckpoint(save_last_every_minutes=minutes)
        clock[0] += 1e6
        assert callback._timed_save_due(trainer) is due, minutes
    with pytest.raises(ValueError, match="save_last_every_minutes -1 must be >= 0"):
        AtomicModelCheckpoint(save_last_every_minutes=-1)


def test_a_run_stopped_by_max_steps_mid_epoch_names_no_file_with_a_stale_val_loss(
    tiny_corpus, tmp_path
):
    config = _config(tiny_corpus, tmp_path, max_epochs=5, max_steps=4, limit_train_batches=3)
    config["trainer"]["limit_val_batches"] = 1
    _fit(config, tmp_path)
    names = sorted(path.name for path in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    # Epoch 0 validated at step 3; step 4 (epoch 1) never was: no "rnnt-01-<epoch 0's loss>".
    assert len(names) == 2 and names[0] == "last.ckpt" and names[1].startswith("rnnt-00-")
    assert _last(tmp_path)["global_step"] == 4  # but last.ckpt has the final step


def test_last_ckpt_follows_every_epoch_even_when_no_best_file_is_saved(tiny_corpus, tmp_path):
    config = _config(tiny_corpus, tmp_path, max_epochs=2, limit_train_batches=2)
    config["trainer"]["limit_val_batches"] = 1
    # mode "max" on a falling loss: only epoch 0 is ever the best; Lightning then left
    # last.ckpt at epoch 0, and a crash later resumed from there, however far back.
    config["checkpoint"] = {"save_top_k": 1, "mode": "max"}
    _fit(config, tmp_path)
    saved = {
        path.name: read_checkpoint(path)["global_step"]
        for path in (tmp_path / "run" / "checkpoints").glob("*.ckpt")
    }
    assert saved.pop("last.ckpt") == 4
    assert list(saved.values()) == [2]


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


class _TotalRecorder(pl.Callback):
    """Records the progress bar's training total and the batches an epoch really had."""

    def __init__(self) -> None:
        self.totals: list[float] = []
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.totals.append(trainer.progress_bar_callback.total_train_batches)
        self.batches += 1


def test_training_progress_bar_shows_an_estimated_total_not_a_question_mark(tiny_corpus, tmp_path):
    config = _config(tiny_corpus, tmp_path, max_epochs=1, limit_val_batches=0)
    config["trainer"]["enable_progress_bar"] = True
    recorder = _TotalRecorder()
    cli = _fit(config, tmp_path / "run", recorder)
    assert type(cli.trainer.progress_bar_callback) is EstimatingProgressBar
    total = recorder.totals[0]
    assert total != float("inf") and 0.5 * recorder.batches <= total <= 2 * recorder.batches
