"""``UtteranceMean``: the validation and test loss as a mean over utterances, summed over ranks."""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["UtteranceMean"]


class UtteranceMean(Metric):
    """Mean over utterances of per-batch means, weighted by each batch's utterance count.

    Summed over DDP ranks when computed. (torchmetrics' ``MeanMetric`` drops NaN values, or
    with ``nan_strategy="disable"`` ignores the weights; a diverged model's loss must show.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, batch_mean: torch.Tensor, batch_size: int) -> None:
        """Add a batch: its mean loss (a scalar tensor) over ``batch_size`` utterances."""
        if batch_size:
            self.total += batch_mean.detach().float() * batch_size
            self.count += batch_size

    def compute(self) -> torch.Tensor:
        """The mean over every utterance added (NaN before any)."""
        return self.total / self.count
