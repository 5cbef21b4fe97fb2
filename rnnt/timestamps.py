"""Word timestamps and confidences from a decoder's alignment.

A transducer emits each token at one encoder frame. Greedy and beam search
(:func:`rnnt.greedy.greedy_alignments`, :func:`rnnt.beam.beam_search_alignments`) and the
streaming session record, for every token they keep, that frame and the token's
log-probability under the joiner's softmax at that frame: an :class:`Alignment`.

Words are runs of tokens: a SentencePiece piece that starts with ``▁`` starts a word. A word's
start is its first token's frame and its end is one frame past its last token's frame, in
seconds: frame ``t`` covers ``[t, t + 1) * frame_seconds`` of audio, where ``frame_seconds`` is
the feature hop times the encoder's subsampling (10 ms x 4 = 40 ms). A word's confidence is the
smallest probability of its tokens (one uncertain piece makes the word uncertain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rnnt.constants import WORD_BOUNDARY_PIECE

if TYPE_CHECKING:
    from rnnt.data.tokenizer import Tokenizer
    from rnnt.models.transducer import Transducer

__all__ = ["Alignment", "WordTiming", "frame_seconds", "word_timings"]


@dataclass(frozen=True)
class Alignment:
    """One decoded utterance: token ids, the encoder frame each was emitted at (0-based, in
    emission order, never decreasing) and each token's natural-log probability there."""

    ids: list[int]
    frames: list[int]
    log_probs: list[float]

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.frames) == len(self.log_probs):
            raise ValueError(
                f"an alignment needs one frame and one log-probability per token: "
                f"{len(self.ids)} ids, {len(self.frames)} frames, {len(self.log_probs)} "
                "log-probabilities"
            )


@dataclass(frozen=True)
class WordTiming:
    """One recognised word: its text, start and end in seconds from the start of the audio,
    and its confidence in ``[0, 1]`` (the smallest probability of its tokens)."""

    word: str
    start: float
    end: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """``{word, start, end, confidence}``, times to the millisecond, confidence to 4 digits:
        the form ``rnnt transcribe --timestamps`` writes."""
        return {
            "word": self.word,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": round(self.confidence, 4),
        }


def frame_seconds(model: Transducer) -> float:
    """Seconds of audio per encoder frame: the feature hop times the subsampling factor."""
    frontend = model.frontend
    return frontend.hop_length / frontend.sample_rate * model.encoder.subsampling_factor


def word_timings(
    tokenizer: Tokenizer, alignment: Alignment, seconds_per_frame: float, offset: float = 0.0
) -> list[WordTiming]:
    """The words of ``alignment`` with their times (seconds, plus ``offset``) and confidences.

    A piece starting with ``▁`` starts a new word; the first token starts one whatever it is.
    A word's text is ``tokenizer.decode`` of its tokens (so it reads as the transcript does); a
    word that decodes to nothing (a lone ``▁``) is dropped.
    """
    groups: list[list[int]] = []
    for position, token in enumerate(alignment.ids):
        if not groups or tokenizer.id_to_piece(token).startswith(WORD_BOUNDARY_PIECE):
            groups.append([])
        groups[-1].append(position)
    words = []
    for group in groups:
        text = tokenizer.decode([alignment.ids[i] for i in group]).strip()
        if not text:
            continue
        first, last = alignment.frames[group[0]], alignment.frames[group[-1]]
        confidence = min(_probability(alignment.log_probs[i]) for i in group)
        words.append(
            WordTiming(
                text,
                offset + first * seconds_per_frame,
                offset + (last + 1) * seconds_per_frame,
                confidence,
            )
        )
    return words


def _probability(log_prob: float) -> float:
    import math

    return min(1.0, math.exp(log_prob))
