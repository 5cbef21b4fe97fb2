"""Batched modified beam search, resumable chunk by chunk, with alignments and hotword biasing.

Shapes: B batch, T' encoder frames (n of a chunk), D encoder dimension, H prediction
dimension, J joiner dimension, V classes (blank included), K beam size, L LSTM layers, S
hotword-graph states.

:class:`BeamSearch` holds the hypotheses of B utterances as tensors and takes their encoder
frames in one call (:func:`beam_search`) or chunk by chunk (the streaming session): the frames
are searched one at a time either way, so the result does not depend on how they were cut.
Each kept token carries the frame it was emitted at and its joiner log-probability there
(:class:`rnnt.timestamps.Alignment`). With a :class:`rnnt.hotwords.HotwordGraph`, every slot
also holds a graph state, and a token's candidate score gains ``graph.bonus[state, token]``:
hypotheses walking into a phrase earn its bonus token by token and lose it when they leave the
phrase unfinished, or when the utterance ends (``graph.take_back``).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch

from rnnt.timestamps import Alignment

if TYPE_CHECKING:
    from rnnt.hotwords import HotwordGraph

__all__ = ["BeamSearch", "check_beam_size"]

# Token sequences are identified (for merging) by a key: their length and two polynomial hashes
# modulo a 31-bit prime (every product fits in int64); a false match needs an equal length and
# both 31-bit hashes to collide. Appending token v maps key k to (k * MULTIPLIERS + v') % MODULUS
# with v' = (1, v + 1, v + 1).
_KEY_MODULUS = 2_147_483_647
_KEY_MULTIPLIERS = (1, 1_000_003, 998_244_353)


def check_beam_size(beam_size: int) -> None:
    """Raise a ``ValueError`` naming ``beam_size`` unless it is an integer >= 1."""
    try:
        valid = not isinstance(beam_size, bool) and operator.index(beam_size) >= 1
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"beam_size={beam_size!r} must be an integer >= 1 (1 = greedy search).")


class BeamSearch:
    """The hypotheses of ``batch`` utterances, K slots each, as tensors (slot tensors ``(B, K)``).

    A slot holds a score (``-inf`` = empty), whether it is done with the current frame, the
    key of its token sequence ``(B, K, 3)``, its hotword-graph state, and its cached prediction
    state: the joiner's projection of the prediction output ``(B*K, J)`` and the LSTM state
    ``(L, B*K, H)``. Token sequences, frames and log-probabilities are read back at the end
    from per-round back-pointers. Call it under ``torch.inference_mode`` with the prediction
    network and joiner in eval mode (``rnnt.greedy.decoding_mode``).

    Args:
        decoder, joiner: the model's prediction network and joiner.
        blank: the blank class.
        beam_size: K, hypotheses kept per utterance (>= 1).
        max_symbols: most tokens a hypothesis emits at one frame (>= 1).
        batch: B utterances.
        device: where the slots live.
        hotwords: a graph on ``device`` to bias towards, or None.
    """

    def __init__(
        self,
        decoder: torch.nn.Module,
        joiner: torch.nn.Module,
        blank: int,
        beam_size: int,
        max_symbols: int,
        batch: int,
        device: torch.device | str,
        hotwords: HotwordGraph | None = None,
    ) -> None:
        check_beam_size(beam_size)
        if max_symbols < 1:
            raise ValueError(f"max_symbols_per_frame={max_symbols} must be >= 1.")
        self.decoder, self.joiner, self.blank = decoder, joiner, blank
        self.beam, self.max_symbols, self.hotwords = (
            operator.index(beam_size),
            max_symbols,
            hotwords,
        )
        beam = self.beam
        self.scores = torch.full((batch, beam), float("-inf"), device=device)
        self.scores[:, 0] = 0.0  # one empty hypothesis per utterance
        self.keys = torch.zeros(batch, beam, len(_KEY_MULTIPLIERS), dtype=torch.long, device=device)
        self.multipliers = torch.tensor(_KEY_MULTIPLIERS, device=device)
        self.offsets = torch.arange(batch, device=device).unsqueeze(1) * beam  # (B, 1) first slot
        self.earlier = torch.ones(beam, beam, dtype=torch.bool, device=device).tril(-1)  # j < i
        self.states = torch.zeros(batch, beam, dtype=torch.long, device=device)  # graph states
        lstm_state = decoder.initial_state(batch * beam, device)
        start = torch.full((batch * beam,), blank, device=device)
        decoder_out, self.state = decoder.step(start, lstm_state)
        self.predictor_proj = joiner.predictor_proj(decoder_out)  # (B*K, J)
        self.frames_seen = 0  # frames taken so far: the next frame's index
        self.parents: list[torch.Tensor] = []  # per round: (B, K) slot each slot came from
        self.tokens: list[torch.Tensor] = []  # per round: (B, K) token it added, -1 for none
        self.log_probs: list[torch.Tensor] = []  # per round: (B, K) that token's log-probability
        self.round_frames: list[int] = []  # per round: the frame it expanded
        self.history: list[list[_Node | None]] | None = None  # (B, K) slots' pasts (compact)

    def advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Search the next frames ``(B, n, D)``; ``lengths (B,)``: how many of them are valid
        for each utterance (default all). An utterance past its valid frames keeps its slots."""
        batch, frames, _ = encoder_out.shape
        encoder_proj = self.joiner.encoder_proj(encoder_out)  # (B, n, J)
        lengths = None if lengths is None else lengths.to(encoder_out.device)
        for frame in range(frames):
            if lengths is None:
                self.done = torch.zeros_like(self.scores, dtype=torch.bool)
            else:  # utterances past their end are done with every frame
                self.done = (frame >= lengths).unsqueeze(1).expand_as(self.scores).clone()
            for _ in range(self.max_symbols):
                active = ~self.done & torch.isfinite(self.scores)
                if not bool(active.any()):
                    break
                self.round_frames.append(self.frames_seen + frame)
                self._round(encoder_proj[:, frame], active)
            self.scores = self._merge(self.scores)
        self.frames_seen += frames

    def best(self, nbest: int = 1, final: bool = True) -> list[list[tuple[Alignment, float]]]:
        """Up to ``nbest`` hypotheses per utterance with their scores, best first.

        A score is the natural-log probability of the hypothesis summed over the alignments the
        search merged into it, plus its hotword bonus. ``final`` takes back the bonus of
        unfinished phrases first (the utterance has ended); ``False`` ranks the hypotheses as
        the search does now (partial results while streaming).
        """
        scores = self.scores
        if final and self.hotwords is not None:
            scores = scores + self.hotwords.take_back[self.states]
        top, slots = scores.topk(min(nbest, self.beam), dim=1)  # (B, N), best first
        results = []
        for alignments, row in zip(self._backtrack(slots), top.tolist(), strict=True):
            pairs = zip(alignments, row, strict=True)
            results.append(
                [(alignment, score) for alignment, score in pairs if score > float("-inf")]
            )
        return results

    def _round(self, frame_proj: torch.Tensor, active: torch.Tensor) -> None:
        """One expansion of the slots still on the frame; ``frame_proj (B, J)``, ``active (B, K)``."""
        batch, beam = active.shape
        rows = active.view(-1).nonzero().squeeze(1)  # flat slots that expand
        logits = self.joiner(frame_proj[rows // beam], self.predictor_proj[rows])  # (R, V)
        num_classes = logits.size(-1)
        log_probs = self.scores.new_full((batch * beam, num_classes), float("-inf"))
        log_probs[rows] = logits.float().log_softmax(dim=-1)
        candidates = self.scores.view(-1, 1) + log_probs
        if self.hotwords is not None:
            candidates += self.hotwords.bonus[self.states.view(-1)]  # blank's bonus is 0
        candidates = candidates.view(batch, beam, num_classes)
        # The blank column holds every "same sequence, done with the frame" candidate: blank
        # taken by an expanding slot, or the kept score of a slot already done.
        stay = torch.where(self.done, self.scores, candidates[..., self.blank])
        candidates[..., self.blank] = self._merge(stay)
        scores, index = candidates.view(batch, beam * num_classes).topk(beam, dim=1)
        parents, tokens = index // num_classes, index % num_classes
        extended = (tokens != self.blank) & torch.isfinite(scores)
        self.parents.append(parents)
        self.tokens.append(torch.where(extended, tokens, -1))
        self.log_probs.append(log_probs.view(batch, -1).gather(1, index))
        flat = (self.offsets + parents).view(-1)
        self.scores = scores
        self.done = ~extended
        keys = self.keys.view(batch * beam, -1)[flat].view_as(self.keys)
        appended = (tokens + 1).unsqueeze(2).expand_as(keys).clone()
        appended[..., 0] = 1  # the length grows by one
        grown = (keys * self.multipliers + appended) % _KEY_MODULUS
        self.keys = torch.where(extended.unsqueeze(2), grown, keys)
        if self.hotwords is not None:
            states = self.states.view(-1)[flat].view_as(parents)
            moved = self.hotwords.next_state[states, tokens]
            self.states = torch.where(extended, moved, states)
        self.predictor_proj = self.predictor_proj[flat]
        hidden, cell = (part[:, flat] for part in self.state)
        grown_rows = extended.view(-1).nonzero().squeeze(1)
        if grown_rows.numel():  # only new token extensions run the prediction network
            step_tokens = tokens.view(-1)[grown_rows]
            step_state = (hidden[:, grown_rows], cell[:, grown_rows])
            decoder_out, (new_hidden, new_cell) = self.decoder.step(step_tokens, step_state)
            self.predictor_proj[grown_rows] = self.joiner.predictor_proj(decoder_out)
            hidden[:, grown_rows] = new_hidden
            cell[:, grown_rows] = new_cell
        self.state = (hidden, cell)

    def _merge(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, K)`` with slots of equal token sequences log-added into the first of
        them; the others become ``-inf``. Meant for slots that are all done with the frame.
        (Equal sequences share their hotword state and bonus, so the sum stays exact.)"""
        valid = torch.isfinite(scores)
        same = (self.keys.unsqueeze(2) == self.keys.unsqueeze(1)).all(dim=3)  # (B, K, K)
        same &= valid.unsqueeze(2) & valid.unsqueeze(1)
        merged = torch.where(same, scores.unsqueeze(1), float("-inf")).logsumexp(dim=2)
        first = ~(same & self.earlier).any(dim=2)
        return torch.where(valid & first, merged, float("-inf"))

    def compact(self) -> None:
        """Fold the back-pointers of the rounds so far into each slot's history and drop them,
        so that reading results later walks only the newer rounds. A stream calls it after each
        chunk: its cost then grows with the chunk, not with the whole stream."""
        batch, beam = self.scores.shape
        slots = torch.arange(beam).expand(batch, beam)
        origins, pending = self._trace(slots)
        self.history = [
            [_extend(self._history(b, origin), found) for origin, found in zip(o, p, strict=True)]
            for b, (o, p) in enumerate(zip(origins, pending, strict=True))
        ]
        self.parents, self.tokens, self.log_probs, self.round_frames = [], [], [], []

    def _history(self, utterance: int, slot: int) -> _Node | None:
        return None if self.history is None else self.history[utterance][slot]

    def _backtrack(self, slots: torch.Tensor) -> list[list[Alignment]]:
        """The alignments of the slots ``(B, N)`` of each utterance: their history, then the
        tokens of the rounds since, read from the back-pointers."""
        origins, pending = self._trace(slots)
        return [
            [
                _alignment(_extend(self._history(b, o), found))
                for o, found in zip(os, ps, strict=True)
            ]
            for b, (os, ps) in enumerate(zip(origins, pending, strict=True))
        ]

    def _trace(self, slots: torch.Tensor) -> tuple[list[list[int]], list[list[list[tuple]]]]:
        # For the slots (B, N): the slot each came from before the rounds kept, and the
        # (token, frame, log-probability) each of those rounds added, in order.
        batch, count = slots.shape
        slot = slots.cpu()
        if not self.parents:
            return slot.tolist(), [[[] for _ in range(count)] for _ in range(batch)]
        parents = torch.stack(self.parents).cpu()  # (R, B, K)
        tokens = torch.stack(self.tokens).cpu()
        log_probs = torch.stack(self.log_probs).cpu()
        rows = torch.arange(batch).unsqueeze(1)
        emitted = torch.empty(len(parents), batch, count, dtype=torch.long)
        emitted_log_probs = torch.empty(len(parents), batch, count)
        for step in range(len(parents) - 1, -1, -1):
            emitted[step] = tokens[step, rows, slot]
            emitted_log_probs[step] = log_probs[step, rows, slot]
            slot = parents[step, rows, slot]
        ids = emitted.permute(1, 2, 0).tolist()  # (B, N, R)
        values = emitted_log_probs.permute(1, 2, 0).tolist()
        frames = self.round_frames
        pending = [
            [
                [(t, f, v) for t, f, v in zip(row_ids, frames, row_values, strict=True) if t >= 0]
                for row_ids, row_values in zip(a, b, strict=True)
            ]
            for a, b in zip(ids, values, strict=True)
        ]
        return slot.tolist(), pending


# A slot's history: a linked list of (earlier node, token, frame, log-probability), newest last;
# slots that share a past share its nodes.
_Node = tuple


def _extend(node: _Node | None, found: list[tuple]) -> _Node | None:
    for token, frame, log_prob in found:
        node = (node, token, frame, log_prob)
    return node


def _alignment(node: _Node | None) -> Alignment:
    ids, frames, log_probs = [], [], []
    while node is not None:
        node, token, frame, log_prob = node
        ids.append(token)
        frames.append(frame)
        log_probs.append(log_prob)
    return Alignment(ids[::-1], frames[::-1], log_probs[::-1])
