"""Streaming against full-utterance decoding of a streaming checkpoint, on a manifest.

Decodes every line of ``--manifest`` twice with a model trained for streaming (attention
context ``[left, 0]``, causal convolutions, e.g. ``configs/streaming.yaml``): chunk by chunk
with ``rnnt.streaming.streaming_transcribe`` (audio fed 10 ms at a time, as from a microphone)
and whole with ``rnnt.transcribe.transcribe`` (batched greedy). Prints the WER of each, how
many transcripts are identical (all of them, if streaming is exact), and the compute time per
chunk (mean and p95 over all chunks, ms).

    python benchmarks/streaming.py --checkpoint runs/streaming/checkpoints/last.ckpt \\
        --manifest demo/data/test.jsonl --chunk-ms 320 --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchmetrics.functional.text import word_error_rate

from rnnt.checkpoint import load_checkpoint
from rnnt.constants import SAMPLE_RATE, STREAMING_CHUNK_MS, STREAMING_FEED_MS
from rnnt.data.manifest import read_manifest
from rnnt.data.tokenizer import normalize_text
from rnnt.streaming import StreamingSession
from rnnt.transcribe import AudioItem, load_audio, transcribe


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--chunk-ms", type=int, default=STREAMING_CHUNK_MS)
    parser.add_argument("--feed-ms", type=int, default=STREAMING_FEED_MS, help="audio per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tokenizer = load_checkpoint(args.checkpoint)
    utterances = read_manifest(args.manifest)
    items = [AudioItem(u.audio_filepath, u.offset, u.duration) for u in utterances]
    references = [normalize_text(u.text) for u in utterances]
    full, audio_seconds = transcribe(model, tokenizer, items)

    feed = args.feed_ms * SAMPLE_RATE // 1000
    streamed, chunk_seconds = [], []
    start = time.perf_counter()
    for item in items:
        samples = load_audio(item)
        session = StreamingSession(model, chunk_ms=args.chunk_ms)
        for begin in range(0, samples.numel(), feed):
            session.accept(samples[begin : begin + feed])
        streamed.append(tokenizer.decode(session.finish()))
        chunk_seconds.extend(session.chunk_seconds)
    wall = time.perf_counter() - start
    chunk_ms = torch.tensor(chunk_seconds) * 1000
    report = {
        "checkpoint": str(args.checkpoint),
        "attention_context_size": model.config.attention_context_size,
        "utterances": len(items),
        "audio_s": round(audio_seconds, 1),
        "chunk_ms": args.chunk_ms,
        "threads": args.threads,
        "wer_full_utterance": round(float(word_error_rate(full, references)), 5),
        "wer_streaming": round(float(word_error_rate(streamed, references)), 5),
        "identical_transcripts": sum(a == b for a, b in zip(streamed, full, strict=True)),
        "chunks": len(chunk_seconds),
        "compute_ms_per_chunk_mean": round(float(chunk_ms.mean()), 2),
        "compute_ms_per_chunk_p95": round(float(chunk_ms.quantile(0.95)), 2),
        "streaming_x_real_time": round(audio_seconds / wall, 1),
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
