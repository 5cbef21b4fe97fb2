"""Transcribe audio with a model: batched greedy or beam search (optionally biased towards
hotwords, optionally with word timestamps), window by window.

Audio of any rate and channel count that the data pipeline reads is resampled to 16 kHz mono,
the same way as in training. Items are read in windows of about ``TRANSCRIBE_WINDOW_SECONDS``
of audio (at most ``TRANSCRIBE_WINDOW_LINES`` items): a window's audio is loaded, sorted by
duration, batched by total seconds (so padding, and wasted compute, stays small), decoded and
handed on in input order before the next window is read. Memory therefore holds one window's
audio, whatever the number of items. Audio that cannot be loaded is reported per item, not
raised, unless the caller asks to stop at the first. Manifests: ``rnnt.transcribe``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from rnnt.constants import (
    MAX_DECODE_DURATION,
    MAX_SYMBOLS_PER_FRAME,
    SAMPLE_RATE,
    TRANSCRIBE_BATCH_SECONDS,
    TRANSCRIBE_BATCH_SECONDS_CPU,
    TRANSCRIBE_WINDOW_LINES,
    TRANSCRIBE_WINDOW_SECONDS,
)
from rnnt.data.audio import load_audio_file
from rnnt.data.tokenizer import Tokenizer
from rnnt.decoding import check_beam_size, transcribe_alignments, transcribe_ids
from rnnt.hotwords import HotwordGraph
from rnnt.models.transducer import Transducer
from rnnt.timestamps import (
    WordTiming,
    block_energies,
    frame_seconds,
    snap_to_speech,
    speech_stretches,
    word_timings,
)

# What loading one item's audio raises for a bad file (rnnt.data.audio.load_audio_file):
# FileNotFoundError (an OSError) or ValueError naming the file. Anything else is a bug.
LOAD_ERRORS = (ValueError, OSError)


@dataclass(frozen=True)
class AudioItem:
    """One stretch of audio to transcribe: a file, with offset and duration in seconds."""

    path: str
    offset: float = 0.0
    duration: float | None = None


@dataclass(frozen=True)
class Transcript:
    """What became of the item at ``index`` (0-based, in input order): its ``text`` and
    ``seconds`` of audio, or the ``error`` that kept its audio from loading (``text`` None).
    ``words``: the timed words (seconds from the item's start), when asked for."""

    index: int
    text: str | None
    seconds: float = 0.0
    error: Exception | None = None
    words: list[WordTiming] | None = None


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


def transcribe_windows(
    model: Transducer,
    tokenizer: Tokenizer,
    items: Iterable[AudioItem],
    *,
    batch_seconds: float | None = None,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
    window_seconds: float = TRANSCRIBE_WINDOW_SECONDS,
    window_lines: int = TRANSCRIBE_WINDOW_LINES,
    stop_at_error: bool = False,
    hotwords: HotwordGraph | None = None,
    timestamps: bool = False,
) -> Iterator[list[Transcript]]:
    """Transcripts of ``items``, one list per window, each in input order.

    ``items`` is read lazily: a window takes items until their audio reaches ``window_seconds``
    (never less than ``batch_seconds``) or ``window_lines`` items, is decoded, and is yielded
    before the next item is read, so at most one window's audio (plus one item) is in memory.
    An item whose audio cannot be loaded (``LOAD_ERRORS``) is a ``Transcript`` with its
    ``error``; with ``stop_at_error`` the window ends there, is decoded and yielded, and no
    further item is read. ``beam_size=1`` decodes with greedy search, larger values with beam
    search; ``batch_seconds=None`` takes :func:`default_batch_seconds` of the model's device.
    ``hotwords`` biases beam search (it runs even at ``beam_size=1``) towards its phrases;
    ``timestamps`` gives each transcript its ``words`` (:mod:`rnnt.timestamps`).
    """
    check_beam_size(beam_size)
    device = next(model.parameters()).device
    if batch_seconds is None:
        batch_seconds = default_batch_seconds(device)
    window_seconds = max(window_seconds, batch_seconds)
    numbered = enumerate(items)
    stopped = False
    while not stopped:
        loaded, failed, stopped = _load_window(
            numbered, window_seconds, window_lines, stop_at_error
        )
        if not loaded and not failed:
            return
        options = _Decoding(batch_seconds, max_symbols_per_frame, beam_size, hotwords, timestamps)
        decoded = _decode(model, tokenizer, [w for _, w in loaded], options)
        window = failed + [
            Transcript(index, text, len(waveform) / SAMPLE_RATE, words=words)
            for (index, waveform), (text, words) in zip(loaded, decoded, strict=True)
        ]
        del loaded  # this window's audio is freed before the next window is read
        yield sorted(window, key=lambda transcript: transcript.index)


def transcribe(
    model: Transducer,
    tokenizer: Tokenizer,
    items: Sequence[AudioItem],
    batch_seconds: float | None = None,
    max_symbols_per_frame: int = MAX_SYMBOLS_PER_FRAME,
    beam_size: int = 1,
    hotwords: HotwordGraph | None = None,
) -> tuple[list[str], float]:
    """Transcripts of ``items`` in their order, and the audio's total seconds.

    Decoded window by window (:func:`transcribe_windows`). The first item whose audio cannot
    be loaded raises its ``ValueError`` or ``FileNotFoundError`` (naming the file), after the
    items before it were decoded. ``beam_size=1`` decodes with greedy search, larger values
    with beam search (biased towards ``hotwords`` if given); ``batch_seconds=None`` takes
    :func:`default_batch_seconds`.
    """
    texts = [""] * len(items)
    total_seconds = 0.0
    for window in transcribe_windows(
        model,
        tokenizer,
        items,
        batch_seconds=batch_seconds,
        max_symbols_per_frame=max_symbols_per_frame,
        beam_size=beam_size,
        stop_at_error=True,
        hotwords=hotwords,
    ):
        for transcript in window:
            if transcript.error is not None:
                raise transcript.error
            texts[transcript.index] = transcript.text or ""
            total_seconds += transcript.seconds
    return texts, total_seconds


# --- internals ---------------------------------------------------------------------------------


def _load_window(
    numbered: Iterator[tuple[int, AudioItem]],
    window_seconds: float,
    window_lines: int,
    stop_at_error: bool,
) -> tuple[list[tuple[int, torch.Tensor]], list[Transcript], bool]:
    # (index, waveform) of the window's loaded items, the failed ones, and whether to stop.
    loaded: list[tuple[int, torch.Tensor]] = []
    failed: list[Transcript] = []
    seconds = 0.0
    for index, item in numbered:
        try:
            waveform = load_audio(item)
        except LOAD_ERRORS as error:
            failed.append(Transcript(index, None, error=error))
            if stop_at_error:
                return loaded, failed, True
        else:
            loaded.append((index, waveform))
            seconds += len(waveform) / SAMPLE_RATE
        if seconds >= window_seconds or len(loaded) + len(failed) >= window_lines:
            break
    return loaded, failed, False


@dataclass(frozen=True)
class _Decoding:
    # How a window is decoded (transcribe_windows' options).
    batch_seconds: float
    max_symbols_per_frame: int
    beam_size: int
    hotwords: HotwordGraph | None
    timestamps: bool


@torch.inference_mode()
def _decode(
    model: Transducer, tokenizer: Tokenizer, waveforms: list[torch.Tensor], options: _Decoding
) -> list[tuple[str, list[WordTiming] | None]]:
    # (text, timed words or None) of (S,) waveforms in their order, in duration-sorted batches.
    device = next(model.parameters()).device
    durations = [len(w) / SAMPLE_RATE for w in waveforms]
    decoded: list[tuple[str, list[WordTiming] | None]] = [("", None)] * len(waveforms)
    search = (options.max_symbols_per_frame, options.beam_size, options.hotwords)
    for batch in batch_by_duration(durations, options.batch_seconds):
        lengths = torch.tensor([len(waveforms[i]) for i in batch], device=device)
        audio = torch.zeros(len(batch), int(lengths.max()), device=device)
        for row, index in enumerate(batch):
            audio[row, : len(waveforms[index])] = waveforms[index].to(device)
        if options.timestamps:
            alignments = transcribe_alignments(model, audio, lengths, *search)
            for index, alignment in zip(batch, alignments, strict=True):
                words = word_timings(tokenizer, alignment, frame_seconds(model))
                pauses = speech_stretches(block_energies(waveforms[index], SAMPLE_RATE))
                words = snap_to_speech(words, pauses)
                decoded[index] = (tokenizer.decode(alignment.ids), words)
        else:
            for index, ids in zip(
                batch, transcribe_ids(model, audio, lengths, *search), strict=True
            ):
                decoded[index] = (tokenizer.decode(ids), None)
    return decoded
