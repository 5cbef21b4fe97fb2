"""Global mean and variance normalisation of log-mel features, learned online in training.

``FeatureNormalizer`` sits between the front end and the encoder; its running statistics
are buffers, saved with the weights and frozen in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnt.constants import FEATURE_NORM_EPS, FEATURE_NORM_MOMENTUM, N_MELS
from rnnt.models.masks import padding_mask


class FeatureNormalizer(nn.Module):
    """Global mean and variance normalisation of log-mel bins, estimated while training.

    Raw log-mel values sit far from zero (about -8 ± 5 for speech at ordinary levels), which
    slows the first layers' learning; per-utterance normalisation would need the whole
    utterance, which streaming does not have. So each bin is normalised with running
    statistics of the training set (a global CMVN learned online, like a batch norm without
    affine that never uses batch statistics directly): updated from the valid frames of each
    training batch, frozen in eval mode, saved with the weights. Being a per-frame affine
    map, it keeps features padding-invariant and streaming-friendly.
    """

    def __init__(self, n_mels: int = N_MELS, momentum: float = FEATURE_NORM_MOMENTUM) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("var", torch.ones(n_mels))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> None:
        valid = padding_mask(feature_lengths, features.size(1)).unsqueeze(-1)
        count = valid.sum().clamp(min=1)
        mean = (features * valid).sum(dim=(0, 1)) / count
        var = (((features - mean) ** 2) * valid).sum(dim=(0, 1)) / count
        # A cumulative average at first, so early batches are not dominated by the zero init;
        # computed on the device (a float() of the count would wait for it on a GPU).
        weight = (self.batches_seen + 1).float().reciprocal().clamp(min=self.momentum)
        # A batch with a non-finite value leaves the statistics as they were (no host sync):
        # one bad batch must not spoil every later step's features.
        finite = torch.isfinite(mean).all() & torch.isfinite(var).all()
        self.mean.copy_(torch.where(finite, torch.lerp(self.mean, mean, weight), self.mean))
        self.var.copy_(torch.where(finite, torch.lerp(self.var, var, weight), self.var))
        self.batches_seen += finite.long()

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` log-mel frames to normalised frames; 0 stays 0 past each length."""
        if self.training:
            self._update(features.float(), feature_lengths)
        normalised = (features - self.mean) * torch.rsqrt(self.var + FEATURE_NORM_EPS)
        valid = padding_mask(feature_lengths, features.size(1)).unsqueeze(-1)
        return normalised.masked_fill(~valid, 0.0)
