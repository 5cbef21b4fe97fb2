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

Emission frames alone place words loosely: a transducer emits a word's pieces in a burst, often
before its sound ends, and may emit a sentence's first token before the speech starts
(``benchmarks/timestamps.py``: ends a median 112 ms early). :func:`snap_to_speech` refines
them with the audio's pauses: the audio is cut into speech stretches at its pauses
(:func:`speech_stretches`, from the energy of 10 ms blocks); each word belongs to the stretch
its emitted interval overlaps most (else the nearest); a stretch's first word starts where the
stretch starts, its last word ends where it ends, and inside a stretch a word ends where the
next one starts (connected speech has no gap between words). Audio without clear pauses
(noise as loud as the speech) has no stretches, and the emitted times stay; so do a stretch's
words when snapping would leave one of them no time (several emitted before the stretch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from rnnt.constants import (
    TIMESTAMP_ENERGY_BLOCK_S,
    TIMESTAMP_MIN_PAUSE_S,
    TIMESTAMP_NOISE_MARGIN_DB,
    TIMESTAMP_NOISE_QUANTILE,
    TIMESTAMP_SPEECH_RANGE_DB,
    WORD_BOUNDARY_PIECE,
)

if TYPE_CHECKING:
    from rnnt.data.tokenizer import Tokenizer
    from rnnt.models.transducer import Transducer

__all__ = [
    "Alignment",
    "EnergyMeter",
    "WordTiming",
    "block_energies",
    "frame_seconds",
    "snap_to_speech",
    "speech_stretches",
    "word_timings",
]


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
    return min(1.0, math.exp(log_prob))


def block_energies(samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Energy in dB (mean square, re full scale) of each ``TIMESTAMP_ENERGY_BLOCK_S`` block of
    ``samples (S,)``; a last partial block counts as a block. Returns ``(N,)`` float64."""
    block = round(sample_rate * TIMESTAMP_ENERGY_BLOCK_S)
    samples = samples.detach().double().cpu()
    count = -(-samples.numel() // block)
    padded = torch.zeros(count * block, dtype=torch.float64)
    padded[: samples.numel()] = samples
    squares = padded.view(count, block).pow(2).sum(dim=1)
    sizes = torch.full((count,), float(block), dtype=torch.float64)
    if count and samples.numel() % block:
        sizes[-1] = samples.numel() % block
    return 10 * torch.log10(squares / sizes + 1e-12)


class EnergyMeter:
    """:func:`block_energies` of audio that arrives in pieces (a streaming session's)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.block = round(sample_rate * TIMESTAMP_ENERGY_BLOCK_S)
        self.rest = torch.zeros(0, dtype=torch.float64)
        self.whole: list[torch.Tensor] = []

    def push(self, samples: torch.Tensor) -> None:
        """Take the next samples ``(S,)``."""
        self.rest = torch.cat((self.rest, samples.detach().double().cpu()))
        whole = self.rest.numel() // self.block * self.block
        if whole:
            self.whole.append(block_energies(self.rest[:whole], self.sample_rate))
            self.rest = self.rest[whole:]

    def energies(self) -> torch.Tensor:
        """The energies of every block so far, the partial last one included: ``(N,)`` dB."""
        return torch.cat([*self.whole, block_energies(self.rest, self.sample_rate)])


def speech_stretches(energies: torch.Tensor) -> list[tuple[float, float]]:
    """The ``(start, end)`` seconds of the speech between pauses, from block energies ``(N,)``.

    A block is speech when it is louder than both ``TIMESTAMP_SPEECH_RANGE_DB`` below the
    loudest block and ``TIMESTAMP_NOISE_MARGIN_DB`` above the noise floor (the
    ``TIMESTAMP_NOISE_QUANTILE`` quantile of the blocks); quieter runs shorter than
    ``TIMESTAMP_MIN_PAUSE_S`` (a stop's closure) are not pauses. Silence or noise without a
    louder stretch gives no stretch at all.
    """
    if energies.numel() == 0:
        return []
    floor = float(torch.quantile(energies, TIMESTAMP_NOISE_QUANTILE))
    threshold = max(
        float(energies.max()) - TIMESTAMP_SPEECH_RANGE_DB, floor + TIMESTAMP_NOISE_MARGIN_DB
    )
    speech = (energies > threshold).tolist()
    runs: list[list[int]] = []  # [first, last + 1] blocks of each run of speech
    for index, loud in enumerate(speech):
        if loud and runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        elif loud:
            runs.append([index, index + 1])
    shortest = round(TIMESTAMP_MIN_PAUSE_S / TIMESTAMP_ENERGY_BLOCK_S)
    merged: list[list[int]] = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < shortest:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    return [(a * TIMESTAMP_ENERGY_BLOCK_S, b * TIMESTAMP_ENERGY_BLOCK_S) for a, b in merged]


def snap_to_speech(
    words: list[WordTiming], stretches: list[tuple[float, float]]
) -> list[WordTiming]:
    """``words`` with their times refined by the speech ``stretches`` (seconds, in order; see
    the module docstring). Words keep their order and never overlap."""
    if not stretches or not words:
        return list(words)
    members: dict[int, list[int]] = {}
    previous = 0
    for position, word in enumerate(words):
        previous = max(previous, _stretch_of(word, stretches))  # words keep their order
        members.setdefault(previous, []).append(position)
    snapped = list(words)
    for stretch, positions in sorted(members.items()):
        start, end = stretches[stretch]
        starts = [start] + [max(start, min(end, words[i].start)) for i in positions[1:]]
        ends = [*starts[1:], end]
        if any(a >= b for a, b in zip(starts, ends, strict=True)):
            continue  # words piled up (emitted in a pause): their emitted times say more
        for i, word_start, word_end in zip(positions, starts, ends, strict=True):
            snapped[i] = replace(words[i], start=word_start, end=word_end)
    return snapped


def _stretch_of(word: WordTiming, stretches: list[tuple[float, float]]) -> int:
    # The stretch the word's emitted interval overlaps most; with no overlap (the word was
    # emitted in a pause), the nearest one: the overlap is then minus the distance.
    overlaps = [min(word.end, b) - max(word.start, a) for a, b in stretches]
    return max(range(len(stretches)), key=overlaps.__getitem__)
