"""Load a training checkpoint for inference, safely and with nothing but the file.

A checkpoint written by ``TransducerModule`` carries the weights, the model configuration and
the SentencePiece model bytes. It is read with ``torch.load(weights_only=True)``: tensors,
numbers, strings and containers only, so a checkpoint from an untrusted source cannot run
code. This module imports neither Lightning nor the data pipeline's loaders.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from rnnt.data.tokenizer import Tokenizer
from rnnt.models.transducer import Transducer, TransducerConfig

TOKENIZER_KEY = "tokenizer_model"
MODEL_CONFIG_KEY = "transducer_config"
STATE_DICT_PREFIX = "model."  # TransducerModule keeps the Transducer as `self.model`


class CheckpointError(ValueError):
    """A file that is not a readable rnnt-lightning checkpoint."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dictionary, read without executing pickled code.

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch file, holds objects
            other than plain data, or lacks what an rnnt-lightning checkpoint has.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        ValueError,
    ) as error:
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


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Transducer, Tokenizer]:
    """The transducer (in eval mode) and its tokenizer from a checkpoint file alone."""
    checkpoint = read_checkpoint(path, map_location)
    config = TransducerConfig.from_dict(checkpoint[MODEL_CONFIG_KEY])
    model = Transducer(config)
    state_dict = {
        key[len(STATE_DICT_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
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
