"""Decoding of transducer encoder output into token ids.

Shapes: B batch, T' encoder frames, D encoder dimension, H prediction dimension, J joiner
dimension, V classes (blank included).

This module imports no model code at import time (``rnnt.models.transducer`` imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rnnt.constants import MAX_SYMBOLS_PER_FRAME

if TYPE_CHECKING:
    from rnnt.models.transducer import Transducer


def greedy_search(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
) -> list[list[int]]:
    """Batched greedy transducer decoding.

    At each frame every utterance emits the most likely class; a non-blank token is kept,
    the prediction network advances (for that utterance only) and the same frame is tried
    again, at most ``max_symbols_per_frame`` times; blank moves on to the next frame. Each
    utterance's computation is independent of the others, so an utterance decodes to the
    same ids alone or inside a padded batch. The prediction network and joiner run in eval
    mode (no dropout) whatever the model's mode; it is restored afterwards.

    Args:
        model: a :class:`Transducer` (uses ``decoder``, ``joiner`` and ``config.blank_id``).
        encoder_out: ``(B, T', D)`` encoder frames, padded.
        encoder_lengths: ``(B,)`` valid frames.
        max_symbols_per_frame: most tokens emitted at one frame (>= 1).

    Returns:
        ``B`` lists of token ids, blank removed.
    """
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame={max_symbols_per_frame} must be >= 1.")
    decoder, joiner = model.decoder, model.joiner
    blank = model.config.blank_id
    modes = (decoder.training, joiner.training)
    decoder.eval()
    joiner.eval()
    try:
        with torch.inference_mode():
            return _greedy(
                decoder, joiner, blank, encoder_out, encoder_lengths, max_symbols_per_frame
            )
    finally:
        decoder.train(modes[0])
        joiner.train(modes[1])


def _greedy(
    decoder: torch.nn.Module,
    joiner: torch.nn.Module,
    blank: int,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    max_symbols: int,
) -> list[list[int]]:
    batch, frames, _ = encoder_out.shape
    device = encoder_out.device
    lengths = encoder_lengths.to(device)
    encoder_proj = joiner.encoder_proj(encoder_out)  # (B, T', J)
    state = decoder.initial_state(batch, device)
    decoder_out, state = decoder.step(torch.full((batch,), blank, device=device), state)
    predictor_proj = joiner.predictor_proj(decoder_out)  # (B, J)
    # Emitted tokens are collected on the device and read back once at the end.
    emitted_tokens: list[torch.Tensor] = []
    emitted_masks: list[torch.Tensor] = []
    for frame in range(frames):
        searching = frame < lengths  # (B,) utterances still looking for a token at this frame
        for _ in range(max_symbols):
            if not bool(searching.any()):
                break
            logits = joiner(encoder_proj[:, frame], predictor_proj)  # (B, V)
            tokens = logits.argmax(dim=-1)
            emit = searching & (tokens != blank)
            emitted_tokens.append(tokens)
            emitted_masks.append(emit)
            step_out, step_state = decoder.step(tokens, state)
            keep = emit.view(1, batch, 1)
            state = (
                torch.where(keep, step_state[0], state[0]),
                torch.where(keep, step_state[1], state[1]),
            )
            predictor_proj = torch.where(
                emit.unsqueeze(1), joiner.predictor_proj(step_out), predictor_proj
            )
            searching = emit
    if not emitted_tokens:
        return [[] for _ in range(batch)]
    tokens = torch.stack(emitted_tokens, dim=1).cpu()
    masks = torch.stack(emitted_masks, dim=1).cpu()
    return [row[mask].tolist() for row, mask in zip(tokens, masks, strict=True)]
