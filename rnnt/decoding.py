"""Decoding of transducer encoder output into token ids: batched beam search, and the entry
that picks greedy or beam search (greedy search lives in :mod:`rnnt.greedy`, re-exported here).

Shapes: B batch, T' encoder frames, D encoder dimension, H prediction dimension, J joiner
dimension, V classes (blank included), K beam size, L LSTM layers.

The decoders use the model's parts (front end and encoder, prediction network, joiner); the
model never imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rnnt.beam import BeamSearch, check_beam_size
from rnnt.constants import BEAM_SIZE, MAX_SYMBOLS_PER_FRAME
from rnnt.greedy import decoding_mode, greedy_alignments, greedy_search
from rnnt.timestamps import Alignment

if TYPE_CHECKING:
    from rnnt.hotwords import HotwordGraph
    from rnnt.models.transducer import Transducer

__all__ = [
    "beam_search",
    "beam_search_alignments",
    "beam_search_nbest",
    "check_beam_size",
    "greedy_alignments",
    "greedy_search",
    "transcribe_alignments",
    "transcribe_ids",
]


# --- beam search ---------------------------------------------------------------------------------


def beam_search(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    beam_size: int = BEAM_SIZE,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    hotwords: HotwordGraph | None = None,
) -> list[list[int]]:
    """Batched modified beam search: the best token ids of each utterance.

    See :func:`beam_search_nbest` for the algorithm; this keeps the best hypothesis only.

    Args:
        model: a :class:`Transducer` (uses ``decoder``, ``joiner`` and ``config.blank_id``).
        encoder_out: ``(B, T', D)`` encoder frames, padded.
        encoder_lengths: ``(B,)`` valid frames.
        beam_size: hypotheses kept per utterance (>= 1; 1 gives greedy search's ids).
        max_symbols_per_frame: most tokens a hypothesis emits at one frame (>= 1).
        hotwords: phrases to bias towards (:class:`rnnt.hotwords.HotwordGraph`), or None.

    Returns:
        ``B`` lists of token ids, blank removed.
    """
    best = beam_search_alignments(
        model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame, hotwords
    )
    return [alignment.ids for alignment in best]


def beam_search_alignments(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    beam_size: int = BEAM_SIZE,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    hotwords: HotwordGraph | None = None,
) -> list[Alignment]:
    """As :func:`beam_search`, with each kept token's frame and log-probability."""
    nbest = _run_beam_search(
        model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame, 1, hotwords
    )
    return [hypotheses[0][0] if hypotheses else Alignment([], [], []) for hypotheses in nbest]


def beam_search_nbest(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    beam_size: int = BEAM_SIZE,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    hotwords: HotwordGraph | None = None,
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
    With ``hotwords``, a token's score also gains the graph's bonus (:mod:`rnnt.beam`).

    All hypotheses of all utterances go through the joiner in one call per round, and only
    new token extensions run the prediction network: a hypothesis that takes blank keeps its
    cached prediction output. Each utterance's computation is independent of the others, so
    it decodes the same alone or in a padded batch. The prediction network and joiner run in
    eval mode, under ``torch.inference_mode``; their modes are restored afterwards.

    Args:
        model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame, hotwords: as in
            :func:`beam_search`.

    Returns:
        For each of the ``B`` utterances, up to ``beam_size`` pairs ``(token ids, score)``,
        best first, with distinct token ids (blank removed). A score is the natural-log
        probability of the hypothesis summed over the alignments the search merged into it
        (plus the bonus of the hotword phrases it completed).
    """
    nbest = _run_beam_search(
        model, encoder_out, encoder_lengths, beam_size, max_symbols_per_frame, beam_size, hotwords
    )
    return [[(alignment.ids, score) for alignment, score in row] for row in nbest]


def _run_beam_search(
    model: Transducer,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    beam_size: int,
    max_symbols_per_frame: int,
    nbest: int,
    hotwords: HotwordGraph | None,
) -> list[list[tuple[Alignment, float]]]:
    device = encoder_out.device  # BeamSearch checks beam_size and max_symbols_per_frame
    with decoding_mode(model) as (decoder, joiner):
        search = BeamSearch(
            decoder, joiner, model.config.blank_id, beam_size, max_symbols_per_frame,
            encoder_out.size(0), device, None if hotwords is None else hotwords.to(device),
        )  # fmt: skip
        search.advance(encoder_out, encoder_lengths)
        return search.best(nbest)


def transcribe_ids(
    model: Transducer,
    audio: torch.Tensor,
    audio_lengths: torch.Tensor,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
    hotwords: HotwordGraph | None = None,
) -> list[list[int]]:
    """Token ids (blank removed) of padded audio ``(B, S)`` with lengths ``(B,)``.

    Encodes with ``model.encode`` and decodes with :func:`greedy_search` when ``beam_size`` is
    1 and there are no ``hotwords``, else with :func:`beam_search` keeping that many hypotheses
    per utterance (biased towards ``hotwords``). Runs the model in eval mode without gradients
    and restores its previous mode.
    """
    check_beam_size(beam_size)
    if beam_size == 1 and hotwords is None:
        return _transcribe(model, audio, audio_lengths, greedy_search, max_symbols_per_frame)
    return [
        alignment.ids
        for alignment in transcribe_alignments(
            model, audio, audio_lengths, max_symbols_per_frame, beam_size, hotwords
        )
    ]


def transcribe_alignments(
    model: Transducer,
    audio: torch.Tensor,
    audio_lengths: torch.Tensor,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
    hotwords: HotwordGraph | None = None,
) -> list[Alignment]:
    """As :func:`transcribe_ids`, with each token's encoder frame and log-probability
    (:func:`greedy_alignments` or :func:`beam_search_alignments`)."""
    check_beam_size(beam_size)
    if beam_size == 1 and hotwords is None:
        return _transcribe(model, audio, audio_lengths, greedy_alignments, max_symbols_per_frame)

    def search(model, encoder_out, encoder_lengths, max_symbols):
        return beam_search_alignments(
            model, encoder_out, encoder_lengths, beam_size, max_symbols, hotwords
        )

    return _transcribe(model, audio, audio_lengths, search, max_symbols_per_frame)


def _transcribe(model, audio, audio_lengths, search, max_symbols_per_frame):
    # Encode in eval mode without gradients, decode with `search`, restore the model's mode.
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            encoder_out, encoder_lengths = model.encode(audio, audio_lengths)
            return search(model, encoder_out, encoder_lengths, max_symbols_per_frame)
    finally:
        model.train(was_training)
