"""Streaming against full-utterance decoding of a streaming checkpoint, on a manifest.

Decodes every line of ``--manifest`` with a model trained for streaming (causal convolutions
and an attention context ``[left, 0]`` or chunked ones, e.g. ``configs/streaming.yaml``), for
each ``--chunk-ms``: chunk by chunk with ``rnnt.streaming.StreamingSession`` (audio fed 10 ms
at a time, as from a microphone) at the context the session picks for that chunk, and whole
with ``rnnt.transcribe.transcribe`` (batched greedy) at the same context. Prints, per chunk,
the WER of each, how many transcripts are identical (all of them, if streaming is exact) and
the compute time per chunk (mean and p95, ms); and the WER of whole-file decoding at every
context the model lists (for a multi-lookahead model, ``full`` is its offline WER).

    python benchmarks/streaming.py --checkpoint runs/streaming/checkpoints/last.ckpt \\
        --manifest demo/data/test.jsonl --chunk-ms 160 320 640 --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchmetrics.functional.text import word_error_rate

from rnnt.checkpoint import WEIGHT_CHOICES, load_checkpoint
from rnnt.constants import SAMPLE_RATE, STREAMING_CHUNK_MS, STREAMING_FEED_MS
from rnnt.data.manifest import read_manifest
from rnnt.data.tokenizer import normalize_text
from rnnt.models.contexts import context_name
from rnnt.streaming import StreamingSession
from rnnt.transcribe import AudioItem, load_audio, transcribe


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--chunk-ms", type=int, nargs="+", default=[STREAMING_CHUNK_MS])
    parser.add_argument("--feed-ms", type=int, default=STREAMING_FEED_MS, help="audio per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", choices=WEIGHT_CHOICES, default=None, help="default: EMA")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tokenizer = load_checkpoint(args.checkpoint, weights=args.weights)
    utterances = read_manifest(args.manifest)
    items = [AudioItem(u.audio_filepath, u.offset, u.duration) for u in utterances]
    references = [normalize_text(u.text) for u in utterances]
    whole: dict[str, list[str]] = {}
    audio_seconds = 0.0
    for context in model.encoder.attention_contexts:
        model.encoder.use_context(context)
        whole[context_name(context)], audio_seconds = transcribe(model, tokenizer, items)
    model.encoder.use_context(model.encoder.attention_contexts[0])
    samples = [load_audio(item) for item in items]
    chunks = [_stream(model, tokenizer, samples, chunk, args.feed_ms) for chunk in args.chunk_ms]
    for chunk in chunks:
        full = whole[chunk.pop("context_name")]
        streamed = chunk.pop("transcripts")
        chunk["wer_full_utterance"] = _wer(full, references)
        chunk["wer_streaming"] = _wer(streamed, references)
        chunk["identical_transcripts"] = sum(a == b for a, b in zip(streamed, full, strict=True))
        chunk["streaming_x_real_time"] = round(audio_seconds / chunk.pop("wall_s"), 1)
    report = {
        "checkpoint": str(args.checkpoint),
        "weights": args.weights or "as stored",
        "attention_context_size": model.config.attention_context_size,
        "attention_context_style": model.config.attention_context_style,
        "utterances": len(items),
        "audio_s": round(audio_seconds, 1),
        "threads": args.threads,
        "wer_whole_files_by_context": {
            name: _wer(text, references) for name, text in whole.items()
        },
        "streaming": chunks,
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return report


def _stream(model, tokenizer, samples: list[torch.Tensor], chunk_ms: int, feed_ms: int) -> dict:
    # Every utterance through a StreamingSession of chunk_ms; transcripts and timings.
    feed = feed_ms * SAMPLE_RATE // 1000
    transcripts, chunk_seconds, context = [], [], None
    start = time.perf_counter()
    for audio in samples:
        session = StreamingSession(model, chunk_ms=chunk_ms)
        context = session.context
        for begin in range(0, audio.numel(), feed):
            session.accept(audio[begin : begin + feed])
        transcripts.append(tokenizer.decode(session.finish()))
        chunk_seconds.extend(session.chunk_seconds)
    wall = time.perf_counter() - start
    chunk_times = torch.tensor(chunk_seconds) * 1000
    return {
        "chunk_ms": chunk_ms,
        "attention_context": context,
        "context_name": context_name(context),
        "transcripts": transcripts,
        "chunks": len(chunk_seconds),
        "compute_ms_per_chunk_mean": round(float(chunk_times.mean()), 2),
        "compute_ms_per_chunk_p95": round(float(chunk_times.quantile(0.95)), 2),
        "wall_s": wall,
    }


def _wer(hypotheses: list[str], references: list[str]) -> float:
    return round(float(word_error_rate(hypotheses, references)), 5)


if __name__ == "__main__":
    main()
