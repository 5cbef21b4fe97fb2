"""Checkpoint files: atomic writes that survive SIGKILL, atomic links, safe reads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rnnt.checkpoint import (
    CheckpointError,
    link_checkpoint,
    read_checkpoint,
    remove_stale_temporaries,
    write_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 60


def _checkpoint(step: int, size: int = 1000) -> dict:
    """A dictionary with what ``read_checkpoint`` requires of an rnnt-lightning checkpoint."""
    return {
        "state_dict": {"model.weight": torch.full((size,), float(step))},
        "transducer_config": {"d_model": 4},
        "tokenizer_model": b"sentencepiece bytes",
        "global_step": step,
    }


def _temporaries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name.endswith(".tmp"))


def test_write_checkpoint_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    write_checkpoint(_checkpoint(1), path)
    write_checkpoint(_checkpoint(2), path)
    assert read_checkpoint(path)["global_step"] == 2
    assert _temporaries(path.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# The child writes a good last.ckpt, then starts a second save whose serialisation stops half
# way (as a process does when SIGKILL or the OOM killer strikes mid-write) and waits.
_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import torch
    import rnnt.checkpoint as checkpoint
    from tests.test_checkpoint import _checkpoint

    path = sys.argv[1]
    checkpoint.write_checkpoint(_checkpoint(1), path)

    def half_save(obj, file):
        data = torch.ones(1_000_000).numpy().tobytes()
        file.write(data[: len(data) // 2])
        file.flush()
        print("WRITING", flush=True)
        time.sleep(600)

    checkpoint.torch.save = half_save
    checkpoint.write_checkpoint(_checkpoint(2), path)
    """
)


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "WRITING"
        (partial,) = _temporaries(tmp_path)  # the half-written new checkpoint, not last.ckpt
        assert partial.stat().st_size > 0
        child.kill()
        child.wait(timeout=PROCESS_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
    assert read_checkpoint(path)["global_step"] == 1
    # Lightning's `--ckpt_path last` only considers "last*.ckpt": the temporary is never taken.
    assert not partial.name.endswith(".ckpt")
    # The next save clears what the killed writer left behind.
    write_checkpoint(_checkpoint(3), path)
    assert _temporaries(tmp_path) == []
    assert read_checkpoint(path)["global_step"] == 3


def test_remove_stale_temporaries_spares_own_writes_and_other_files(tmp_path):
    stale = tmp_path / ".last.ckpt.999999999.0123abcd.tmp"
    own = tmp_path / f".last.ckpt.{os.getpid()}.0123abcd.tmp"
    unrelated = tmp_path / "notes.tmp"
    for path in (stale, own, unrelated):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert own.exists() and unrelated.exists()


def test_link_checkpoint_swaps_a_file_for_a_relative_link(tmp_path):
    best = tmp_path / "rnnt-03-1.23.ckpt"
    write_checkpoint(_checkpoint(7), best)
    last = tmp_path / "last.ckpt"
    write_checkpoint(_checkpoint(5), last)
    link_checkpoint(best, last)
    assert last.is_symlink() and os.readlink(last) == best.name
    assert read_checkpoint(last)["global_step"] == 7
    assert _temporaries(tmp_path) == []


def test_reading_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.ckpt"
    checkpoint = _checkpoint(1)
    checkpoint["hyper_parameters"] = Payload()
    torch.save(checkpoint, evil)
    with pytest.raises(CheckpointError, match="objects other than tensors and plain data"):
        read_checkpoint(evil)
    assert not marker.exists()
