"""Joint network: combines an encoder frame with a prediction output into token logits.

``logits = output(act(encoder_proj(encoder_out) + predictor_proj(decoder_out)))``. Training
never calls :meth:`Joiner.forward` on the whole lattice: the fused loss in ``rnnt/loss/fused.py``
takes the two projections and the output layer's weights and builds the logits chunk by chunk.
Decoding calls it one frame at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnt.constants import JOINER_ACTIVATION

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "silu": F.silu}


class Joiner(nn.Module):
    """Args: encoder_dim (D), predictor_dim (H), joiner_dim (J), num_classes (V, with blank),
    activation (``tanh``, ``relu`` or ``silu``)."""

    def __init__(
        self,
        encoder_dim: int,
        predictor_dim: int,
        joiner_dim: int,
        num_classes: int,
        activation: str = JOINER_ACTIVATION,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"joiner_activation={activation!r} is not one of {sorted(ACTIVATIONS)}."
            )
        self.activation = activation
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joiner_dim)
        self.output = nn.Linear(joiner_dim, num_classes)

    def forward(self, encoder_proj: torch.Tensor, predictor_proj: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., V)`` from projected inputs ``(..., J)`` that broadcast together,
        e.g. ``(B, T, 1, J)`` and ``(B, 1, U + 1, J)``, or ``(B, J)`` and ``(B, J)``."""
        return self.output(ACTIVATIONS[self.activation](encoder_proj + predictor_proj))
