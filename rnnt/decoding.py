"""Decoding of transducer encoder output into token ids: batched beam search, and the entry
that picks greedy or beam search (greedy search lives in :mod:`rnnt.greedy`, re-exported here).

Shapes: B batch, T' encoder frames, D encoder dimension, H prediction dimension, J joiner
dimension, V classes (blank included), K beam size, L LSTM layers.

The decoders use the model's parts (front end and encoder, prediction network, joiner); the
model never imports them.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch

from rnnt.constants import BEAM_SIZE, MAX_SYMBOLS_PER_FRAME
from rnnt.greedy import decoding_mode, greedy_search

if TYPE_CHECKING:
    from rnnt.models.transducer import Transducer

__all__ = [
    "beam_search",
    "beam_search_nbest",
    "check_beam_size",
    "greedy_search",
    "transcribe_ids",
]


# --- beam search ---------------------------------------------------------------------------------

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


def beam_search(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    beam_size: int = BEAM_SIZE,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
) -> list[list[int]]:
    """Batched modified beam search: the best token ids of each utterance.

    See :func:`beam_search_nbest` for the algorithm; this keeps the best hypothesis only.

    Args:
        model: a :class:`Transducer` (uses ``decoder``, ``joiner`` and ``config.blank_id``).
        encoder_out: ``(B, T', D)`` encoder frames, padded.
        encoder_lengths: ``(B,)`` valid frames.
        beam_size: hypotheses kept per utterance (>= 1; 1 gives greedy search's ids).
        max_symbols_per_frame: most tokens a hypothesis emits at one frame (>= 1).

    Returns:
        ``B`` lists of token ids, blank removed.
    """
    nbest = _run_beam_search(
        model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame, 1
    )
    return [hypotheses[0][0] for hypotheses in nbest]


def beam_search_nbest(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    beam_size: int = BEAM_SIZE,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
) -> list[list[tuple[list[int], float]]]:
    """Batched modified beam search: the final hypotheses of each utterance, with scores.

    Every utterance keeps ``beam_size`` hypotheses. At a frame, expansion rounds run until no
    hypothesis is still on the frame, at most ``max_symbols_per_frame`` rounds. In a round, a
    hypothesis still on the frame may take blank (it is then done with the frame) or any token
    (it stays on the frame); a hypothesis already done keeps its score. Of all these
    candidates the ``beam_size`` best per utterance survive, after candidates done with the
    frame that share a token sequence are merged by log-adding their scores (their
    alignments differ, their sequence does not). After the last round, hypotheses still on the
    frame move on without blank, as greedy search does at its cap, and are merged likewise.
    Scores are sums of joiner log-probabilities (``log_softmax`` of the logits), so with
    ``beam_size=1`` each round keeps the argmax and the result is :func:`greedy_search`'s.

    All hypotheses of all utterances go through the joiner in one call per round, and only
    new token extensions run the prediction network: a hypothesis that takes blank keeps its
    cached prediction output. Each utterance's computation is independent of the others, so
    it decodes the same alone or in a padded batch. The prediction network and joiner run in
    eval mode, under ``torch.inference_mode``; their modes are restored afterwards.

    Args:
        model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame: as in
            :func:`beam_search`.

    Returns:
        For each of the ``B`` utterances, up to ``beam_size`` pairs ``(token ids, score)``,
        best first, with distinct token ids (blank removed). A score is the natural-log
        probability of the hypothesis summed over the alignments the search merged into it.
    """
    return _run_beam_search(
        model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame, beam_size
    )


def _run_beam_search(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    beam_size: int,
    max_symbols_per_frame: int,
    nbest: int,
) -> list[list[tuple[list[int], float]]]:
    check_beam_size(beam_size)
    if max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame={max_symbols_per_frame} must be >= 1.")
    with decoding_mode(model) as (decoder, joiner):
        beam = operator.index(beam_size)
        search = _BeamSearch(decoder, joiner, model.config.blank_id, beam)
        return search.run(encoder_out, encoder_lengths, max_symbols_per_frame, nbest)


class _BeamSearch:
    """The hypotheses of B utterances, K slots each, as tensors; slot tensors are ``(B, K)``.

    A slot holds a score (``-inf`` = empty), whether it is done with the current frame, the
    key of its token sequence ``(B, K, 3)``, and its cached prediction state: the joiner's
    projection of the prediction output ``(B*K, J)`` and the LSTM state ``(L, B*K, H)``.
    Token sequences are read back at the end from per-round back-pointers.
    """

    def __init__(
        self, decoder: torch.nn.Module, joiner: torch.nn.Module, blank: int, beam_size: int
    ) -> None:
        self.decoder, self.joiner, self.blank, self.beam = decoder, joiner, blank, beam_size

    def run(
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        max_symbols: int,
        nbest: int,
    ) -> list[list[tuple[list[int], float]]]:
        batch, frames, _ = encoder_out.shape
        beam, device = self.beam, encoder_out.device
        lengths = encoder_lengths.to(device)
        encoder_proj = self.joiner.encoder_proj(encoder_out)  # (B, T', J)
        self.scores = torch.full((batch, beam), float("-inf"), device=device)
        self.scores[:, 0] = 0.0  # one empty hypothesis per utterance
        self.keys = torch.zeros(batch, beam, len(_KEY_MULTIPLIERS), dtype=torch.long, device=device)
        self.multipliers = torch.tensor(_KEY_MULTIPLIERS, device=device)
        self.offsets = torch.arange(batch, device=device).unsqueeze(1) * beam  # (B, 1) first slot
        self.earlier = torch.ones(beam, beam, dtype=torch.bool, device=device).tril(-1)  # j < i
        state = self.decoder.initial_state(batch * beam, device)
        start = torch.full((batch * beam,), self.blank, device=device)
        decoder_out, self.state = self.decoder.step(start, state)
        self.predictor_proj = self.joiner.predictor_proj(decoder_out)  # (B*K, J)
        self.parents: list[torch.Tensor] = []  # per round: (B, K) slot each slot came from
        self.tokens: list[torch.Tensor] = []  # per round: (B, K) token it added, -1 for none
        for frame in range(frames):
            # Utterances past their end are done with every frame: their slots stay as they are.
            self.done = (frame >= lengths).unsqueeze(1).expand(batch, beam).clone()
            for _ in range(max_symbols):
                active = ~self.done & torch.isfinite(self.scores)
                if not bool(active.any()):
                    break
                self._round(encoder_proj[:, frame], active)
            self.scores = self._merge(self.scores)
        scores, slots = self.scores.topk(nbest, dim=1)  # (B, N), best first
        results = []
        for sequences, row_scores in zip(self._backtrack(slots), scores.tolist(), strict=True):
            pairs = zip(sequences, row_scores, strict=True)
            results.append([(ids, score) for ids, score in pairs if score > float("-inf")])
        return results

    def _round(self, frame_proj: torch.Tensor, active: torch.Tensor) -> None:
        """One expansion of the slots still on the frame; ``frame_proj (B, J)``, ``active (B, K)``."""
        batch, beam = active.shape
        rows = active.view(-1).nonzero().squeeze(1)  # flat slots that expand
        logits = self.joiner(frame_proj[rows // beam], self.predictor_proj[rows])  # (R, V)
        num_classes = logits.size(-1)
        candidates = self.scores.new_full((batch * beam, num_classes), float("-inf"))
        candidates[rows] = self.scores.view(-1)[rows, None] + logits.float().log_softmax(dim=-1)
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
        flat = (self.offsets + parents).view(-1)
        self.scores = scores
        self.done = ~extended
        keys = self.keys.view(batch * beam, -1)[flat].view_as(self.keys)
        appended = (tokens + 1).unsqueeze(2).expand_as(keys).clone()
        appended[..., 0] = 1  # the length grows by one
        grown = (keys * self.multipliers + appended) % _KEY_MODULUS
        self.keys = torch.where(extended.unsqueeze(2), grown, keys)
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
        them; the others become ``-inf``. Meant for slots that are all done with the frame."""
        valid = torch.isfinite(scores)
        same = (self.keys.unsqueeze(2) == self.keys.unsqueeze(1)).all(dim=3)  # (B, K, K)
        same &= valid.unsqueeze(2) & valid.unsqueeze(1)
        merged = torch.where(same, scores.unsqueeze(1), float("-inf")).logsumexp(dim=2)
        first = ~(same & self.earlier).any(dim=2)
        return torch.where(valid & first, merged, float("-inf"))

    def _backtrack(self, slots: torch.Tensor) -> list[list[list[int]]]:
        """Token ids of the slots ``(B, N)`` of each utterance, read from the back-pointers."""
        batch, count = slots.shape
        if not self.parents:
            return [[[] for _ in range(count)] for _ in range(batch)]
        parents = torch.stack(self.parents).cpu()  # (R, B, K)
        tokens = torch.stack(self.tokens).cpu()
        slot = slots.cpu()
        rows = torch.arange(batch).unsqueeze(1)
        emitted = torch.empty(len(parents), batch, count, dtype=torch.long)
        for step in range(len(parents) - 1, -1, -1):
            emitted[step] = tokens[step, rows, slot]
            slot = parents[step, rows, slot]
        return [
            [[token for token in column if token >= 0] for column in utterance]
            for utterance in emitted.permute(1, 2, 0).tolist()
        ]


def transcribe_ids(
    model: Transducer,
    audio: torch.Tensor,
    audio_lengths: torch.Tensor,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
) -> list[list[int]]:
    """Token ids (blank removed) of padded audio ``(B, S)`` with lengths ``(B,)``.

    Encodes with ``model.encode`` and decodes with :func:`greedy_search` when ``beam_size`` is
    1, else with :func:`beam_search` keeping that many hypotheses per utterance. Runs the model
    in eval mode without gradients and restores its previous mode.
    """
    check_beam_size(beam_size)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            encoder_out, encoder_lengths = model.encode(audio, audio_lengths)
            if beam_size == 1:
                return greedy_search(model, encoder_out, encoder_lengths, max_symbols_per_frame)
            return beam_search(
                model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame
            )
    finally:
        model.train(was_training)
