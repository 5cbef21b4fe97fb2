"""The one padding mask every module of the model uses."""

from __future__ import annotations

import torch


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B, max_length)`` bool, True on the valid frames ``t < lengths[b]``."""
    return torch.arange(max_length, device=lengths.device) < lengths.unsqueeze(1)
