"""Checkpoint files: read safely, write atomically, load for inference with nothing else.

A checkpoint written by ``TransducerModule`` carries the weights, the model configuration and
the SentencePiece model bytes. It is read with ``torch.load(weights_only=True)``: tensors,
numbers, strings and containers only, so a checkpoint from an untrusted source cannot run
code. It is written to a temporary file in the same folder, flushed to disk and renamed over
the old file, so a process killed mid-write leaves the previous checkpoint whole. This module
imports neither Lightning nor the data pipeline's loaders.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rnnt.constants import EMA_WEIGHTS, RAW_WEIGHTS
from rnnt.data.tokenizer import Tokenizer
from rnnt.models.transducer import Transducer, TransducerConfig

TOKENIZER_KEY = "tokenizer_model"
MODEL_CONFIG_KEY = "transducer_config"
# TransducerConfig fields added after checkpoints were first written, with the value the older
# checkpoints were trained with: a stored config without the key predates the field.
PREDATING_CONFIG_VALUES: dict[str, Any] = {"frontend_style": "kaldi"}
# Fields older checkpoints stored that no longer exist: they never changed what weights mean.
# `loss_chunk_size` (cells) gave way to `loss_chunk_bytes` (a memory budget).
RETIRED_CONFIG_FIELDS = ("loss_chunk_size",)
# TransducerConfig fields that change what trained weights mean without changing their shapes:
# a model that loads or starts from a checkpoint adopts the checkpoint's values of them.
WEIGHT_MEANING_FIELDS = ("frontend_style", "joiner_activation", "blank_id")
STATE_DICT_PREFIX = "model."  # TransducerModule keeps the Transducer as `self.model`
# Which weights `state_dict` holds (EMA_WEIGHTS or RAW_WEIGHTS; absent: raw, as before EMA). A
# checkpoint of a run with an EMA (rnnt.ema) holds the EMA weights there, which every consumer
# reads by default, and the trained ones under RAW_STATE_DICT_KEY, which a resumed run trains on.
WEIGHTS_KEY = "weights"
RAW_STATE_DICT_KEY = "raw_state_dict"
WEIGHT_CHOICES = (EMA_WEIGHTS, RAW_WEIGHTS)  # --weights of rnnt transcribe and rnnt export
# A checkpoint being written: ".{name}.{pid}.{random hex}.tmp" next to its final name. Lightning's
# `--ckpt_path last` only considers "last*.ckpt", so a temporary file is never taken for one.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")

MapLocation = str | torch.device | Callable | dict | None


class CheckpointError(ValueError):
    """A file that is not a readable rnnt-lightning checkpoint."""


def read_checkpoint(
    path: str | Path, map_location: MapLocation = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """The checkpoint's dictionary, read without executing pickled code.

    ``map_location`` is ``torch.load``'s (a device, a string, or a function of storages);
    ``mmap`` maps the tensors instead of reading them: a quick check of a large file.

    Raises:
        CheckpointError: the file is missing, a folder, empty, truncated, not a PyTorch file,
            holds objects other than plain data, or lacks what an rnnt-lightning checkpoint has.
        ValueError: ``map_location`` names a device this machine does not have.
    """
    path = Path(path)
    _check_is_file(path)
    if isinstance(map_location, (str, torch.device)):
        check_device(map_location)  # a missing GPU is not a corrupt file
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses anyway
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - garbage raises KeyError, IndexError, ...
        # Any file that is not a PyTorch checkpoint ends up here: torch.load's unpickler fails
        # on text, audio or a foreign zip with whatever exception the first bad byte causes.
        raise CheckpointError(
            f"{path}: not a readable checkpoint: truncated, corrupt, not written by PyTorch, "
            f"or holding objects other than tensors and plain data ({type(error).__name__})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint dictionary but {type(checkpoint).__name__}"
        )
    missing = [
        key for key in ("state_dict", MODEL_CONFIG_KEY, TOKENIZER_KEY) if key not in checkpoint
    ]
    if missing:
        raise CheckpointError(
            f"{path}: not an rnnt-lightning checkpoint (missing {', '.join(missing)}); "
            "train one with `rnnt fit` or `rnnt demo`"
        )
    return checkpoint


def _check_is_file(path: Path) -> None:
    # The cases torch.load would report as something else, each with what to do.
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(
            f"{path}: is a folder, not a checkpoint file; give a .ckpt file in it "
            "(e.g. checkpoints/last.ckpt)"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path}: empty file (0 bytes), not a checkpoint; a save that never finished? "
            "Use another checkpoint of the run (e.g. last.ckpt)"
        )


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, if this machine has it.

    Raises:
        ValueError: not a device string torch knows (``gpu7``), or a device this machine lacks
            (``cuda`` without CUDA, ``cuda:3`` with two GPUs, ``mps`` off Apple silicon).
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{device}: not a device name; use cpu, cuda, cuda:N (the N-th GPU) or mps"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{device}: CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use cpu"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"{device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{device}: MPS (Apple GPU) is not available on this machine; use cpu")
    return parsed


def stored_config(values: dict[str, Any]) -> TransducerConfig:
    """The :class:`TransducerConfig` of a checkpoint's stored ``transducer_config`` dict.

    The one place where checkpoints of older versions are read: a field missing from them
    (``PREDATING_CONFIG_VALUES``) takes the value they were trained with, not today's default;
    e.g. no ``frontend_style`` means the ``"kaldi"`` features. (``TransducerConfig.from_dict``
    itself fills missing fields with today's defaults, as presets and YAML configs want.)
    Retired fields (``RETIRED_CONFIG_FIELDS``) are dropped.
    """
    kept = {key: value for key, value in values.items() if key not in RETIRED_CONFIG_FIELDS}
    return TransducerConfig.from_dict({**PREDATING_CONFIG_VALUES, **kept})


def stored_weights(checkpoint: dict[str, Any]) -> str:
    """Which weights the checkpoint's ``state_dict`` holds: ``"ema"`` or ``"raw"`` (trained)."""
    return checkpoint.get(WEIGHTS_KEY, RAW_WEIGHTS)


def select_state_dict(
    checkpoint: dict[str, Any], weights: str | None = None, path: str | Path = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The checkpoint's weights of the kind asked for (``TransducerModule`` names, ``model.*``).

    ``weights``: ``"ema"`` (the moving average of a run with ``--model.ema_decay``), ``"raw"``
    (the trained weights), or None: those its ``state_dict`` holds (the EMA ones where the run
    kept an EMA). Raises ``CheckpointError`` naming ``path`` when it lacks the weights asked for.
    """
    stored = stored_weights(checkpoint)
    if weights is None or weights == stored:
        return checkpoint["state_dict"]
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights {weights!r}: must be one of {', '.join(WEIGHT_CHOICES)}")
    if weights == RAW_WEIGHTS and RAW_STATE_DICT_KEY in checkpoint:
        return checkpoint[RAW_STATE_DICT_KEY]
    if weights == EMA_WEIGHTS:
        raise CheckpointError(
            f"{path}: holds no EMA weights (trained with --model.ema_decay 0 or before EMA "
            "existed); use --weights raw"
        )
    raise CheckpointError(f"{path}: holds the EMA weights only; use --weights ema")


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", weights: str | None = None
) -> tuple[Transducer, Tokenizer]:
    """The transducer (in eval mode) and its tokenizer from a checkpoint file alone; ``weights``
    as for ``select_state_dict`` (None: the EMA weights of a run that kept an EMA)."""
    checkpoint = read_checkpoint(path, map_location)
    config = stored_config(checkpoint[MODEL_CONFIG_KEY])
    model = Transducer(config)
    state_dict = {
        key[len(STATE_DICT_PREFIX) :]: value
        for key, value in select_state_dict(checkpoint, weights, path).items()
        if key.startswith(STATE_DICT_PREFIX)
    }
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit the stored model config: {error}"
        ) from error
    tokenizer = Tokenizer.from_bytes(checkpoint[TOKENIZER_KEY])
    if tokenizer.num_classes != config.num_classes:
        raise CheckpointError(
            f"{path}: tokenizer has {tokenizer.num_classes} classes but the model "
            f"{config.num_classes}"
        )
    return model.eval().to(map_location), tokenizer


def check_weights_fit(
    checkpoint: dict[str, Any],
    model: Transducer,
    tokenizer: Tokenizer,
    path: str | Path,
    tokenizer_path: str | Path | None = None,
) -> None:
    """Refuse, in one line, a checkpoint whose weights cannot serve ``model`` and ``tokenizer``.

    Resuming, validating or testing builds the model from the configuration and then loads
    the checkpoint's weights into it. A checkpoint trained with another vocabulary would fail
    with a ``size mismatch`` traceback, or, with another tokenizer of the same size, load and
    read every output as the wrong piece; another model size fails with a list of tensors.
    This says which vocabulary (or which setting) each side has and what to do.

    Args:
        checkpoint: the loaded checkpoint (``state_dict``, ``transducer_config``, tokenizer).
        model: the configured model the weights are about to be loaded into.
        tokenizer: the configured tokenizer (``--data.tokenizer_path``).
        path: the checkpoint file, for the message.
        tokenizer_path: the configured tokenizer's file, for the message.

    Raises:
        CheckpointError: another vocabulary, another tokenizer, or weights of other shapes.
    """
    fine_tune = (
        f"to fine-tune its weights into the configured model instead, start a new run with "
        f"--model.init_from {path} (fresh optimizer, no --ckpt_path)"
    )
    where = f" ({tokenizer_path})" if tokenizer_path else ""
    if TOKENIZER_KEY in checkpoint:
        trained = Tokenizer.from_bytes(checkpoint[TOKENIZER_KEY])
        if trained.vocab_size != tokenizer.vocab_size:
            raise CheckpointError(
                f"{path}: trained with a vocabulary of {trained.vocab_size} pieces, but the "
                f"tokenizer configured here{where} has {tokenizer.vocab_size}; evaluate or "
                "resume it with the tokenizer it was trained with (`rnnt transcribe` uses the "
                f"copy inside the checkpoint); {fine_tune}"
            )
        differing = next(
            (
                index
                for index in range(1, trained.num_classes)
                if trained.id_to_piece(index) != tokenizer.id_to_piece(index)
            ),
            None,
        )
        if differing is not None:
            raise CheckpointError(
                f"{path}: trained with another tokenizer of the same size ({trained.vocab_size} "
                f"pieces; id {differing} is {trained.id_to_piece(differing)!r} there, "
                f"{tokenizer.id_to_piece(differing)!r} in the tokenizer configured here{where}), "
                "so every output would be read as the wrong piece; use the tokenizer it was "
                f"trained with; {fine_tune}"
            )
    stored = {
        key[len(STATE_DICT_PREFIX) :]: value
        for key, value in checkpoint.get("state_dict", {}).items()
        if key.startswith(STATE_DICT_PREFIX)
    }
    expected = model.state_dict()
    mismatched = [
        f"{key} {tuple(stored[key].shape)} there, {tuple(value.shape)} here"
        for key, value in expected.items()
        if key in stored and tuple(stored[key].shape) != tuple(value.shape)
    ]
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if not (mismatched or missing or unexpected):
        return
    settings = ""
    if MODEL_CONFIG_KEY in checkpoint:
        trained_config = stored_config(checkpoint[MODEL_CONFIG_KEY]).to_dict()
        configured = model.config.to_dict()
        settings = ", ".join(
            f"{field}={value!r} (configured: {configured.get(field)!r})"
            for field, value in trained_config.items()
            if configured.get(field) != value
        )
    first = (mismatched or [f"{key} missing there" for key in missing] or unexpected)[0]
    raise CheckpointError(
        f"{path}: its weights do not fit the configured model ({first}); it was trained "
        f"with {settings or 'another model version'}; set the same --model.preset and "
        f"--model.model_overrides to evaluate or resume it; {fine_tune}"
    )


def write_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically: the file is either the old one or the new one.

    The bytes go to a temporary file in the same folder, which is flushed to disk (fsync) and
    then renamed over ``path`` (``os.replace``, atomic within a file system); the folder is
    synced too, so the rename survives a power cut. A process killed at any moment leaves
    ``path`` as it was, plus at most a temporary file, which the next save removes.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    temporary = _temporary_path(path)
    # O_EXCL: never write through a file or link someone else put there; 0o666 & ~umask
    # gives the checkpoint the permissions of any other file the user creates.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _sync_folder(folder)


def link_checkpoint(target: str | Path, link: str | Path) -> None:
    """Point ``link`` at ``target`` atomically (a relative symlink; a copy where links fail).

    As with ``write_checkpoint``, ``link`` is at every moment either the old file or the new
    link: the link is made under a temporary name and renamed over ``link``.
    """
    target, link = Path(target), Path(link)
    folder = link.parent
    remove_stale_temporaries(folder)
    temporary = _temporary_path(link)
    try:
        try:
            os.symlink(os.path.relpath(target, folder), temporary)
        except OSError:  # no symlinks here (some file systems, Windows without rights)
            shutil.copyfile(target, temporary)
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        os.replace(temporary, link)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _sync_folder(folder)


def _temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (the form of ``_TEMPORARY``)."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers of other processes left in ``folder``.

    Only names of the form ``write_checkpoint`` uses are touched, and not this process's own
    (which a writer of this process may be filling). Returns the paths removed.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            match = _TEMPORARY.match(entry.name)
            if match and int(match["pid"]) != os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _sync_folder(folder: Path) -> None:
    # Make the rename itself durable; not every file system lets a folder be opened or synced.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
