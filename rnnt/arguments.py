"""What the training settings may be: ``--data.*`` and ``--model.*``, checked in one line each.

jsonargparse checks types (an int where an int goes); these rules check meaning (a batch holds
at least one utterance, a probability lies in [0, 1]). ``TransducerDataModule`` and
``TransducerModule`` run them first thing in ``__init__``, so a wrong value from the command
line, a YAML config or Python stops the run before anything is built, with one ``ValueError``
that names the flag, the value and the rule: ``--data.batch_size -3 must be >= 1``.

A rule is a function of the value that returns what is wrong with it, or ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rnnt.constants import ATTENTION_CONTEXT_STYLES, MAX_SEED

Rule = Callable[[Any], str | None]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Rule:
    """A finite number ``>= low``."""
    return lambda value: None if _number(value) and value >= low else f"must be >= {low}"


def above(low: float) -> Rule:
    """A finite number ``> low``."""
    return lambda value: None if _number(value) and value > low else f"must be > {low}"


def between(low: float, high: float) -> Rule:
    """A finite number in ``[low, high]``."""
    return lambda value: (
        None if _number(value) and low <= value <= high else f"must be in [{low}, {high}]"
    )


def half_open(low: float, high: float) -> Rule:
    """A finite number in ``[low, high)``."""
    return lambda value: (
        None if _number(value) and low <= value < high else f"must be in [{low}, {high})"
    )


def one_of(choices: Any) -> Rule:
    """One of ``choices``."""
    names = sorted(choices)
    return lambda value: None if value in names else f"must be one of {', '.join(names)}"


def optional(rule: Rule) -> Rule:
    """``None`` (null in YAML), or a value that passes ``rule``."""
    return lambda value: None if value is None else rule(value)


def each(rule: Rule) -> Rule:
    """A list whose every item passes ``rule``."""

    def check(value: Any) -> str | None:
        for item in value:
            wrong = rule(item)
            if wrong:
                return f"has {item!r}, which {wrong}"
        return None

    return check


def pair(rule: Rule, ordered: bool = False, what: str = "[low, high]") -> Rule:
    """Two items (``what``) that pass ``rule``; ``ordered``: the first <= the second."""

    def check(value: Any) -> str | None:
        if len(value) != 2:
            return f"must be two numbers, {what}"
        wrong = each(rule)(value)
        if wrong:
            return wrong
        return f"must be {what} with low <= high" if ordered and value[0] > value[1] else None

    return check


def not_a_folder(value: Any) -> str | None:
    """A path that is not an existing folder (whether the file exists is checked where read)."""
    return "is a folder; give a file" if Path(value).is_dir() else None


def a_file(value: Any) -> str | None:
    """A path to an existing file (an input read at once, e.g. a checkpoint to start from)."""
    path = Path(value)
    if path.is_dir():
        return "is a folder; give a file"
    return None if path.is_file() else "does not exist"


def one_or_more(rule: Rule, what: str) -> Rule:
    """A value that passes ``rule``, or a non-empty list whose every item does (``what``: the
    items' name in the message for an empty list)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, (list, tuple)):
            return rule(value)
        return each(rule)(value) if value else f"must name at least one {what}"

    return check


def manifests(value: Any) -> str | None:
    """A manifest path, or a non-empty list of paths and ``{path: ..., weight: ...}`` mappings,
    weights on all or none (``rnnt.data.sources.parse_manifests``); none of them a folder."""
    if not isinstance(value, (list, tuple)):
        return not_a_folder(value)
    from rnnt.data.sources import parse_manifests  # the data module loads it anyway

    try:
        entries = parse_manifests(value)
    except ValueError as error:
        return str(error)
    for position, entry in enumerate(entries):
        if problem := not_a_folder(entry.path):
            return f"item {position}: {entry.path} {problem}"
    return None


def refuse_existing(paths: list[Path], flag: str) -> None:
    """Refuse to replace files the user did not ask to replace.

    Raises:
        ValueError: naming the existing files and ``--overwrite``.
    """
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(
            f"{flag}: {existing[0]}{more} already there; pass --overwrite to replace "
            f"{'them' if more else 'it'}, or choose another place"
        )


def not_a_file(value: Any) -> str | None:
    """A path that is not an existing file (a folder, or one still to be made)."""
    return "is a file; give a folder" if Path(value).is_file() else None


def _preset(value: Any) -> str | None:
    # Imported here, when a model is checked: the data module never loads the model's code.
    from rnnt.models.transducer import PRESETS

    return one_of(PRESETS)(value)


def _scheduler(value: Any) -> str | None:
    from rnnt.scheduler import SCHEDULERS

    return one_of(SCHEDULERS)(value)


def _contexts(value: Any) -> str | None:
    from rnnt.models.contexts import contexts_problem

    return contexts_problem(value)


def _probabilities(values: Mapping[str, Any]) -> str | None:
    # Cross-check: one probability per listed context, summing to 1 (rnnt.models.contexts).
    from rnnt.models.contexts import as_contexts, probabilities_problem

    count = len(as_contexts(values["attention_context_size"]))
    return probabilities_problem(values["attention_context_probabilities"], count)


DATA_RULES: dict[str, Rule] = {
    "train_manifest": manifests,
    "val_manifest": not_a_folder,
    "test_manifest": one_or_more(not_a_folder, "manifest"),  # rnnt test scores each in turn
    "tokenizer_path": not_a_folder,
    "noise_path": optional(not_a_file),
    "shar_dir": optional(not_a_file),  # a shard set is a folder (rnnt shard --out)
    "max_batch_duration": optional(above(0)),
    "batch_size": optional(at_least(1)),
    "num_workers": at_least(0),
    "num_buckets": at_least(1),
    "speed_perturb": each(above(0)),
    "noise_probability": between(0, 1),
    "snr_range_db": pair(at_least(-math.inf), ordered=True, what="[low, high] dB"),
    "reverb_probability": between(0, 1),
    "telephone_probability": between(0, 1),
    "clipping_probability": between(0, 1),
    "channels_start_epoch": at_least(0),
    "min_duration": at_least(0),
    "max_duration": above(0),
    "max_eval_duration": optional(above(0)),
    "seed": between(0, MAX_SEED),
    "world_size": optional(at_least(1)),
    "rank": optional(at_least(0)),
}

# TransducerConfig fields a --model.model_overrides entry may set, with their ranges (the
# field names themselves are checked by TransducerConfig.from_dict).
OVERRIDE_RULES: dict[str, Rule] = {
    **{
        name: at_least(1)
        for name in (
            "n_mels",
            "d_model",
            "num_layers",
            "num_heads",
            "ff_mult",
            "conv_kernel_size",
            "subsampling_factor",
            "subsampling_channels",
            "pred_embed_dim",
            "pred_hidden_dim",
            "pred_num_layers",
            "joiner_dim",
        )
    },
    "loss_chunk_bytes": optional(at_least(1)),
    "attention_context_size": _contexts,
    "attention_context_style": one_of(ATTENTION_CONTEXT_STYLES),
    "dropout": between(0, 1),
    "ctc_weight": at_least(0),
}


def _overrides(value: Any) -> str | None:
    for name, item in (value or {}).items():
        rule = OVERRIDE_RULES.get(name)
        wrong = rule(item) if rule else None
        if wrong:
            return f"has {name} {_shown(item)}, which {wrong}"
    return None


# (The model's tokenizer_path is --data.tokenizer_path, linked: checked, and named, as data's.)
MODEL_RULES: dict[str, Rule] = {
    "preset": _preset,
    "attention_context_size": _contexts,
    "attention_context_style": one_of(ATTENTION_CONTEXT_STYLES),
    "attention_context_probabilities": optional(each(between(0, 1))),
    "model_overrides": _overrides,
    "learning_rate": above(0),
    "weight_decay": at_least(0),
    "betas": pair(between(0, 1), what="[beta1, beta2]"),
    "scheduler": _scheduler,
    "warmup_steps": at_least(0),
    "min_lr_ratio": between(0, 1),
    "max_symbols_per_frame": at_least(1),
    "max_nonfinite_steps": at_least(1),
    "log_text_examples": at_least(0),
    "init_from": optional(a_file),
    "ema_decay": optional(half_open(0, 1)),  # 0 or null: no EMA of the weights (rnnt.ema)
}


def _shown(value: Any) -> str:
    # As the user typed it: `-3`, `[1]`, `huge`, `/a/folder`.
    return str(list(value)) if isinstance(value, tuple) else str(value)


def check_arguments(prefix: str, rules: Mapping[str, Rule], values: Mapping[str, Any]) -> None:
    """Check ``values`` (an ``__init__``'s arguments, e.g. ``locals()``) against ``rules``.

    Args:
        prefix: the settings group, ``data`` or ``model``: flags are ``--{prefix}.{name}``.
        rules: name -> rule; names missing from ``values`` are not checked.
        values: name -> value.

    Raises:
        ValueError: the first value that breaks its rule, as ``--data.batch_size -3 must be
            >= 1``; ``--data.max_duration`` not above ``--data.min_duration``; neither
            ``--data.max_batch_duration`` nor ``--data.batch_size`` set.
    """
    for name, rule in rules.items():
        if name not in values:
            continue
        value = values[name]
        try:
            wrong = rule(value)
        except TypeError:  # a list rule given a number, a number rule given a list, ...
            wrong = "has the wrong type"
        if wrong:
            raise ValueError(f"--{prefix}.{name} {_shown(value)} {wrong}")
    if values.get("attention_context_probabilities") is not None:
        wrong = _probabilities(values)
        if wrong:
            probabilities = _shown(values["attention_context_probabilities"])
            raise ValueError(f"--{prefix}.attention_context_probabilities {probabilities} {wrong}")
    low, high = values.get("min_duration"), values.get("max_duration")
    if _number(low) and _number(high) and high <= low:
        raise ValueError(
            f"--{prefix}.max_duration {high} must be above --{prefix}.min_duration {low} (seconds)"
        )
    if {"max_batch_duration", "batch_size"} <= set(values) and (
        values["max_batch_duration"] is None and values["batch_size"] is None
    ):
        raise ValueError(
            f"--{prefix}.max_batch_duration and --{prefix}.batch_size are both null: set the "
            "seconds of audio per batch, the utterances per batch, or both"
        )
