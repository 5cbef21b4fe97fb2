"""Batched greedy transducer decoding by label looping, with a bounded number of host reads.

Shapes: B batch, T' encoder frames, D encoder dimension, J joiner dimension, V classes (blank
included), W frames looked at in one step (``LOOKAHEAD_FRAMES``).

Greedy search walks each utterance's frames: at a frame it emits the argmax class; a token
advances the prediction network and the frame is tried again, at most
``max_symbols_per_frame`` times; blank moves on to the next frame. A frame loop (one joiner
call per frame and per symbol, for the whole batch) has to ask the host after every call
whether any utterance is still on the frame. Here the loop runs over labels instead (as NeMo's
label-looping greedy decoder does): every utterance keeps its own frame pointer, and one step
finds each utterance's next token. While an utterance takes blanks its prediction output does
not change, so the step runs the joiner on the next W frames of every utterance at once and
takes the first frame whose argmax is a token; the prediction network then advances only the
utterances that emitted (it runs for all rows, the others keep their state). A step costs one
joiner call on ``(B, W)`` frames and one prediction step, and emits one token per utterance or
moves it W frames on; the number of steps is about the most tokens of one utterance, not the
frames times the symbols.

Nothing inside a step reads the device. The host asks "is every utterance past its last
frame?" only between chunks of steps: the first chunk is ``ceil(T' / W)`` steps (no utterance
can be done sooner), and each check reads two numbers at once: a lower bound on the steps still
needed (the most frames any utterance has left, over W) and an estimate (each utterance's
frames left at its pace so far). The next chunk is the largest of the bound, half the estimate
and ``CHECK_GROWTH`` times the steps run so far; the last makes the number of checks bounded
whatever T' (:func:`greedy_host_reads_bound`: 34 reads at most for 5 symbols per frame), the
estimate makes them few in practice (6-8 per batch on ``benchmarks/decode.py``'s tiny model,
2 when no utterance emits) with few steps run after every utterance is done (3 % there).
Those steps change nothing: a done utterance's frame pointer is past its last frame.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from rnnt.constants import MAX_SYMBOLS_PER_FRAME
from rnnt.timestamps import Alignment

if TYPE_CHECKING:
    from rnnt.models.transducer import Transducer

# Frames the joiner scores per utterance in one step. A run of blank shorter than W costs one
# step, a longer one a step per W frames; the joiner's work grows with W. On the tiny model at
# 0.4 tokens per frame (benchmarks/decode.py, CPU) 4 and 8 were as fast, 16 slower; 8 takes
# fewer steps, what a GPU (bound by kernel launches) prefers.
LOOKAHEAD_FRAMES = 8
# A chunk of steps between two host reads is at least this share of the estimate of the steps
# still needed: half keeps the steps run after every utterance is done few...
ESTIMATE_SHARE = 0.5
# ...and at least this share of the steps run so far, so the checks grow geometrically and
# their number is bounded whatever T' (greedy_host_reads_bound).
CHECK_GROWTH = 0.125


def greedy_search(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
) -> list[list[int]]:
    """Batched greedy transducer decoding (label looping).

    At each frame every utterance emits the most likely class; a non-blank token is kept,
    the prediction network advances (for that utterance only) and the same frame is tried
    again, at most ``max_symbols_per_frame`` times; blank moves on to the next frame. Ties go
    to the lower class id (``argmax``). Each utterance's computation is independent of the
    others, so an utterance decodes to the same ids alone or inside a padded batch. The
    prediction network and joiner run in eval mode (no dropout) whatever the model's mode; it
    is restored afterwards. The host reads device values at most
    ``greedy_host_reads_bound(max_symbols_per_frame)`` times per call (34 for the default
    5 symbols; 6-8 on the batches of ``benchmarks/decode.py``), whatever the number of
    frames: see the module docstring.

    Args:
        model: a :class:`Transducer` (uses ``decoder``, ``joiner`` and ``config.blank_id``).
        encoder_out: ``(B, T', D)`` encoder frames, padded.
        encoder_lengths: ``(B,)`` valid frames (at most T').
        max_symbols_per_frame: most tokens emitted at one frame (>= 1).

    Returns:
        ``B`` lists of token ids, blank removed.
    """
    return _run(model, encoder_out, encoder_lengths, max_symbols_per_frame, record=False)


def greedy_alignments(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
) -> list[Alignment]:
    """As :func:`greedy_search`, with each token's encoder frame and log-probability (the
    joiner's ``log_softmax`` at that frame): the word timestamps and confidences of
    :mod:`rnnt.timestamps`. Same ids, same host reads; each step also gathers the emitted
    frame's logits and normalises them (one ``(B, V)`` ``log_softmax``)."""
    return _run(model, encoder_out, encoder_lengths, max_symbols_per_frame, record=True)


def _run(model, encoder_out, encoder_lengths, max_symbols_per_frame, record):
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame={max_symbols_per_frame} must be >= 1.")
    with decoding_mode(model) as (decoder, joiner):
        return _label_looping(
            decoder, joiner, model.config.blank_id, encoder_out, encoder_lengths,
            max_symbols_per_frame, record,
        )  # fmt: skip


@contextlib.contextmanager
def decoding_mode(model: Transducer) -> Iterator[tuple[torch.nn.Module, torch.nn.Module]]:
    """The model's prediction network and joiner in eval mode (no dropout) under
    ``torch.inference_mode``; their modes are restored afterwards, whatever happens."""
    decoder, joiner = model.decoder, model.joiner
    modes = (decoder.training, joiner.training)
    decoder.eval()
    joiner.eval()
    try:
        with torch.inference_mode():
            yield decoder, joiner
    finally:
        decoder.train(modes[0])
        joiner.train(modes[1])


def greedy_host_reads_bound(max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME) -> int:
    """Most host reads of one :func:`greedy_search` call, for any batch and any T'.

    One read per check plus one for the token ids at the end. An utterance needs at most
    ``T' * max_symbols_per_frame`` steps that emit and ``ceil(T' / W)`` that do not, so at most
    ``W * max_symbols_per_frame + 1`` times the first chunk of ``ceil(T' / W)`` steps; the
    chunks grow by at least ``1 + CHECK_GROWTH``, so ``1 + ceil(log_(1 + CHECK_GROWTH)(that
    ratio))`` checks reach it. A model that never emits needs 2 reads.
    """
    ratio = LOOKAHEAD_FRAMES * max_symbols_per_frame + 1
    return 2 + math.ceil(math.log(ratio) / math.log(1 + CHECK_GROWTH))


def _label_looping(
    decoder: torch.nn.Module,
    joiner: torch.nn.Module,
    blank: int,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    max_symbols: int,
    record: bool,
) -> list[list[int]] | list[Alignment]:
    # Token ids per utterance, or (record) alignments: ids with frames and log-probabilities.
    batch, frames, _ = encoder_out.shape
    if batch == 0 or frames == 0:
        return [Alignment([], [], []) if record else [] for _ in range(batch)]
    device = encoder_out.device
    window = min(LOOKAHEAD_FRAMES, frames)
    lengths = encoder_lengths.to(device).clamp(max=frames)  # (B,)
    encoder_proj = joiner.encoder_proj(encoder_out).flatten(0, 1)  # (B * T', J)
    state = decoder.initial_state(batch, device)
    decoder_out, state = decoder.step(torch.full((batch,), blank, device=device), state)
    predictor_proj = joiner.predictor_proj(decoder_out)  # (B, J)
    row_starts = torch.arange(batch, device=device).unsqueeze(1) * frames  # (B, 1)
    offsets = torch.arange(window, device=device)  # (W,)
    frame = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) each one's frame pointer
    symbols = torch.zeros_like(frame)  # (B,) tokens emitted at that frame so far
    none = torch.full_like(frame, -1)  # (B,) the id recorded for no token
    emitted: list[torch.Tensor] = []  # per step: (B,) the token emitted, -1 for none
    emitted_frames: list[torch.Tensor] = []  # per step (record): (B,) the frame it was emitted at
    emitted_log_probs: list[torch.Tensor] = []  # per step (record): (B,) its log-probability
    chunk = -(-frames // window)  # no utterance is done in fewer steps
    while chunk > 0:
        for _ in range(chunk):
            window_frames = frame.unsqueeze(1) + offsets  # (B, W)
            valid = window_frames < lengths.unsqueeze(1)
            flat = (row_starts + window_frames.clamp(max=frames - 1)).view(-1)  # (B * W,)
            frames_proj = encoder_proj.index_select(0, flat).view(batch, window, -1)  # (B, W, J)
            logits = joiner(frames_proj, predictor_proj.unsqueeze(1))  # (B, W, V)
            tokens = logits.argmax(dim=-1)  # (B, W)
            found = valid & (tokens != blank)
            first = torch.where(found, offsets, window).amin(dim=1)  # (B,) first token, or W
            emit = first < window
            at = first.clamp(max=window - 1).unsqueeze(1)  # (B, 1)
            token = tokens.gather(1, at).squeeze(1)
            if record:
                row = logits.gather(1, at.unsqueeze(2).expand(-1, -1, logits.size(2))).squeeze(1)
                log_prob = row.float().log_softmax(dim=-1).gather(1, token.unsqueeze(1))
                emitted_log_probs.append(log_prob.squeeze(1))
                emitted_frames.append(frame + first)
            count = symbols * (first == 0) + 1  # tokens at that frame, this one included
            capped = emit & (count >= max_symbols)  # the frame's last try: move on after it
            frame = frame + first + capped  # W frames on when no token
            symbols = count * (emit ^ capped)
            emitted.append(torch.where(emit, token, none))
            step_out, step_state = decoder.step(token, state)
            keep = emit.view(1, batch, 1)
            state = (
                torch.where(keep, step_state[0], state[0]),
                torch.where(keep, step_state[1], state[1]),
            )
            predictor_proj = torch.where(
                emit.unsqueeze(1), joiner.predictor_proj(step_out), predictor_proj
            )
        steps = len(emitted)
        left = (lengths - frame).clamp(min=0)  # (B,) frames each utterance has left
        bound = (left + window - 1) // window  # steps it needs at least
        pace = left * steps / frame.clamp(min=1)  # steps it needs at its pace so far
        needed, estimate = torch.stack((bound.max(), pace.max())).tolist()  # the check's read
        growth = max(ESTIMATE_SHARE * estimate, CHECK_GROWTH * steps)
        chunk = max(int(needed), math.ceil(growth)) if needed else 0
    ids = torch.stack(emitted, dim=1)  # (B, steps)
    if not record:
        rows = ids.tolist()  # the one read of the results
        return [[token for token in row if token >= 0] for row in rows]
    parts = (ids, torch.stack(emitted_frames, dim=1), torch.stack(emitted_log_probs, dim=1))
    results = torch.stack([part.double() for part in parts], dim=1).tolist()  # (B, 3, steps)
    alignments = []
    for row_ids, row_frames, row_log_probs in results:
        kept = [step for step, token in enumerate(row_ids) if token >= 0]
        alignments.append(
            Alignment(
                [int(row_ids[step]) for step in kept],
                [int(row_frames[step]) for step in kept],
                [row_log_probs[step] for step in kept],
            )
        )
    return alignments
