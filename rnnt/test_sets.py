"""Several test sets: ``rnnt test --data.test_manifest '[a.jsonl, b.jsonl]'`` scores each in
turn and reports a WER per set; ``rnnt demo`` scores its held-out splits the same way.

Each set gets its own ``trainer.test`` on the same ``TransducerDataModule`` (switched with
``use_test_manifest``), so it is scored exactly as it would be alone: its own loader, its own
metric states, the same checkpoint. ``score_test_sets`` checks every manifest first (a missing
one is a one-line error before anything is scored), logs ``test_wer/NAME`` and
``test_loss/NAME`` to the run's loggers (TensorBoard) and returns the figures;
``format_scores`` makes the table ``rnnt test`` prints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnt.constants import TEST_SET_NAME_SUFFIXES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredSet:
    """One test set's figures over every DDP rank: ``utterances`` scored, their reference
    ``words``, ``wer`` (a fraction: 0.05 is 5 %) and ``loss`` (mean transducer loss per
    utterance); None where the test pass logged none."""

    name: str
    manifest: str
    utterances: int
    words: int
    wer: float | None
    loss: float | None


def set_names(manifests: Sequence[str | Path]) -> list[str]:
    """A name per test manifest: its file name less ``TEST_SET_NAME_SUFFIXES`` (``test-clean``
    for ``data/test-clean.jsonl``), after as many parent folders as make the names distinct
    (``a/test`` and ``b/test``)."""
    paths = [Path(manifest).resolve() for manifest in manifests]
    stems = []
    for path in paths:
        name = path.name
        for suffix in TEST_SET_NAME_SUFFIXES:
            name = name.removesuffix(suffix)
        stems.append(name)
    for depth in range(max(len(path.parts) for path in paths)):
        names = [
            "/".join((*path.parent.parts[len(path.parent.parts) - depth :], stem))
            for path, stem in zip(paths, stems, strict=True)
        ]
        if len(set(names)) == len(names):
            return names
    return [str(path) for path in paths]


def check_test_manifests(manifests: Sequence[str | Path]) -> None:
    """Every test manifest must be a file, named once: a one-line error naming the first that
    is not, before any set is scored."""
    seen: dict[Path, str | Path] = {}
    for manifest in manifests:
        path = Path(manifest)
        if not path.is_file():
            what = "is a folder; give a file" if path.is_dir() else "does not exist"
            raise FileNotFoundError(
                f"--data.test_manifest: {manifest} {what} (no test set was scored)"
            )
        if path.resolve() in seen:
            raise ValueError(
                f"--data.test_manifest names the same file twice: {seen[path.resolve()]}, "
                f"{manifest}"
            )
        seen[path.resolve()] = manifest


def score_test_sets(
    trainer: Any,
    model: Any,
    datamodule: Any,
    manifests: Sequence[str | Path] | None = None,
    ckpt_path: str | Path | None = None,
    **test_kwargs: Any,
) -> list[ScoredSet]:
    """Score ``model`` on each test manifest in turn, one ``trainer.test`` per set, each set
    scored exactly as it would be alone.

    Args:
        trainer, model, datamodule: a Lightning Trainer, a ``TransducerModule`` and a
            ``TransducerDataModule`` (switched from set to set by ``use_test_manifest``).
        manifests: the test sets; None: the datamodule's ``test_manifests``.
        ckpt_path: weights to score, as for ``trainer.test`` (``last`` is found once, so every
            set is scored with the same checkpoint); None: the model's weights as they are.
        test_kwargs: more ``trainer.test`` arguments (``weights_only``).

    Every manifest is checked before the first set is scored (``check_test_manifests``).
    The figures are also logged to the trainer's loggers as ``test_wer/NAME`` and
    ``test_loss/NAME`` (NAME from ``set_names``).
    """
    import torch
    from lightning.pytorch.callbacks import Callback

    class CountScored(Callback):
        # Utterances and reference words of a test pass, summed over the DDP ranks: read at
        # its end, before Lightning resets the module's metrics.
        counts = (0, 0)

        def on_test_end(self, trainer, pl_module) -> None:
            states = [pl_module.test_loss.count, pl_module.test_wer.total]
            local = torch.stack([state.double() for state in states])
            self.counts = tuple(int(n) for n in trainer.strategy.reduce(local, reduce_op="sum"))

    manifests = [str(manifest) for manifest in (manifests or datamodule.test_manifests)]
    check_test_manifests(manifests)
    counter = CountScored()
    trainer.callbacks.append(counter)
    scores = []
    try:
        for name, manifest in zip(set_names(manifests), manifests, strict=True):
            log.info("test set %s: %s", name, manifest)
            datamodule.use_test_manifest(manifest)
            counter.counts = (0, 0)
            results = trainer.test(
                model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, **test_kwargs
            )
            ckpt_path = trainer.ckpt_path or ckpt_path  # "last" as the file it was
            figures = results[0] if results else {}
            wer, loss = figures.get("test_wer"), figures.get("test_loss")
            scores.append(
                ScoredSet(
                    name,
                    manifest,
                    *counter.counts,
                    wer=None if wer is None else float(wer),
                    loss=None if loss is None else float(loss),
                )
            )
    finally:
        trainer.callbacks.remove(counter)
    metrics = {
        f"test_{key}/{score.name}": getattr(score, key)
        for score in scores
        for key in ("wer", "loss")
    }
    metrics = {key: value for key, value in metrics.items() if value is not None}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.save()
    return scores


def format_scores(scores: Sequence[ScoredSet]) -> str:
    """A table of test sets: name, utterances, reference words, WER (%) and loss."""
    width = max(len("test set"), *(len(score.name) for score in scores))
    lines = [f"{'test set':<{width}}  {'utterances':>10}  {'words':>8}  {'WER':>8}  {'loss':>8}"]
    for score in scores:
        wer = "n/a" if score.wer is None else f"{100 * score.wer:.2f} %"
        loss = "n/a" if score.loss is None else f"{score.loss:.4f}"
        lines.append(
            f"{score.name:<{width}}  {score.utterances:>10}  {score.words:>8}  {wer:>8}  {loss:>8}"
        )
    return "\n".join(lines)
