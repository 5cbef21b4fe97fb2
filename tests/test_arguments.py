"""Every ``--data.*`` and ``--model.*`` setting refuses a wrong value in one line naming it.

The rows below give, for each argument of ``TransducerDataModule`` and ``TransducerModule``, a
value that must be refused; a new argument without a row fails
``test_every_setting_has_a_wrong_value_row``. (``tests/test_cli_args.py`` runs a few of them
through ``rnnt fit`` to show the whole path: one line on stderr, exit status 2.)
"""

from __future__ import annotations

import inspect
import math

import pytest

from rnnt.arguments import DATA_RULES, MODEL_RULES, check_arguments
from rnnt.data.datamodule import TransducerDataModule
from rnnt.train import TransducerModule

FOLDER = "{folder}"  # replaced by an existing folder
FILE = "{file}"  # replaced by an existing file

# (argument, wrong value, what the message must say after "--data.ARG VALUE ")
DATA_ROWS = [
    ("train_manifest", FOLDER, "is a folder"),
    ("train_manifest", [], "must name at least one manifest"),
    ("train_manifest", ["a.jsonl", {"weight": 1}], "item 1: {'weight': 1} is neither a path"),
    ("train_manifest", [{"path": "a", "weight": -1}], "item 0: weight -1 must be a positive"),
    ("train_manifest", ["a", {"path": "b", "weight": 2}], "give a weight to every manifest"),
    ("val_manifest", FOLDER, "is a folder"),
    ("test_manifest", FOLDER, "is a folder"),
    ("test_manifest", ["a.jsonl", FOLDER], "has '{folder}', which is a folder; give a file"),
    ("test_manifest", [], "must name at least one manifest"),
    ("tokenizer_path", FOLDER, "is a folder"),
    ("noise_path", FILE, "is a file; give a folder"),
    ("shar_dir", FILE, "is a file; give a folder"),
    ("max_batch_duration", 0.0, "must be > 0"),
    ("max_batch_duration", math.inf, "must be > 0"),
    ("batch_size", -3, "must be >= 1"),
    ("num_workers", -1, "must be >= 0"),
    ("num_buckets", 0, "must be >= 1"),
    ("speed_perturb", [0.9, 0.0], "has 0.0, which must be > 0"),
    ("noise_probability", 1.5, "must be in [0, 1]"),
    ("snr_range_db", [30.0, 5.0], "must be [low, high] dB with low <= high"),
    ("snr_range_db", [5.0], "must be two numbers"),
    ("reverb_probability", -0.1, "must be in [0, 1]"),
    ("telephone_probability", 2.0, "must be in [0, 1]"),
    ("clipping_probability", math.nan, "must be in [0, 1]"),
    ("channels_start_epoch", -1, "must be >= 0"),
    ("min_duration", -0.1, "must be >= 0"),
    ("max_duration", 0, "must be > 0"),
    ("max_eval_duration", -1.0, "must be > 0"),
    ("seed", -1, "must be in [0, 4294967295]"),
    ("world_size", 0, "must be >= 1"),
    ("rank", -1, "must be >= 0"),
]
MODEL_ROWS = [
    ("preset", "huge", "must be one of large, medium, small, tiny"),
    ("attention_context_size", [1], "must be [left, right] or a list of [left, right] pairs"),
    ("attention_context_size", [-2, 0], "must be [left, right] or a list"),
    ("attention_context_size", [[8, 3], [8, 1, 2]], "must be [left, right] or a list"),
    ("attention_context_size", [[8, 3], [8, 3]], "lists [8, 3] twice"),
    ("attention_context_style", "rolling", "must be one of chunked, sliding"),
    ("attention_context_probabilities", [1.5], "has 1.5, which must be in [0, 1]"),
    ("model_overrides", {"d_model": -1}, "has d_model -1, which must be >= 1"),
    ("model_overrides", {"dropout": 1.5}, "has dropout 1.5, which must be in [0, 1]"),
    ("learning_rate", -1.0, "must be > 0"),
    ("learning_rate", math.nan, "must be > 0"),
    ("weight_decay", -0.1, "must be >= 0"),
    ("betas", (0.9, 1.5), "has 1.5, which must be in [0, 1]"),
    ("scheduler", "linear", "must be one of cosine, noam"),
    ("warmup_steps", -5, "must be >= 0"),
    ("min_lr_ratio", 2.0, "must be in [0, 1]"),
    ("max_symbols_per_frame", 0, "must be >= 1"),
    ("max_nonfinite_steps", 0, "must be >= 1"),
    ("log_text_examples", -1, "must be >= 0"),
    ("init_from", FOLDER, "is a folder; give a file"),
    ("init_from", "{folder}/missing.ckpt", "does not exist"),
    ("ema_decay", 1.0, "must be in [0, 1)"),
    ("ema_decay", -0.5, "must be in [0, 1)"),
]


@pytest.mark.parametrize(
    ("contexts", "probabilities"),
    [([[8, 3], [8, 7]], [1.0]), ([[8, 3], [8, 7]], [0.5, 0.4]), ([8, 0], [0.5, 0.5])],
)
def test_context_probabilities_must_match_the_contexts(contexts, probabilities):
    with pytest.raises(ValueError) as error:
        TransducerModule(
            attention_context_size=contexts, attention_context_probabilities=probabilities
        )
    count = len(contexts) if isinstance(contexts[0], list) else 1
    assert str(error.value) == (
        f"--model.attention_context_probabilities {probabilities} must be {count} numbers >= 0 "
        "(one per context) that sum to 1"
    )


# Arguments whose wrong values are refused elsewhere, and where it is tested.
REFUSED_ELSEWHERE = {
    ("data", "skip_invalid"): "a bool: jsonargparse refuses others (test_cli_args)",
    ("data", "read_headers"): "a bool or null: jsonargparse refuses others",
    ("model", "causal_conv"): "a bool: jsonargparse refuses others (test_cli_args)",
    ("model", "compile"): "a bool: jsonargparse refuses others (test_cli_args)",
    # The model's tokenizer is --data.tokenizer_path (linked), loaded by Tokenizer.load.
    ("model", "tokenizer_path"): "test_tokenizer: test_loading_a_folder_as_the_tokenizer_says_so",
}


def _value(value, tmp_path):
    if isinstance(value, list):
        return [_value(item, tmp_path) for item in value]
    if isinstance(value, str) and value.startswith(FOLDER):
        return value.replace(FOLDER, str(tmp_path))
    if value == FILE:
        (tmp_path / "a.txt").write_text("a file")
        return str(tmp_path / "a.txt")
    return value


def _shown(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize(("name", "value", "rule"), DATA_ROWS)
def test_data_module_refuses_a_wrong_value_naming_the_flag(name, value, rule, tmp_path):
    value = _value(value, tmp_path)
    with pytest.raises(ValueError) as error:
        TransducerDataModule(**{name: value})
    rule = rule.replace(FOLDER, str(tmp_path))
    assert str(error.value).startswith(f"--data.{name} {_shown(value)} {rule}")


@pytest.mark.parametrize(("name", "value", "rule"), MODEL_ROWS)
def test_module_refuses_a_wrong_value_naming_the_flag(name, value, rule, tmp_path):
    # The check comes first: the tokenizer (not there at the default path) is never read.
    value = _value(value, tmp_path)
    with pytest.raises(ValueError) as error:
        TransducerModule(**{name: value})
    assert str(error.value).startswith(f"--model.{name} {_shown(value)} {rule}")


def test_settings_that_must_agree_with_each_other():
    with pytest.raises(ValueError, match=r"^--data.max_duration 1.0 must be above --data.min"):
        TransducerDataModule(min_duration=2.0, max_duration=1.0)
    with pytest.raises(ValueError, match="max_batch_duration and --data.batch_size are both null"):
        TransducerDataModule(max_batch_duration=None, batch_size=None)


def test_the_defaults_pass_every_rule():
    for cls, rules, prefix in [
        (TransducerDataModule, DATA_RULES, "data"),
        (TransducerModule, MODEL_RULES, "model"),
    ]:
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }
        defaults = {k: v for k, v in defaults.items() if not k.endswith(("_path", "_manifest"))}
        check_arguments(prefix, rules, defaults)


@pytest.mark.parametrize(
    ("prefix", "cls", "rows"),
    [("data", TransducerDataModule, DATA_ROWS), ("model", TransducerModule, MODEL_ROWS)],
)
def test_every_setting_has_a_wrong_value_row(prefix, cls, rows):
    arguments = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    covered = {name for name, _, _ in rows}
    missing = [
        f"--{prefix}.{name}"
        for name in arguments
        if name not in covered and (prefix, name) not in REFUSED_ELSEWHERE
    ]
    assert not missing, (
        f"settings without a wrong-value row in tests/test_arguments.py "
        f"({prefix.upper()}_ROWS; a rule in rnnt/arguments.py): {', '.join(missing)}"
    )
