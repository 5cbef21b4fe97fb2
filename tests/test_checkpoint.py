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
    MODEL_CONFIG_KEY,
    STATE_DICT_PREFIX,
    TOKENIZER_KEY,
    CheckpointError,
    check_device,
    check_weights_fit,
    link_checkpoint,
    load_checkpoint,
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


def _garbage(folder: Path) -> dict[str, Path]:
    """Files that are not checkpoints; torch.load raised a different exception for each."""
    import pickle
    import zipfile

    import numpy as np
    import soundfile as sf

    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "six.txt").write_text("hello\n")  # KeyError: 101
    sf.write(folder / "a.wav", np.zeros(1600, dtype=np.float32), 16000)  # IndexError
    with zipfile.ZipFile(folder / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "not torch's")  # RuntimeError
    marker = folder / "pickled code ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "code.pkl").write_bytes(pickle.dumps(Payload()))  # UnpicklingError
    (folder / "runs").mkdir()
    return {
        name: folder / name
        for name in ("empty.ckpt", "six.txt", "a.wav", "other.zip", "code.pkl", "runs")
    }


@pytest.mark.parametrize("mmap", [False, True])
def test_any_file_that_is_not_a_checkpoint_is_one_checkpoint_error_naming_it(tmp_path, mmap):
    for name, path in _garbage(tmp_path).items():
        with pytest.raises(CheckpointError) as error:
            read_checkpoint(path, mmap=mmap)
        message = str(error.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, name
    assert not (tmp_path / "pickled code ran").exists()


def test_the_message_says_what_kind_of_wrong_file(tmp_path):
    files = _garbage(tmp_path)
    with pytest.raises(CheckpointError, match="empty file"):
        read_checkpoint(files["empty.ckpt"])
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        read_checkpoint(files["runs"])
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint.*\(KeyError\)"):
        read_checkpoint(files["six.txt"])  # the original exception's type is kept
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint.*\(IndexError\)"):
        read_checkpoint(files["a.wav"])


def test_check_device_refuses_what_this_machine_lacks(monkeypatch):
    assert check_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ValueError,
        match=r"^cuda: CUDA is not available on this machine "
        r"\(torch.cuda.is_available\(\) is False\)",
    ):
        check_device("cuda")
    with pytest.raises(ValueError, match="^gpu7: not a device name; use cpu, cuda"):
        check_device("gpu7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        check_device("cuda:2")


def test_a_good_checkpoint_on_a_missing_device_blames_the_device_not_the_file(
    tmp_path, monkeypatch
):
    path = tmp_path / "good.ckpt"
    torch.save(_checkpoint(1), path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available") as error:
        read_checkpoint(path, map_location="cuda")
    assert not isinstance(error.value, CheckpointError)  # the file is fine
    assert read_checkpoint(path)["global_step"] == 1


def _model_and_checkpoint(tokenizer, **overrides):
    from rnnt.models.transducer import Transducer, config_from_preset
    from tests.tiny import TINY_MODEL

    config = config_from_preset("tiny", tokenizer.num_classes, **{**TINY_MODEL, **overrides})
    model = Transducer(config)
    checkpoint = {
        "state_dict": {STATE_DICT_PREFIX + k: v for k, v in model.state_dict().items()},
        MODEL_CONFIG_KEY: config.to_dict(),
        TOKENIZER_KEY: tokenizer.model_bytes,
    }
    return model, checkpoint


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Three tokenizers of one text: unigram 30 and 40 pieces, bpe 40 pieces."""
    import json
    import random

    from rnnt.data.tokenizer import Tokenizer, train_tokenizer

    folder = tmp_path_factory.mktemp("tokenizers")
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "zebras",
        "quietly",
        "watch",
    ]
    rng = random.Random(0)
    manifest = folder / "text.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "audio_filepath": "a.wav",
                    "duration": 1.0,
                    "text": " ".join(rng.choices(words, k=9)),
                }
            )
            + "\n"
            for _ in range(300)
        )
    )
    made = {}
    for name, size, kind in [("u30", 30, "unigram"), ("u40", 40, "unigram"), ("b40", 40, "bpe")]:
        made[name] = Tokenizer.load(
            train_tokenizer([manifest], folder / f"{name}.model", size, kind)
        )
    return made


def test_weights_fit_check_names_both_vocabularies_and_init_from(tokenizers):
    model, checkpoint = _model_and_checkpoint(tokenizers["u30"])
    check_weights_fit(checkpoint, model, tokenizers["u30"], "a.ckpt")  # its own: fine
    configured, _ = _model_and_checkpoint(tokenizers["u40"])
    with pytest.raises(CheckpointError) as error:
        check_weights_fit(checkpoint, configured, tokenizers["u40"], "a.ckpt", "t40.model")
    message = str(error.value)
    assert message.startswith(
        "a.ckpt: trained with a vocabulary of 30 pieces, but the tokenizer "
        "configured here (t40.model) has 40"
    )
    assert "--model.init_from a.ckpt" in message


def test_weights_fit_check_refuses_a_same_size_tokenizer_with_other_pieces(tokenizers):
    model, checkpoint = _model_and_checkpoint(tokenizers["b40"])
    with pytest.raises(CheckpointError, match="another tokenizer of the same size"):
        check_weights_fit(checkpoint, model, tokenizers["u40"], "b.ckpt")


def test_weights_fit_check_names_the_model_settings_that_differ(tokenizers):
    _, checkpoint = _model_and_checkpoint(tokenizers["u30"], d_model=48)
    model, _ = _model_and_checkpoint(tokenizers["u30"])
    with pytest.raises(CheckpointError) as error:
        check_weights_fit(checkpoint, model, tokenizers["u30"], "c.ckpt")
    message = str(error.value)
    assert "its weights do not fit the configured model" in message
    assert "d_model=48 (configured: 32)" in message and "\n" not in message


def test_load_checkpoint_of_a_text_file_is_a_checkpoint_error(tmp_path):
    (tmp_path / "six.txt").write_text("hello\n")
    with pytest.raises(CheckpointError, match="six.txt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "six.txt")
