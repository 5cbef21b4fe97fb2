"""Transcribe audio files or a manifest with a checkpoint: batched greedy or beam search.

Audio of any rate and channel count that the data pipeline reads is resampled to 16 kHz mono,
the same way as in training. Utterances are sorted by duration and batched by total seconds,
so padding (and wasted compute) stays small.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torchmetrics.functional.text import word_error_rate

from rnnt.constants import (
    MAX_DECODE_DURATION,
    MAX_SYMBOLS_PER_FRAME,
    SAMPLE_RATE,
    TRANSCRIBE_BATCH_SECONDS,
    TRANSCRIBE_BATCH_SECONDS_CPU,
)
from rnnt.data.audio import load_audio_file
from rnnt.data.manifest import read_manifest, write_manifest
from rnnt.data.tokenizer import Tokenizer, normalize_text
from rnnt.decoding import check_beam_size, transcribe_ids
from rnnt.models.transducer import Transducer


@dataclass(frozen=True)
class AudioItem:
    """One stretch of audio to transcribe: a file, with offset and duration in seconds."""

    path: str
    offset: float = 0.0
    duration: float | None = None


def load_audio(item: AudioItem, max_duration: float | None = MAX_DECODE_DURATION) -> torch.Tensor:
    """Samples ``(S,)`` float32 in [-1, 1], 16 kHz mono, of one item: the training loader's way.

    Raises ``ValueError`` naming the file for unreadable or unusable audio, and refuses a
    stretch longer than ``max_duration`` seconds from its header, before decoding it
    (``rnnt.data.audio.load_audio_file``).
    """
    return load_audio_file(item.path, item.offset, item.duration, max_duration=max_duration)


def batch_by_duration(durations: Sequence[float], batch_seconds: float) -> list[list[int]]:
    """Indices of ``durations`` (seconds) grouped into batches, longest first, each with at
    most ``batch_seconds`` of padded audio (its longest item times its size) unless it holds a
    single item."""
    # Longest first, so the first batch shows at once whether memory suffices.
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = durations[current[0]] if current else durations[index]
        if current and longest * (len(current) + 1) > batch_seconds:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def default_batch_seconds(device: torch.device | str) -> float:
    """Seconds of padded audio per decoding batch: ``TRANSCRIBE_BATCH_SECONDS`` on a GPU,
    ``TRANSCRIBE_BATCH_SECONDS_CPU`` on the CPU, where large batches run slower per second
    of audio (``benchmarks/decode.py``: 348x real time at 60 s, 234x at 300 s, tiny model)."""
    return (
        TRANSCRIBE_BATCH_SECONDS_CPU
        if torch.device(device).type == "cpu"
        else (TRANSCRIBE_BATCH_SECONDS)
    )


@torch.inference_mode()
def transcribe(
    model: Transducer,
    tokenizer: Tokenizer,
    items: Sequence[AudioItem],
    batch_seconds: float | None = None,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
) -> tuple[list[str], float]:
    """Transcripts of ``items`` in their order, and the audio's total seconds.

    ``beam_size=1`` decodes with greedy search, larger values with beam search.
    ``batch_seconds=None`` takes :func:`default_batch_seconds` of the model's device.
    """
    check_beam_size(beam_size)
    device = next(model.parameters()).device
    if batch_seconds is None:
        batch_seconds = default_batch_seconds(device)
    waveforms = [load_audio(item) for item in items]
    durations = [len(w) / SAMPLE_RATE for w in waveforms]
    texts = [""] * len(items)
    for batch in batch_by_duration(durations, batch_seconds):
        lengths = torch.tensor([len(waveforms[i]) for i in batch], device=device)
        audio = torch.zeros(len(batch), int(lengths.max()), device=device)
        for row, index in enumerate(batch):
            audio[row, : len(waveforms[index])] = waveforms[index].to(device)
        token_ids = transcribe_ids(model, audio, lengths, max_symbols_per_frame, beam_size)
        for index, ids in zip(batch, token_ids, strict=True):
            texts[index] = tokenizer.decode(ids)
    return texts, sum(durations)


@dataclass(frozen=True)
class ManifestResult:
    """What transcribing a manifest measured."""

    utterances: int
    wer: float | None  # None when the manifest has no reference text
    audio_seconds: float
    wall_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Wall seconds per second of audio (below 1 is faster than real time)."""
        return self.wall_seconds / max(self.audio_seconds, 1e-9)


def transcribe_manifest(
    model: Transducer,
    tokenizer: Tokenizer,
    manifest: str | Path,
    output: str | Path,
    batch_seconds: float | None = None,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
) -> ManifestResult:
    """Write each line of ``manifest`` to ``output`` with an added ``pred_text`` field.

    The WER compares ``pred_text`` with the normalised ``text`` of the lines that have one.
    ``beam_size=1`` decodes with greedy search, larger values with beam search.
    """
    check_beam_size(beam_size)
    start = time.perf_counter()
    utterances = read_manifest(manifest)
    items = [AudioItem(u.audio_filepath, u.offset, u.duration) for u in utterances]
    predictions, audio_seconds = transcribe(
        model, tokenizer, items, batch_seconds, max_symbols_per_frame, beam_size
    )
    records = [
        {**utterance.to_record(), "pred_text": prediction}
        for utterance, prediction in zip(utterances, predictions, strict=True)
    ]
    write_manifest(output, records)
    wall_seconds = time.perf_counter() - start
    references = [normalize_text(u.text) for u in utterances]
    scored = [(r, p) for r, p in zip(references, predictions, strict=True) if r]
    wer = None
    if scored:
        wer = float(word_error_rate([p for _, p in scored], [r for r, _ in scored]))
    return ManifestResult(len(utterances), wer, audio_seconds, wall_seconds)


def format_result(result: ManifestResult) -> str:
    """One human line: utterances, WER and speed."""
    wer = "n/a (no reference text)" if result.wer is None else f"{100 * result.wer:.2f}%"
    return (
        f"{result.utterances} utterances, WER {wer}, "
        f"{result.audio_seconds:.1f} s of audio in {result.wall_seconds:.1f} s "
        f"(real-time factor {result.real_time_factor:.4f})"
    )
