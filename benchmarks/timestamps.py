"""Word timestamps and confidences as users get them, against audio whose word boundaries are known.

Truth: ``--sentences`` sentences of the demo test split (``--manifest``, drawn with ``--seed``;
not those with "a m"/"p m", which eSpeak reads as one word) spoken one word at a time by eSpeak NG
with a training voice, each word trimmed as the corpus trims an utterance and joined with
silences (``--gap-ms``, uniform; 100-300 ms at the edges). A word's true start and end are those
of its trimmed audio.

Decoders, on the product's paths: greedy and beam search (``--beam-size``) over whole files,
snapped as ``transcribe_windows(..., timestamps=True)`` snaps (checked on ``CHECK_FILES``
utterances written to WAV files); streaming: ``StreamingSession.words`` after ``feed``. Two rows
each: ``snapped`` (what users get) and ``emitted`` (``word_timings`` of the same alignment).
Of the reference words recognised correctly (edit-distance alignment): the share whose start,
end, and both, lie within ``TOLERANCE_MS`` of the truth (target: both, for 90 %), signed errors
(ms, positive is late), the first word apart, and matches that miss their true word entirely
(paired across a misrecognition). Confidence: on the real test audio, the ROC AUC of word
confidence (smallest token probability; also the mean and product) against correctness.

Measured (CPU, 1 thread, seed 1234, 150 sentences, 1102 words; 5.3 min), full-context demo model
(test WER 13.7 %), streaming demo model at 320 ms chunks. Word-by-word WER 44, 37, 33 % (greedy,
beam 4, streaming); 619, 698, 749 words scored. Both within 80 ms, snapped (emitted):

- 150-500 ms gaps: greedy 93.2 % (19.2), beam 4 94.6 % (17.2), streaming 90.0 % (4.0; 674 of
  749, one word short of the target). Snapped errors are a few ms (greedy start median -4, end
  +2; every whole-file first word within); the misses are recognition more than timing: 37 of
  the 42 greedy misses (streaming: 52 of 75) are matches without overlap. Emitted: ends early
  (greedy median -112 ms), first words early (-132 ms), streaming starts late (+136 ms).
- ``--gap-ms 30 100`` (under ``TIMESTAMP_MIN_PAUSE_S``: a sentence is mostly one stretch, its inner
  boundaries are emission frames): 61.3 % (19.0), 63.7 % (17.4), 17.1 % (2.8); greedy ends late
  (median +36 ms: a word ends where the next was emitted), streaming starts late (+107 ms).
- confidence AUC (min, mean, product): greedy 0.801, 0.817, 0.804; beam 4 0.775, 0.788, 0.770;
  streaming 0.808, 0.806, 0.818.

    python benchmarks/timestamps.py --checkpoint runs/demo/checkpoints/last.ckpt \\
        --streaming-checkpoint runs/streaming/checkpoints/last.ckpt --json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
import torch

from rnnt import timestamps
from rnnt.checkpoint import load_checkpoint
from rnnt.constants import (
    BEAM_SIZE,
    DEMO_PEAK_DBFS_RANGE,
    SAMPLE_RATE,
    SEED,
    STREAMING_CHUNK_MS,
    WORD_BOUNDARY_PIECE,
)
from rnnt.corpus.grammar import spoken_form
from rnnt.corpus.render import speak
from rnnt.corpus.voices import draw_espeak_voice
from rnnt.data.manifest import read_manifest
from rnnt.data.tokenizer import Tokenizer, normalize_text
from rnnt.decoding import transcribe_alignments
from rnnt.models.transducer import Transducer
from rnnt.streaming import StreamingSession, feed
from rnnt.transcribe_audio import AudioItem, load_audio, transcribe_windows

MANIFEST = Path("demo/data/test.jsonl")
SENTENCES = 150
GAP_MS = (150, 500)  # silence between two words, uniform
EDGE_MS = (100, 300)  # silence before the first word and after the last, uniform
TOLERANCE_MS = 80.0
TARGET_SHARE = 0.9  # the target: start and end within TOLERANCE_MS for 90 % of words
CHECK_FILES = 4  # utterances decoded through transcribe_windows to check the composition

# One decoded utterance: its alignment, its emitted words and its snapped words.
Decoded = tuple[timestamps.Alignment, list[timestamps.WordTiming], list[timestamps.WordTiming]]
Decoder = Callable[[list[torch.Tensor]], list[Decoded]]


# --- audio with known word boundaries ---------------------------------------------------------


def pick_sentences(manifest: Path, count: int, seed: int) -> list[str]:
    """``count`` transcripts of ``manifest`` drawn at random with ``seed``, of those whose
    spoken form is the transcript itself (each word can be spoken alone)."""
    texts = [u.text for u in read_manifest(manifest, check_audio=False)]
    eligible = sorted({t for t in texts if spoken_form(t) == t})
    if count > len(eligible):
        raise ValueError(
            f"{manifest}: --sentences {count} asked for, but only {len(eligible)} of its "
            "transcripts can be spoken word by word; ask for fewer"
        )
    return random.Random(seed).sample(eligible, count)


def speak_words(
    text: str, seed: int, gap_ms: tuple[float, float]
) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """``text`` spoken one word at a time, joined with silences: samples ``(S,)`` at 16 kHz and
    each word's true ``(start, end)`` in seconds (see the module docstring)."""
    rng = np.random.default_rng(seed)
    voice = draw_espeak_voice(rng, heldout=False)
    pieces: list[np.ndarray] = []
    truth: list[tuple[float, float]] = []
    position = 0
    for index, word in enumerate(text.split()):
        silence_ms = rng.uniform(*(EDGE_MS if index == 0 else gap_ms))
        pieces.append(np.zeros(round(silence_ms * SAMPLE_RATE / 1000), dtype=np.float32))
        position += pieces[-1].size
        speech = speak(word, voice, seed)
        if speech.size == 0:
            raise RuntimeError(f"eSpeak NG made no sound for {word!r} with {voice}")
        truth.append((position / SAMPLE_RATE, (position + speech.size) / SAMPLE_RATE))
        pieces.append(speech)
        position += speech.size
    pieces.append(np.zeros(round(rng.uniform(*EDGE_MS) * SAMPLE_RATE / 1000), dtype=np.float32))
    audio = np.concatenate(pieces)
    audio *= 10.0 ** (rng.uniform(*DEMO_PEAK_DBFS_RANGE) / 20.0) / np.abs(audio).max()
    return torch.from_numpy(audio.astype(np.float32)), truth


# --- decoders: waveforms (S,) -> (alignment, emitted words, snapped words) --------------------


def whole_files(model: Transducer, tokenizer: Tokenizer, beam_size: int) -> Decoder:
    """Greedy (``beam_size`` 1) or beam search over each whole utterance, its words emitted
    and snapped to the audio's pauses: the steps of ``transcribe_windows(timestamps=True)``."""
    seconds = timestamps.frame_seconds(model)

    def decode(waveforms: list[torch.Tensor]) -> list[Decoded]:
        decoded = []
        for waveform in waveforms:  # one at a time, so padding cannot move a frame
            length = torch.tensor([waveform.numel()])
            [alignment] = transcribe_alignments(model, waveform[None], length, beam_size=beam_size)
            emitted = timestamps.word_timings(tokenizer, alignment, seconds)
            pauses = timestamps.speech_stretches(timestamps.block_energies(waveform, SAMPLE_RATE))
            decoded.append((alignment, emitted, timestamps.snap_to_speech(emitted, pauses)))
        return decoded

    return decode


def check_against_transcribe_windows(
    model: Transducer, tokenizer: Tokenizer, beam_size: int, waveforms: list[torch.Tensor]
) -> None:
    """Raise ``AssertionError`` unless ``waveforms``, written to WAV files and decoded by
    ``transcribe_windows(..., timestamps=True)`` one per batch, give :func:`whole_files`' words."""
    with tempfile.TemporaryDirectory() as folder:
        items = [AudioItem(str(Path(folder) / f"{i}.wav")) for i in range(len(waveforms))]
        for item, waveform in zip(items, waveforms, strict=True):
            soundfile.write(item.path, waveform.numpy(), SAMPLE_RATE, subtype="FLOAT")
        windows = transcribe_windows(
            model, tokenizer, items, batch_seconds=1e-3, beam_size=beam_size, timestamps=True
        )
        product = [transcript.words for window in windows for transcript in window]
    ours = [snapped for _, _, snapped in whole_files(model, tokenizer, beam_size)(waveforms)]
    if product != ours:
        raise AssertionError(f"transcribe_windows gave {product}, the benchmark {ours}")


def streamed(model: Transducer, tokenizer: Tokenizer, chunk_ms: int) -> Decoder:
    """Greedy decoding chunk by chunk: a :class:`StreamingSession` fed by ``feed`` (10 ms
    pieces), its ``words(tokenizer)`` snapped, ``word_timings`` of its alignment emitted."""
    seconds = timestamps.frame_seconds(model)

    def decode(waveforms: list[torch.Tensor]) -> list[Decoded]:
        decoded = []
        for waveform in waveforms:
            session = StreamingSession(model, chunk_ms=chunk_ms)
            feed(session, waveform)
            emitted = timestamps.word_timings(tokenizer, session.alignment, seconds)
            decoded.append((session.alignment, emitted, session.words(tokenizer)))
        return decoded

    return decode


# --- scoring ----------------------------------------------------------------------------------


def align_words(reference: list[str], hypothesis: list[str]) -> list[tuple[int | None, int | None]]:
    """A minimal edit-distance alignment: ``(reference index, hypothesis index)`` pairs in
    order; ``None`` on one side is a deletion or an insertion. Ties prefer a match or a
    substitution to a deletion, and a deletion to an insertion."""
    rows, cols = len(reference), len(hypothesis)
    cost = [[i + j for j in range(cols + 1)] for i in range(rows + 1)]  # right on the borders
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            diagonal = cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1])
            cost[i][j] = min(diagonal, cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = rows, cols
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            i, j = i - 1, j - 1
            pairs.append((i, j))
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
            pairs.append((i, None))
        else:
            j -= 1
            pairs.append((None, j))
    return pairs[::-1]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions, deletions and insertions of the alignment of ``align_words``."""
    return sum(
        r is None or h is None or reference[r] != hypothesis[h]
        for r, h in align_words(reference, hypothesis)
    )


def rank_auc(correct: list[float], wrong: list[float]) -> float | None:
    """ROC AUC of scores: the share of correct-wrong pairs whose correct item scores higher,
    ties counted half (the Mann-Whitney U over the pairs); None without both kinds."""
    if not correct or not wrong:
        return None
    pairs_correct, pairs_wrong = np.array(correct)[:, None], np.array(wrong)[None, :]
    return float(((pairs_correct > pairs_wrong) + 0.5 * (pairs_correct == pairs_wrong)).mean())


def _errors_summary(errors_ms: np.ndarray) -> dict:
    names = ("mean", "median", "p10", "p90", "abs_p90")
    p50_p10_p90 = np.percentile(errors_ms, [50, 10, 90])
    values = (errors_ms.mean(), *p50_p10_p90, np.percentile(np.abs(errors_ms), 90))
    return {name: round(float(value), 1) for name, value in zip(names, values, strict=True)}


def _share(values: np.ndarray) -> float:
    return round(float(values.mean()), 4)


def timestamp_accuracy(
    texts: list[str],
    truths: list[list[tuple[float, float]]],
    timings: list[list[timestamps.WordTiming]],
) -> dict:
    """Of the reference words recognised correctly: the shares within ``TOLERANCE_MS``, the
    signed errors (ms, recognised minus true), the first-word split (module docstring)."""
    start_ms, end_ms, first_word = [], [], []
    no_overlap = 0
    for text, truth, words in zip(texts, truths, timings, strict=True):
        reference, hypothesis = text.split(), [w.word for w in words]
        for r, h in align_words(reference, hypothesis):
            if r is None or h is None or reference[r] != hypothesis[h]:
                continue
            (true_start, true_end), word = truth[r], words[h]
            start_ms.append(1000 * (word.start - true_start))
            end_ms.append(1000 * (word.end - true_end))
            first_word.append(r == 0)
            no_overlap += word.end <= true_start or word.start >= true_end
    starts, ends, first = np.array(start_ms), np.array(end_ms), np.array(first_word, dtype=bool)
    start_ok, end_ok = np.abs(starts) <= TOLERANCE_MS, np.abs(ends) <= TOLERANCE_MS
    by_position = {
        name: {
            "words": int(rows.sum()),
            "start_within": _share(start_ok[rows]),
            "end_within": _share(end_ok[rows]),
            "both_within": _share((start_ok & end_ok)[rows]),
            "start_error_ms_median": round(float(np.median(starts[rows])), 1),
            "end_error_ms_median": round(float(np.median(ends[rows])), 1),
        }
        for name, rows in (("first_word", first), ("later_words", ~first))
        if rows.any()
    }
    return {
        "words_scored": len(starts),
        f"within_{TOLERANCE_MS:g}ms": {
            "start": _share(start_ok),
            "end": _share(end_ok),
            "both": _share(start_ok & end_ok),
        },
        "start_error_ms": _errors_summary(starts),
        "end_error_ms": _errors_summary(ends),
        "by_position": by_position,
        "matched_without_overlap": no_overlap,
    }


def confidence_auc(references: list[str], decoded: list[Decoded], tokenizer: Tokenizer) -> dict:
    """Correct and wrong recognised words and the ROC AUC of each confidence measure."""
    scored: list[tuple[bool, float, float, float]] = []  # correct; min, mean, product
    errors = reference_words = 0
    for text, (alignment, words, _) in zip(references, decoded, strict=True):
        groups: list[list[int]] = []  # word_timings' grouping: each word's token positions
        for position, token in enumerate(alignment.ids):
            if not groups or tokenizer.id_to_piece(token).startswith(WORD_BOUNDARY_PIECE):
                groups.append([])
            groups[-1].append(position)
        word_log_probs = [
            [alignment.log_probs[i] for i in group]
            for group in groups
            if tokenizer.decode([alignment.ids[i] for i in group]).strip()
        ]
        reference, hypothesis = text.split(), [w.word for w in words]
        reference_words += len(reference)
        errors += word_errors(reference, hypothesis)
        for r, h in align_words(reference, hypothesis):
            if h is None:
                continue
            probabilities = [min(1.0, math.exp(lp)) for lp in word_log_probs[h]]
            if not math.isclose(min(probabilities), words[h].confidence):
                raise AssertionError(f"word {h} of {hypothesis}: groups differ from word_timings")
            correct = r is not None and reference[r] == hypothesis[h]
            product = math.exp(sum(word_log_probs[h]))
            scored.append((correct, words[h].confidence, float(np.mean(probabilities)), product))
    auc = {
        name: rank_auc(
            [row[k] for row in scored if row[0]], [row[k] for row in scored if not row[0]]
        )
        for k, name in enumerate(("min_token_probability", "mean", "product"), start=1)
    }
    return {
        "wer": round(errors / reference_words, 4),
        "words_correct": sum(row[0] for row in scored),
        "words_wrong": sum(not row[0] for row in scored),
        "auc": {name: None if value is None else round(value, 4) for name, value in auc.items()},
    }


# --- main -------------------------------------------------------------------------------------


def evaluate(
    decode: Decoder,
    tokenizer: Tokenizer,
    synthesized: tuple[list[str], list[torch.Tensor], list[list[tuple[float, float]]]],
    test_set: tuple[list[str], list[torch.Tensor]] | None,
) -> dict:
    """Timestamp accuracy (snapped, emitted) of the synthesized sentences; confidence AUC."""
    texts, waveforms, truths = synthesized
    decoded = decode(waveforms)
    references = [text.split() for text in texts]
    errors = sum(map(word_errors, references, [[w.word for w in d[1]] for d in decoded]))
    reference_words = sum(map(len, references))
    result: dict = {
        "wer": round(errors / reference_words, 4),
        "reference_words": reference_words,
        "snapped": timestamp_accuracy(texts, truths, [snapped for _, _, snapped in decoded]),
        "emitted": timestamp_accuracy(texts, truths, [emitted for _, emitted, _ in decoded]),
    }
    if test_set is not None:
        references, test_audio = test_set
        result["confidence"] = confidence_auc(references, decode(test_audio), tokenizer)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="full-context model")
    parser.add_argument("--streaming-checkpoint", type=Path, help="also measure streaming")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="demo test split")
    parser.add_argument("--sentences", type=int, default=SENTENCES)
    parser.add_argument(
        "--gap-ms", type=float, nargs=2, default=list(GAP_MS), metavar=("MIN", "MAX")
    )
    parser.add_argument("--beam-size", type=int, default=BEAM_SIZE)
    parser.add_argument("--chunk-ms", type=int, default=STREAMING_CHUNK_MS)
    parser.add_argument("--no-confidence", action="store_true", help="timestamps only")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    texts = pick_sentences(args.manifest, args.sentences, args.seed)
    spoken = [speak_words(text, args.seed + i, tuple(args.gap_ms)) for i, text in enumerate(texts)]
    spoken_audio = [audio for audio, _ in spoken]
    synthesized = (texts, spoken_audio, [truth for _, truth in spoken])
    test_set = None
    if not args.no_confidence:
        utterances = read_manifest(args.manifest)
        test_set = (
            [normalize_text(u.text) for u in utterances],
            [load_audio(AudioItem(u.audio_filepath, u.offset, u.duration)) for u in utterances],
        )
    model, tokenizer = load_checkpoint(args.checkpoint, "cpu")
    report: dict = {
        "checkpoint": str(args.checkpoint),
        "threads": args.threads,
        "truth": {
            "gap_ms": list(args.gap_ms),
            "edge_ms": list(EDGE_MS),
            "sentences": len(texts),
            "audio_s": round(sum(a.numel() for a, _ in spoken) / SAMPLE_RATE, 1),
            "seed": args.seed,
        },
        "confidence_manifest": None if args.no_confidence else str(args.manifest),
        "tolerance_ms": TOLERANCE_MS,
        "target_share": TARGET_SHARE,
    }
    results = {}
    for beam_size in (1, args.beam_size):
        check_against_transcribe_windows(model, tokenizer, beam_size, spoken_audio[:CHECK_FILES])
        decode = whole_files(model, tokenizer, beam_size)
        name = "greedy" if beam_size == 1 else f"beam_{beam_size}"
        results[name] = evaluate(decode, tokenizer, synthesized, test_set)
    if args.streaming_checkpoint:
        streaming_model, streaming_tokenizer = load_checkpoint(args.streaming_checkpoint, "cpu")
        decode = streamed(streaming_model, streaming_tokenizer, args.chunk_ms)
        results[f"streaming_{args.chunk_ms}ms"] = {
            "checkpoint": str(args.streaming_checkpoint),
            **evaluate(decode, streaming_tokenizer, synthesized, test_set),
        }
    within, report["both_within"] = f"within_{TOLERANCE_MS:g}ms", {}  # snapped: what users get
    for name, result in results.items():
        snapped, emitted = (result[row][within]["both"] for row in ("snapped", "emitted"))
        met = snapped >= TARGET_SHARE
        report["both_within"][name] = {"snapped": snapped, "emitted": emitted, "target_met": met}
    report.update(results)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
