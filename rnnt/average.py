"""Checkpoint averaging: one model whose weights are the mean of several checkpoints' weights.

``rnnt average`` (``rnnt/cli_average.py``) calls :func:`select_checkpoints` (which files of a
run folder) and :func:`write_average`. The checkpoints must be of one model: the same model
config (fields that only shape training aside, ``AVERAGE_TRAINING_ONLY_FIELDS``), the same
tokenizer, the same tensors; otherwise a one-line error names both files and what differs.

What the average holds:

* every floating-point tensor of ``state_dict``: the mean over the checkpoints, computed in
  float64 and cast back to the tensor's dtype (so the average of identical checkpoints is
  exactly each of them);
* the feature normaliser's ``mean`` and ``var`` (``rnnt.models.normalizer``): averaged as
  the affine map they define, ``scale = 1/sqrt(var + eps)``, ``shift = -mean * scale``, so
  that for every input the averaged normaliser outputs exactly the mean of the checkpoints'
  normalised features: the same rule weight averaging applies to every other linear layer.
  The statistics are not pooled as data: the normaliser's own running ``var`` is the mean of
  per-batch variances (the spread of batch means is never part of it), and the checkpoints
  of a run summarise overlapping stretches of training (the first ``1 / momentum`` batches
  cumulatively, then an exponential average of about the last ``1 / momentum``), so neither
  weighting by ``batches_seen`` nor adding the spread of the means would be exact for them;
* integer counters (``batches_seen``): the largest; any other integer tensor must be equal;
* the model config, the tokenizer and the hyper-parameters ``rnnt test --ckpt_path`` reads,
  plus ``averaged_from``: the files, epochs and steps it was made from.

Optimizer, schedule, loop, data-position and callback states are dropped: an average is for
transcribing, evaluating and exporting, or for fine-tuning (``--model.init_from``); it cannot
be resumed (:func:`refuse_resuming`). Checkpoints that carry EMA weights (``weights: "ema"``,
their ``state_dict`` holds the EMA) are averaged as EMA weights and the output says so; a mix
of EMA and raw checkpoints is refused. This module imports neither Lightning nor the data
pipeline's loaders.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnt import constants as C
from rnnt.checkpoint import (
    MODEL_CONFIG_KEY,
    TOKENIZER_KEY,
    WEIGHTS_KEY,
    CheckpointError,
    read_checkpoint,
    stored_config,
    write_checkpoint,
)
from rnnt.data.tokenizer import Tokenizer

AVERAGED_FROM_KEY = "averaged_from"  # the checkpoints an average was made from
# Kept besides the weights: what load_checkpoint and `rnnt validate|test --ckpt_path` read.
KEPT_KEYS = ("hyper_parameters", "hparams_name", "pytorch-lightning_version")
_NORMALISER_STATISTICS = ("mean", "var", "batches_seen")
# A ranked file's metric in its name (rounded): CHECKPOINT_FILENAME's "rnnt-08-7.26.ckpt", or
# "...val_loss=7.26.ckpt" where Lightning inserts the metric's name.
_SCORE = r"(?P<score>-?\d+(?:\.\d+)?)(?:-v\d+)?\.ckpt$"
_SCORE_IN_DEFAULT_NAME = re.compile(r"^rnnt-\d+-" + _SCORE)
_MODE_IN_STATE_KEY = re.compile(r"'mode': '(?P<mode>min|max)'")


@dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint file of a run: where it is, when it was saved, how the run ranked it."""

    path: Path
    epoch: int
    global_step: int
    score: float | None  # the monitored metric at this step; None for resume points (last.ckpt)
    monitor: str  # the metric's name (``val_loss``)
    mode: str  # "min" or "max": which end of ``score`` is best


def run_checkpoints(run: str | Path) -> list[RunCheckpoint]:
    """The training checkpoints a run folder holds (``RUN/checkpoints/*.ckpt`` or ``RUN/*.ckpt``).

    The epoch and global step are each file's own; the score is the run's record of it (the
    ``ModelCheckpoint`` state inside the file, unrounded), or else the one in its file name.
    Averages written there earlier are left out; a link (``last.ckpt``) counts once.

    Raises:
        CheckpointError: a checkpoint there is unreadable (one line naming it).
        ValueError: the folder holds no checkpoint.
    """
    run = Path(run)
    folder = (
        run / C.AVERAGE_CHECKPOINTS_FOLDER if (run / C.AVERAGE_CHECKPOINTS_FOLDER).is_dir() else run
    )
    found: dict[Path, RunCheckpoint] = {}
    # Files before links (last.ckpt -> rnnt-08-7.26.ckpt): a file is named by its own name.
    for path in sorted(folder.glob("*.ckpt"), key=lambda path: (path.is_symlink(), path.name)):
        target = path.resolve()
        if target in found:
            continue
        checkpoint = read_checkpoint(path, mmap=True)
        if AVERAGED_FROM_KEY in checkpoint:
            continue
        found[target] = _describe(path, target, checkpoint)
    if not found:
        raise ValueError(f"--run {run}: no checkpoint (*.ckpt) in {folder}")
    return list(found.values())


def _describe(path: Path, target: Path, checkpoint: dict[str, Any]) -> RunCheckpoint:
    monitor, mode, score = C.AVERAGE_MONITOR, C.AVERAGE_MONITOR_MODE, None
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if "ModelCheckpoint" not in str(name) or not isinstance(state, dict):
            continue
        monitor = state.get("monitor") or monitor
        mode = (_MODE_IN_STATE_KEY.search(str(name)) or {"mode": mode})["mode"]
        for saved, value in (state.get("best_k_models") or {}).items():
            if Path(saved).name == target.name:
                score = float(value)
    if score is None and not target.name.startswith(C.AVERAGE_LAST_NAME):
        match = re.search(re.escape(f"{monitor}=") + _SCORE, target.name) or (
            _SCORE_IN_DEFAULT_NAME.match(target.name) if monitor == C.AVERAGE_MONITOR else None
        )
        score = float(match["score"]) if match else None
    if "epoch" not in checkpoint or "global_step" not in checkpoint:
        raise CheckpointError(f"{path}: no epoch or global_step: not saved by `rnnt fit`")
    return RunCheckpoint(
        path, int(checkpoint["epoch"]), int(checkpoint["global_step"]), score, monitor, mode
    )


def select_checkpoints(
    run: str | Path, *, last: int | None = None, best: int | None = None
) -> list[RunCheckpoint]:
    """The checkpoints of a run to average, oldest first.

    A run keeps its ``save_top_k`` best files by the monitored metric and ``last.ckpt`` (the
    newest step); files of the same global step hold the same weights and count once.

    Args:
        run: the run folder (``runs/NAME``) or its ``checkpoints/`` folder.
        last: the N newest distinct checkpoints by the global step stored in them (not file
            times, which a copy changes). With ``--checkpoint.save_top_k -1`` a run keeps every
            validation's file, and these are the last N epochs.
        best: the N best ranked files by the run's own record of the monitored metric (lowest
            ``val_loss``); ``last.ckpt`` is ranked only as the file of its step.

    Raises:
        ValueError: not exactly one of ``last``/``best``, or the run holds fewer checkpoints.
    """
    if (last is None) == (best is None):
        raise ValueError("--run needs one of --last N or --best N")
    newest_first = sorted(
        run_checkpoints(run),
        key=lambda found: (found.global_step, found.epoch, found.score is not None),
        reverse=True,
    )
    distinct: dict[int, RunCheckpoint] = {}
    for found in newest_first:  # a ranked file of a step wins over last.ckpt of the same step
        distinct.setdefault(found.global_step, found)
    if last is not None:
        chosen = list(distinct.values())[:last]
        if len(chosen) < last:
            raise ValueError(f"--last {last}: {_kept(run, distinct.values(), 'distinct')}")
    else:
        ranked = [found for found in distinct.values() if found.score is not None]
        monitors = {(found.monitor, found.mode) for found in ranked}
        if len(monitors) > 1:
            raise ValueError(f"--best: the run ranked its files by different metrics: {monitors}")
        sign = -1.0 if ranked and ranked[0].mode == "max" else 1.0
        chosen = sorted(ranked, key=lambda found: (sign * found.score, -found.global_step))[:best]
        if len(chosen) < best:
            raise ValueError(f"--best {best}: {_kept(run, ranked, 'ranked')}")
    return sorted(chosen, key=lambda found: found.global_step)


def _kept(run: str | Path, found: Any, what: str) -> str:
    found = list(found)
    names = ", ".join(sorted(item.path.name for item in found)) or "none"
    return (
        f"{run} keeps only {len(found)} {what} checkpoint(s) ({names}); ask for fewer, or "
        "train with --checkpoint.save_top_k -1 to keep every validation's checkpoint"
    )


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The checkpoint whose weights are the average of those at ``paths`` (see the module doc).

    Files are read one at a time; memory holds one checkpoint plus a float64 sum of the weights.

    Raises:
        CheckpointError: a file is unreadable, or two files are not of one model (one line
            naming both files and what differs: config, tokenizer, a tensor, EMA or raw).
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise ValueError("--checkpoints: no checkpoint to average")
    first = read_checkpoint(paths[0])
    reference = {key: value for key, value in first.items() if key != "state_dict"}
    shapes = {key: (value.shape, value.dtype) for key, value in first["state_dict"].items()}
    normalisers = _normaliser_prefixes(first["state_dict"])
    fixed = {  # integer tensors other than counters: must be equal everywhere
        key: value.clone()
        for key, value in first["state_dict"].items()
        if not value.is_floating_point() and key.rpartition(".")[2] not in C.AVERAGE_COUNTER_NAMES
    }
    sums: dict[str, torch.Tensor] = {}
    same_statistics = dict.fromkeys(normalisers, True)
    sources = []
    for index, path in enumerate(paths):
        checkpoint = first if index == 0 else read_checkpoint(path)
        if index:
            _check_same_model(paths[0], reference, shapes, fixed, path, checkpoint)
        state = checkpoint["state_dict"]
        for prefix in normalisers:
            scale = torch.rsqrt(state[prefix + "var"].double() + C.FEATURE_NORM_EPS)
            _add(sums, prefix + "scale", scale)
            _add(sums, prefix + "shift", -state[prefix + "mean"].double() * scale)
            same_statistics[prefix] &= all(
                torch.equal(state[prefix + name], first["state_dict"][prefix + name])
                for name in ("mean", "var")
            )
        for key, value in state.items():
            if key.rpartition(".")[2] in C.AVERAGE_COUNTER_NAMES:
                sums[key] = torch.maximum(sums[key], value) if key in sums else value.clone()
            elif value.is_floating_point() and not _is_statistic(key, normalisers):
                _add(sums, key, value.double())
        sources.append(
            {
                "path": str(path),
                "epoch": checkpoint.get("epoch"),
                "global_step": checkpoint.get("global_step"),
            }
        )
        del checkpoint, state
    averaged = {}
    for key, (_, dtype) in shapes.items():
        if key in fixed:
            averaged[key] = fixed[key]
        elif key.rpartition(".")[2] in C.AVERAGE_COUNTER_NAMES:
            averaged[key] = sums[key]
        elif not _is_statistic(key, normalisers):
            averaged[key] = (sums[key] / len(paths)).to(dtype)
    for prefix in normalisers:
        mean, var = _normaliser_from_map(sums[prefix + "scale"], sums[prefix + "shift"], len(paths))
        if same_statistics[prefix]:  # exactly the statistics every checkpoint holds
            mean, var = first["state_dict"][prefix + "mean"], first["state_dict"][prefix + "var"]
        averaged[prefix + "mean"] = mean.to(shapes[prefix + "mean"][1])
        averaged[prefix + "var"] = var.to(shapes[prefix + "var"][1])
    output: dict[str, Any] = {
        "state_dict": {key: averaged[key] for key in shapes},  # in the model's own order
        MODEL_CONFIG_KEY: reference[MODEL_CONFIG_KEY],
        TOKENIZER_KEY: reference[TOKENIZER_KEY],
        AVERAGED_FROM_KEY: sources,
    }
    output.update({key: reference[key] for key in (*KEPT_KEYS, WEIGHTS_KEY) if key in reference})
    return output


def _add(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    sums[key] = sums[key] + value if key in sums else value.clone()


def _normaliser_prefixes(state_dict: dict[str, torch.Tensor]) -> list[str]:
    # Every FeatureNormalizer: a module whose buffers are exactly mean, var and batches_seen.
    prefixes = {key[: -len("batches_seen")] for key in state_dict if key.endswith("batches_seen")}
    return sorted(
        prefix
        for prefix in prefixes
        if all(prefix + name in state_dict for name in _NORMALISER_STATISTICS)
    )


def _is_statistic(key: str, normalisers: list[str]) -> bool:
    return any(key in (prefix + "mean", prefix + "var") for prefix in normalisers)


def _normaliser_from_map(
    scale_sum: torch.Tensor, shift_sum: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, var)`` (float64, ``(F,)``) of the mean of ``count`` affine maps ``x*scale+shift``.

    ``(x - mean) / sqrt(var + eps)`` is that map: ``scale = 1/sqrt(var + eps)``, ``shift =
    -mean * scale``; the mean of the scales lies between the checkpoints', so ``var`` lies
    between their variances (clamped at 0 against rounding).
    """
    scale, shift = scale_sum / count, shift_sum / count
    return -shift / scale, (scale.reciprocal().square() - C.FEATURE_NORM_EPS).clamp(min=0.0)


def _check_same_model(
    first_path: Path,
    reference: dict[str, Any],
    shapes: dict[str, tuple[torch.Size, torch.dtype]],
    fixed: dict[str, torch.Tensor],
    path: Path,
    checkpoint: dict[str, Any],
) -> None:
    # One line naming both files and the first difference found.
    difference = _config_difference(reference[MODEL_CONFIG_KEY], checkpoint[MODEL_CONFIG_KEY])
    difference = difference or _tokenizer_difference(
        reference[TOKENIZER_KEY], checkpoint[TOKENIZER_KEY]
    )
    kinds = reference.get(WEIGHTS_KEY, "raw"), checkpoint.get(WEIGHTS_KEY, "raw")
    if not difference and kinds[0] != kinds[1]:
        difference = (
            f"{kinds[0]} weights vs {kinds[1]} weights (their '{WEIGHTS_KEY}'); average "
            "checkpoints that carry the same kind"
        )
    state = checkpoint["state_dict"]
    if not difference:
        missing = [key for key in shapes if key not in state]
        unexpected = [key for key in state if key not in shapes]
        if missing or unexpected:
            where = f"missing in {path.name}" if missing else f"only in {path.name}"
            more = len(missing or unexpected) - 1
            difference = f"tensor {(missing or unexpected)[0]} {where}" + (
                f" (and {more} more)" if more else ""
            )
    if not difference:
        for key, (shape, dtype) in shapes.items():
            if state[key].shape != shape or state[key].dtype != dtype:
                difference = (
                    f"tensor {key} is {tuple(shape)} {dtype} vs "
                    f"{tuple(state[key].shape)} {state[key].dtype}"
                )
                break
            if key in fixed and not torch.equal(fixed[key], state[key]):
                difference = f"integer tensor {key} differs"
                break
    if difference:
        raise CheckpointError(
            f"{first_path} and {path} are not checkpoints of one model: {difference}; "
            "average checkpoints of one run"
        )


def _config_difference(first: dict[str, Any], other: dict[str, Any]) -> str:
    ours, theirs = stored_config(first).to_dict(), stored_config(other).to_dict()
    fields = [
        f"{field} {ours.get(field)!r} vs {theirs.get(field)!r}"
        for field in sorted(set(ours) | set(theirs))
        if field not in C.AVERAGE_TRAINING_ONLY_FIELDS and ours.get(field) != theirs.get(field)
    ]
    return f"model config {', '.join(fields)}" if fields else ""


def _tokenizer_difference(first: bytes, other: bytes) -> str:
    if first == other:
        return ""
    ours, theirs = Tokenizer.from_bytes(first), Tokenizer.from_bytes(other)
    if ours.num_classes != theirs.num_classes:
        return f"tokenizers of {ours.vocab_size} vs {theirs.vocab_size} pieces"
    for index in range(ours.num_classes):
        if ours.id_to_piece(index) != theirs.id_to_piece(index):
            return (
                f"tokenizers of the same size that differ (id {index} is "
                f"{ours.id_to_piece(index)!r} vs {theirs.id_to_piece(index)!r})"
            )
    return ""  # the same pieces in the same order: one tokenizer for decoding


def write_average(paths: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Average the checkpoints at ``paths`` into ``out`` (written atomically); returns it."""
    checkpoint = average_checkpoints(paths)
    write_checkpoint(checkpoint, out)
    return checkpoint


def refuse_resuming(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse, in one line, to resume training (``rnnt fit --ckpt_path``) from an average.

    Raises:
        CheckpointError: ``checkpoint`` was written by ``rnnt average``.
    """
    if AVERAGED_FROM_KEY in checkpoint:
        raise CheckpointError(
            f"{path}: an average of {len(checkpoint[AVERAGED_FROM_KEY])} checkpoints "
            "(rnnt average) holds weights only, no optimizer, schedule or data position to "
            f"resume; fine-tune from it in a new run with --model.init_from {path}, or "
            "evaluate it with `rnnt validate|test --ckpt_path`"
        )
