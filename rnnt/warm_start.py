"""Fine-tuning: start a new run from another checkpoint's weights (``--model.init_from``).

Unlike ``--ckpt_path`` (which resumes everything: step, optimizer, schedule, data position),
only the weights are taken: the run starts at step 0 with a fresh optimizer and schedule on
whatever data it is given. The checkpoint is read with ``rnnt.checkpoint.read_checkpoint``
(plain data only, no pickled code runs).

A checkpoint trained with another tokenizer can still be the start: every weight is taken but
those of the layers the vocabulary sizes or indexes (prediction-network embedding, joiner and
CTC outputs), which start fresh, with a warning. A checkpoint of another model size is a
one-line error naming the settings that differ.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from rnnt.checkpoint import (
    MODEL_CONFIG_KEY,
    STATE_DICT_PREFIX,
    TOKENIZER_KEY,
    WEIGHT_MEANING_FIELDS,
    CheckpointError,
    read_checkpoint,
    stored_config,
)
from rnnt.data.tokenizer import Tokenizer
from rnnt.models.transducer import Transducer, TransducerConfig

log = logging.getLogger(__name__)


def warm_start(
    model: Transducer, tokenizer: Tokenizer, path: str | Path, tokenizer_path: str | Path = ""
) -> Transducer:
    """``model`` (or a rebuild of it) holding the weights of the checkpoint at ``path``.

    Args:
        model: the configured model; its ``config`` decides every size.
        tokenizer: the configured tokenizer (``--data.tokenizer_path``).
        path: an rnnt-lightning checkpoint.
        tokenizer_path: the configured tokenizer's file, for messages.

    Returns:
        ``model`` with the weights loaded, or a new model when the checkpoint's values of
        ``WEIGHT_MEANING_FIELDS`` differ from the configured ones (they are adopted, with a warning).

    Raises:
        CheckpointError: ``path`` is not a readable checkpoint, or its weights are of another
            model size (the message names the settings that differ).
    """
    checkpoint = read_checkpoint(path)
    trained = stored_config(checkpoint[MODEL_CONFIG_KEY])
    config = model.config
    differing = {
        name: getattr(trained, name)
        for name in WEIGHT_MEANING_FIELDS
        if getattr(trained, name) != getattr(config, name)
    }
    if differing:
        log.warning(
            "--model.init_from %s: its model was trained with %s; using that",
            path,
            ", ".join(
                f"{k}={v!r} (configured: {getattr(config, k)!r})" for k, v in differing.items()
            ),
        )
        model = Transducer(dataclasses.replace(config, **differing))
    weights = {
        key[len(STATE_DICT_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(STATE_DICT_PREFIX)
    }
    fresh = _vocabulary_layers(model.config) if _other_vocabulary(checkpoint, tokenizer) else set()
    if fresh:
        trained_tokens = Tokenizer.from_bytes(checkpoint[TOKENIZER_KEY]).vocab_size
        log.warning(
            "--model.init_from %s: trained with another tokenizer (%d pieces; %s here has %d): "
            "its %s start fresh, every other weight is taken",
            path,
            trained_tokens,
            tokenizer_path or "the one configured",
            tokenizer.vocab_size,
            ", ".join(sorted({key.rsplit(".", 1)[0] for key in fresh})),
        )
    expected = model.state_dict()
    wrong = [
        key
        for key, value in expected.items()
        if key not in fresh and (key not in weights or weights[key].shape != value.shape)
    ] + sorted(set(weights) - set(expected) - fresh)
    if wrong:
        raise CheckpointError(
            f"{path}: --model.init_from: its weights are of another model ({_explain(wrong[0], weights, expected)}); "
            f"it was trained with {_settings(trained, model.config)}: set the same --model.preset "
            "and --model.model_overrides to start from it"
        )
    model.load_state_dict({k: v for k, v in weights.items() if k not in fresh}, strict=False)
    return model


def _other_vocabulary(checkpoint: dict, tokenizer: Tokenizer) -> bool:
    # Another size, or the same size with other pieces (each id would mean another piece).
    trained = Tokenizer.from_bytes(checkpoint[TOKENIZER_KEY])
    return trained.pieces != tokenizer.pieces


def _vocabulary_layers(config: TransducerConfig) -> set[str]:
    # The weights whose shape follows the vocabulary: those that differ in a model with one
    # more class (built once, only when a checkpoint of another vocabulary is the start).
    one = {key: value.shape for key, value in Transducer(config).state_dict().items()}
    other = Transducer(dataclasses.replace(config, num_classes=config.num_classes + 1))
    return {key for key, value in other.state_dict().items() if one[key] != value.shape}


def _explain(key: str, weights: dict, expected: dict) -> str:
    if key not in weights:
        return f"{key} missing there"
    if key not in expected:
        return f"{key} there, not here"
    return f"{key} {tuple(weights[key].shape)} there, {tuple(expected[key].shape)} here"


def _settings(trained: TransducerConfig, configured: TransducerConfig) -> str:
    ignored = {"num_classes", *WEIGHT_MEANING_FIELDS}
    differing = [
        f"{name}={getattr(trained, name)!r} (configured: {getattr(configured, name)!r})"
        for name in trained.to_dict()
        if name not in ignored and getattr(trained, name) != getattr(configured, name)
    ]
    return ", ".join(differing) or "another version of the model"
