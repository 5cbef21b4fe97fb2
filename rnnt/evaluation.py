"""Validation and test of a batch: the transducer loss and the greedy WER, per attention context.

A model trained at several attention contexts (``rnnt.models.contexts``) is scored at each:
``{split}_loss`` and ``{split}_wer`` are those of its default context (the first listed: what
checkpoints are ranked by), and ``{split}_wer_by_context/NAME`` the WER at every listed
context, one TensorBoard curve each (``NAME``: ``64_7``, ``full``). A model of one context
logs the first two only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchmetrics.text import WordErrorRate

from rnnt.metrics import UtteranceMean
from rnnt.models.contexts import context_name

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from rnnt.models.transducer import Transducer


def context_metrics(contexts: list[list[int]], splits: tuple[str, ...]) -> nn.ModuleDict:
    """One :class:`WordErrorRate` per split and context (``{split}_{NAME}``), none for one
    context. A LightningModule keeps them as a child, so they follow it to its device and sum
    over DDP ranks when computed."""
    if len(contexts) < 2:
        return nn.ModuleDict()
    return nn.ModuleDict(
        {f"{split}_{context_name(c)}": WordErrorRate() for split in splits for c in contexts}
    )


def evaluate_batch(
    module: pl.LightningModule,
    batch: dict[str, Any],
    split: str,
    mean_loss: UtteranceMean,
    wer: WordErrorRate,
    by_context: nn.ModuleDict,
) -> list[tuple[str, str]]:
    """Score ``batch`` and log the figures on ``module`` (whose ``model`` is a
    :class:`Transducer` and ``_decode(encoder_out, encoder_lengths)`` its greedy transcripts);
    returns the batch's (reference, hypothesis) pairs at the default context.

    One encoder pass per context serves both the loss (default context only) and the greedy
    transcripts. Only counted utterances are scored: under DDP the sampler pads the last round
    with copies, and a batch that failed to load is stood in for (``rnnt.data.dataset``).
    """
    model: Transducer = module.model
    counted = batch.get("counted")
    if counted is None:
        counted = torch.ones(len(batch["texts"]), dtype=torch.bool)
    counted = counted.to(batch["audio"].device)
    keep = counted.nonzero().flatten().tolist()
    batch_size = len(batch["texts"])
    contexts = model.encoder.attention_contexts if len(by_context) else [None]
    examples: list[tuple[str, str]] = []
    for index, context in enumerate(contexts):
        encoder_out, encoder_lengths = model.encode(
            batch["audio"], batch["audio_lengths"], attention_context=context
        )
        hypotheses = module._decode(encoder_out, encoder_lengths)
        pairs = [hypotheses[i] for i in keep], [batch["texts"][i] for i in keep]
        if index == 0:
            loss = torch.zeros((), device=encoder_out.device)
            if keep:
                loss = model.loss(
                    encoder_out[counted],
                    encoder_lengths[counted],
                    batch["targets"][counted],
                    batch["target_lengths"][counted],
                )
            mean_loss.update(loss, len(keep))
            wer.update(*pairs)
            # Every rank logs at every step, so that every rank joins the epoch-end reduction.
            module.log(
                f"{split}_loss", mean_loss, prog_bar=True, on_epoch=True, batch_size=batch_size
            )
            module.log(f"{split}_wer", wer, prog_bar=True, on_epoch=True, batch_size=batch_size)
            examples = list(zip(batch["texts"], hypotheses, strict=True))
        if context is not None:
            name = context_name(context)
            metric = by_context[f"{split}_{name}"]
            metric.update(*pairs)
            module.log(
                f"{split}_wer_by_context/{name}", metric, on_epoch=True, batch_size=batch_size
            )
    return examples
