"""SpecAugment: random frequency and time masks on log-mel features, in training only.

``SpecAugment`` draws every mask of a batch at once and fills masked values with each
utterance's mean feature value; in eval mode it returns its input unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnt.constants import (
    FREQ_MASK_WIDTH,
    FREQ_MASKS,
    HOP_LENGTH_S,
    TIME_MASK_RATIO,
    TIME_MASKS_MAX,
    TIME_MASKS_PER_SECOND,
)
from rnnt.models.masks import padding_mask


class SpecAugment(nn.Module):
    """Frequency and time masking of log-mel features, in training mode only.

    Each utterance gets ``freq_masks`` bands of up to ``freq_mask_width`` bins and
    ``min(time_masks_max, floor(time_masks_per_second * seconds))`` time spans of up to
    ``time_mask_ratio`` of its own frames; masked values are set to the utterance's mean
    feature value. All masks of the batch are drawn at once (no loop over utterances).
    """

    def __init__(
        self,
        freq_masks: int = FREQ_MASKS,
        freq_mask_width: int = FREQ_MASK_WIDTH,
        time_masks_max: int = TIME_MASKS_MAX,
        time_mask_ratio: float = TIME_MASK_RATIO,
        time_masks_per_second: float = TIME_MASKS_PER_SECOND,
        hop_length_s: float = HOP_LENGTH_S,
    ) -> None:
        super().__init__()
        self.freq_masks = freq_masks
        self.freq_mask_width = freq_mask_width
        self.time_masks_max = time_masks_max
        self.time_mask_ratio = time_mask_ratio
        self.time_masks_per_second = time_masks_per_second
        self.hop_length_s = hop_length_s

    @staticmethod
    def _spans(
        extent: torch.Tensor,
        max_width: torch.Tensor,
        count: torch.Tensor,
        max_count: int,
        size: int,
    ) -> torch.Tensor:
        """``(B, size)`` bool: the union of ``count[b]`` random spans of row ``b``, each of
        width uniform in ``[0, max_width[b]]`` and lying inside ``[0, extent[b])``.

        ``max_count`` spans are drawn for every row and those past the row's own count are
        given width 0, so that the whole batch is drawn at once.
        """
        batch = extent.size(0)
        device = extent.device
        if max_count <= 0 or size == 0:
            return torch.zeros(batch, size, dtype=torch.bool, device=device)
        draw = torch.rand(batch, max_count, 2, device=device)
        width = (draw[..., 0] * (max_width.unsqueeze(1) + 1)).long()
        width = torch.minimum(width, extent.unsqueeze(1))
        width = width * (torch.arange(max_count, device=device) < count.unsqueeze(1))
        start = (draw[..., 1] * (extent.unsqueeze(1) - width + 1)).long()
        axis = torch.arange(size, device=device).view(1, 1, size)
        inside = (axis >= start.unsqueeze(-1)) & (axis < (start + width).unsqueeze(-1))
        return inside.any(dim=1)

    def masks(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, F)`` bool, True where a value is masked (never on padded frames)."""
        batch, num_frames, num_bins = features.shape
        device = features.device
        lengths = feature_lengths.to(device=device, dtype=torch.long)
        bins = torch.full((batch,), num_bins, device=device, dtype=torch.long)
        freq = self._spans(
            extent=bins,
            max_width=torch.full_like(bins, self.freq_mask_width),
            count=torch.full_like(bins, self.freq_masks),
            max_count=self.freq_masks,
            size=num_bins,
        )
        seconds = lengths.float() * self.hop_length_s
        time_count = (seconds * self.time_masks_per_second).floor().long()
        time = self._spans(
            extent=lengths,
            max_width=(lengths.float() * self.time_mask_ratio).floor().long(),
            count=time_count.clamp(max=self.time_masks_max),
            max_count=self.time_masks_max,
            size=num_frames,
        )
        valid = padding_mask(lengths.to(device), num_frames)
        return (freq.unsqueeze(1) | time.unsqueeze(2)) & valid.unsqueeze(2)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> torch.Tensor:
        """Masked copy of ``features (B, T, F)`` in training mode; ``features`` itself in eval.

        Args:
            features: ``(B, T, F)`` log-mel frames, padded.
            feature_lengths: ``(B,)`` valid frames.
        """
        if not self.training:
            return features
        masked = self.masks(features, feature_lengths)
        valid = padding_mask(feature_lengths.to(features.device), features.size(1)).unsqueeze(-1)
        count = (feature_lengths.to(features.device).clamp(min=1) * features.size(2)).view(-1, 1, 1)
        mean = (features * valid).sum(dim=(1, 2), keepdim=True) / count
        return torch.where(masked, mean.to(features.dtype), features)
