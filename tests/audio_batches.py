"""Padded random audio batches that the front-end tests share."""

from __future__ import annotations

import torch

LENGTHS = [16_000, 12_345, 8_000, 401, 48_017]  # samples: 1 s, odd, short, one window, long


def random_audio_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Quiet Gaussian noise ``(B, S)`` padded with zeros past ``lengths (B,)``, and the lengths."""
    generator = torch.Generator().manual_seed(seed)
    audio = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        audio[row, :length] = 0.1 * torch.randn(length, generator=generator)
    return audio, torch.tensor(lengths)
