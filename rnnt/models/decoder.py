"""Prediction network: the transducer's label-side language model (embedding + LSTM).

Shapes: B batch, U target tokens, H hidden size, L LSTM layers.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnt.constants import BLANK_ID, DROPOUT

LstmState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (L, B, H)


class PredictionNetwork(nn.Module):
    """Embeds the previous token and runs an LSTM over the token history.

    Blank doubles as the start symbol: output ``u`` summarises tokens ``< u``, so the
    training forward prepends blank and gives ``U + 1`` outputs for ``U`` targets.

    Args:
        num_classes: V, vocabulary size including blank.
        embed_dim: token embedding size.
        hidden_dim: H, LSTM size (and output size).
        num_layers: L, stacked LSTM layers.
        dropout: dropout on the embeddings, between LSTM layers and on the output.
        blank_id: index of blank, used as the start symbol.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        hidden_dim: int,
        num_layers: int,
        dropout: float = DROPOUT,
        blank_id: int = BLANK_ID,
    ) -> None:
        super().__init__()
        self.blank_id = blank_id
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(num_classes, embed_dim)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """Prediction outputs for every prefix of the targets.

        Args:
            targets: ``(B, U)`` token ids, padded (any id) past ``target_lengths``.
            target_lengths: ``(B,)`` valid tokens. The LSTM runs left to right, so the outputs
                ``0 .. target_lengths[b]`` never see the padding and need no packing.

        Returns:
            ``(B, U + 1, H)``: output ``u`` has seen blank followed by ``targets[:, :u]``.
        """
        start = torch.full_like(targets[:, :1], self.blank_id)
        tokens = torch.cat((start, targets), dim=1).long()
        output, _ = self._lstm(self.dropout(self.embedding(tokens)), None)
        return self.dropout(output)

    def initial_state(self, batch_size: int, device: torch.device) -> LstmState:
        """Zero state ``(h, c)``, each ``(L, B, H)``, before any token (feed blank first)."""
        weight = self.lstm.weight_hh_l0
        shape = (self.num_layers, batch_size, self.hidden_dim)
        zeros = torch.zeros(shape, device=device, dtype=weight.dtype)
        return zeros, zeros.clone()

    def step(self, tokens: torch.Tensor, state: LstmState) -> tuple[torch.Tensor, LstmState]:
        """One token per utterance: ``tokens (B,)`` and state to ``output (B, H)`` and new state."""
        embedded = self.dropout(self.embedding(tokens.long().unsqueeze(1)))
        output, state = self._lstm(embedded, state)
        return self.dropout(output.squeeze(1)), state

    def _lstm(
        self, inputs: torch.Tensor, state: LstmState | None
    ) -> tuple[torch.Tensor, LstmState]:
        # oneDNN has no bf16 LSTM on CPUs without native bf16 ("could not create a primitive
        # descriptor"), so under CPU autocast the LSTM runs in float32; GPUs keep autocast.
        if inputs.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return self.lstm(inputs, state)
        with torch.autocast("cpu", enabled=False):
            if state is not None:
                state = (state[0].float(), state[1].float())
            return self.lstm(inputs.float(), state)
