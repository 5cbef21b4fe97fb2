"""Today's greedy search before label looping, kept as the reference that
``rnnt.greedy.greedy_search`` must equal token for token (a helper module, not a test file).

It walks the frames in Python and, at each frame, tries again while any utterance emitted a
token: one host read (``bool(searching.any())``) per frame and per symbol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rnnt.models.transducer import Transducer


def frame_loop_greedy_search(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    max_symbols_per_frame: int,
) -> list[list[int]]:
    """Token ids (blank removed) of ``encoder_out (B, T', D)`` with ``encoder_lengths (B,)``,
    as ``rnnt.decoding.greedy_search`` decoded them frame by frame before label looping."""
    decoder, joiner = model.decoder, model.joiner
    modes = (decoder.training, joiner.training)
    decoder.eval()
    joiner.eval()
    try:
        with torch.inference_mode():
            return _greedy(
                decoder,
                joiner,
                model.config.blank_id,
                encoder_out,
                encoder_lengths,
                max_symbols_per_frame,
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
