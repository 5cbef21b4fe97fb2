"""Transcribe audio files or a manifest with a checkpoint: batched greedy decoding.

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
from lhotse import Recording
from torchmetrics.functional.text import word_error_rate

from rnnt.constants import MAX_SYMBOLS_PER_FRAME, SAMPLE_RATE, TRANSCRIBE_BATCH_SECONDS
from rnnt.data.cuts import load_mono
from rnnt.data.manifest import read_manifest, write_manifest
from rnnt.data.tokenizer import Tokenizer, normalize_text
from rnnt.models.transducer import Transducer


@dataclass(frozen=True)
class AudioItem:
    """One stretch of audio to transcribe: a file, with offset and duration in seconds."""

    path: str
    offset: float = 0.0
    duration: float | None = None


def load_audio(item: AudioItem) -> torch.Tensor:
    """Samples ``(S,)`` float32 in [-1, 1], 16 kHz mono, of one item: the training loader's way."""
    cut = Recording.from_file(item.path).to_cut()
    if item.offset or item.duration is not None:
        cut = cut.truncate(offset=item.offset, duration=item.duration)
    return load_mono(cut)


def _batches(durations: Sequence[float], batch_seconds: float) -> list[list[int]]:
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


@torch.inference_mode()
def transcribe(
    model: Transducer,
    tokenizer: Tokenizer,
    items: Sequence[AudioItem],
    batch_seconds: float = TRANSCRIBE_BATCH_SECONDS,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
) -> tuple[list[str], float]:
    """Greedy transcripts of ``items`` in their order, and the audio's total seconds."""
    device = next(model.parameters()).device
    waveforms = [load_audio(item) for item in items]
    durations = [len(w) / SAMPLE_RATE for w in waveforms]
    texts = [""] * len(items)
    for batch in _batches(durations, batch_seconds):
        lengths = torch.tensor([len(waveforms[i]) for i in batch], device=device)
        audio = torch.zeros(len(batch), int(lengths.max()), device=device)
        for row, index in enumerate(batch):
            audio[row, : len(waveforms[index])] = waveforms[index].to(device)
        token_ids = model.transcribe_ids(audio, lengths, max_symbols_per_frame)
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
    batch_seconds: float = TRANSCRIBE_BATCH_SECONDS,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
) -> ManifestResult:
    """Write each line of ``manifest`` to ``output`` with an added ``pred_text`` field.

    The WER compares ``pred_text`` with the normalised ``text`` of the lines that have one.
    """
    start = time.perf_counter()
    utterances = read_manifest(manifest)
    items = [AudioItem(u.audio_filepath, u.offset, u.duration) for u in utterances]
    predictions, audio_seconds = transcribe(
        model, tokenizer, items, batch_seconds, max_symbols_per_frame
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
