"""One live `rnnt fit` per run folder: a second is refused in one line, a dead run's lock is
taken over, the lock goes when the run ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rnnt.cli import main
from rnnt.constants import RUN_LOCK_FILE
from rnnt.run_lock import RunLock, hold_run_folder
from tests.tiny import tiny_fit_config

REPO = Path(__file__).resolve().parents[1]
HOLD_S = 120  # the holder process sleeps at most this long (the test kills it first)


def _hold_in_another_process(folder: Path) -> subprocess.Popen:
    """A live process holding ``folder``'s lock (as a running `rnnt fit` would)."""
    code = (
        "import sys, time\n"
        "from rnnt.run_lock import RunLock\n"
        f"RunLock.acquire({str(folder)!r})\n"
        "print('locked', flush=True)\n"
        f"time.sleep({HOLD_S})\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_live_fit_into_the_same_run_folder_is_refused_in_one_line(
    tiny_corpus, tmp_path, capsys
):
    config = tmp_path / "fit.yaml"
    config.write_text(
        yaml.safe_dump(tiny_fit_config(tiny_corpus, tmp_path, max_steps=1, limit_val_batches=0))
    )
    run = tmp_path / "run"
    holder = _hold_in_another_process(run)
    try:
        with pytest.raises(SystemExit) as refused:
            main(["fit", "--config", str(config)])
    finally:
        holder.kill()
        holder.wait()
    assert refused.value.code == 2
    stderr = capsys.readouterr().err
    error = [line for line in stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Traceback" not in stderr
    assert error[0].startswith(f"rnnt fit: error: {run} is in use by another run")
    assert f"pid {holder.pid} on {socket.gethostname()}" in error[0]
    assert not (run / "checkpoints").exists()  # nothing of the refused run was written there

    # The holder is gone (killed: its lock file stays, the kernel freed the flock): a new
    # fit takes the folder over, trains, and leaves no lock behind.
    main(["fit", "--config", str(config)])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / RUN_LOCK_FILE).exists()


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "yesterday"}
    (tmp_path / RUN_LOCK_FILE).write_text(json.dumps(stale))
    with caplog.at_level("WARNING", logger="rnnt.run_lock"):
        lock = RunLock.acquire(tmp_path)
    assert f"taking over the lock left by pid {stale['pid']}" in caplog.text
    holder = json.loads((tmp_path / RUN_LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    lock.release()
    assert not (tmp_path / RUN_LOCK_FILE).exists()
    lock.release()  # twice is harmless


def test_a_held_lock_refuses_any_other_taker_until_released(tmp_path):
    lock = RunLock.acquire(tmp_path)
    with pytest.raises(ValueError, match=f"{tmp_path} is in use by another run .pid {os.getpid()}"):
        RunLock.acquire(tmp_path)
    lock.release()
    RunLock.acquire(tmp_path).release()


def test_without_flock_a_live_pid_on_this_host_still_holds_the_folder(tmp_path, monkeypatch):
    from rnnt import run_lock

    monkeypatch.setattr(run_lock, "fcntl", None)  # a file system without flock: the pid decides
    live = {"pid": os.getppid(), "host": socket.gethostname()}
    (tmp_path / RUN_LOCK_FILE).write_text(json.dumps(live))
    with pytest.raises(ValueError, match=f"pid {live['pid']} on"):
        RunLock.acquire(tmp_path)
    (tmp_path / RUN_LOCK_FILE).write_text(json.dumps({**live, "pid": _dead_pid()}))
    RunLock.acquire(tmp_path).release()


def test_only_global_rank_0_locks_and_the_lock_goes_on_an_exception(tmp_path):
    logger = SimpleNamespace(log_dir=str(tmp_path / "run"))
    other_rank = SimpleNamespace(is_global_zero=False, logger=logger)
    with hold_run_folder(other_rank) as lock:
        assert lock is None and not (tmp_path / "run" / RUN_LOCK_FILE).exists()
    rank_0 = SimpleNamespace(is_global_zero=True, logger=logger)
    with pytest.raises(RuntimeError), hold_run_folder(rank_0) as lock:
        assert (tmp_path / "run" / RUN_LOCK_FILE).exists()
        raise RuntimeError("training failed")
    assert not (tmp_path / "run" / RUN_LOCK_FILE).exists()
