"""sherpa-onnx against PyTorch on a manifest: does the exported model transcribe the same?

Exports ``--checkpoint`` with ``rnnt export`` (``rnnt.export.export_onnx``), transcribes every
line of ``--manifest`` with sherpa-onnx's offline NeMo-transducer recognizer (greedy search,
one utterance at a time) and with ``rnnt.transcribe.transcribe_manifest`` (batched greedy), and
prints the WER of each against the references, the WER between the two transcript sets, the
number of identical transcripts, and the wall time of each (2 threads by default).

    python benchmarks/sherpa.py --checkpoint demo/runs/demo/checkpoints/last.ckpt \\
        --manifest demo/data/test.jsonl --json

``--streaming [--chunk-ms MS]`` exports a streaming model (``rnnt export --streaming``,
``rnnt.export_streaming``) and compares sherpa-onnx's ``OnlineRecognizer`` with our
``StreamingSession`` (``rnnt.streaming.streaming_transcribe``), both fed the audio in 10 ms
pieces as a microphone would, one utterance at a time: WER of each, the WER between them,
identical transcripts, the real-time factor of each (wall time of the whole loop / audio) and
the compute time per chunk (sherpa: each ``decode_stream`` call, its features being computed
as the audio arrives; ours: features, encoder and decoding). sherpa gets the tail it needs to
decode the last chunk (the chunk plus 10 ms of silence), which ours does not.

Needs the ``export`` extra (onnx, onnxruntime, sherpa-onnx).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torchmetrics.functional.text import word_error_rate

from rnnt.checkpoint import load_checkpoint
from rnnt.constants import (
    SAMPLE_RATE,
    SHERPA_ONLINE_TAIL_EXTRA_MS,
    STREAMING_CHUNK_MS,
    STREAMING_FEED_MS,
)
from rnnt.data.manifest import read_manifest
from rnnt.data.tokenizer import normalize_text
from rnnt.export import export_onnx
from rnnt.export_streaming import export_streaming_onnx
from rnnt.streaming import streaming_transcribe
from rnnt.transcribe import AudioItem, load_audio, transcribe_manifest


def sherpa_transcripts(paths: dict[str, Path], waveforms: list[torch.Tensor], threads: int):
    """sherpa-onnx's greedy transcripts of ``waveforms`` ((S,) float32, 16 kHz), one by one."""
    import sherpa_onnx

    recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(paths["encoder"]),
        decoder=str(paths["decoder"]),
        joiner=str(paths["joiner"]),
        tokens=str(paths["tokens"]),
        model_type="nemo_transducer",
        num_threads=threads,
    )
    texts = []
    for samples in waveforms:
        stream = recognizer.create_stream()
        stream.accept_waveform(SAMPLE_RATE, samples.numpy())
        recognizer.decode_stream(stream)
        texts.append(stream.result.text.strip())
    return texts


def sherpa_online_transcripts(
    paths: dict[str, Path], waveforms: list[torch.Tensor], threads: int, chunk_ms: int
) -> tuple[list[str], float, list[float]]:
    """sherpa-onnx's OnlineRecognizer on each waveform fed in 10 ms pieces, then the tail.

    Returns the texts, the wall time of the whole loop (seconds) and the compute time of
    each chunk (each ``decode_stream`` call, seconds).
    """
    import sherpa_onnx

    recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
        encoder=str(paths["encoder"]),
        decoder=str(paths["decoder"]),
        joiner=str(paths["joiner"]),
        tokens=str(paths["tokens"]),
        num_threads=threads,
    )
    piece = SAMPLE_RATE * STREAMING_FEED_MS // 1000
    tail = torch.zeros(SAMPLE_RATE * (chunk_ms + SHERPA_ONLINE_TAIL_EXTRA_MS) // 1000)
    texts, chunk_seconds = [], []

    def decode_ready(stream) -> None:
        while recognizer.is_ready(stream):
            started = time.perf_counter()
            recognizer.decode_stream(stream)
            chunk_seconds.append(time.perf_counter() - started)

    started = time.perf_counter()
    for samples in waveforms:
        stream = recognizer.create_stream()
        audio = torch.cat((samples, tail)).numpy()
        for start in range(0, audio.size, piece):
            stream.accept_waveform(SAMPLE_RATE, audio[start : start + piece])
            decode_ready(stream)
        stream.input_finished()
        decode_ready(stream)
        texts.append(recognizer.get_result(stream).strip())
    return texts, time.perf_counter() - started, chunk_seconds


def streaming_report(args: argparse.Namespace, references: list[str], waveforms) -> dict:
    """sherpa-onnx's OnlineRecognizer against our StreamingSession (module docstring)."""
    model, tokenizer = load_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        paths = export_streaming_onnx(args.checkpoint, Path(folder) / "onnx", args.chunk_ms)
        sherpa, sherpa_seconds, sherpa_chunks = sherpa_online_transcripts(
            paths, waveforms, args.threads, args.chunk_ms
        )
    ours, our_chunks = [], []
    started = time.perf_counter()
    for samples in waveforms:
        text, stats = streaming_transcribe(model, tokenizer, samples, args.chunk_ms)
        ours.append(text)
        our_chunks.append(stats)
    our_seconds = time.perf_counter() - started
    audio_s = sum(len(w) for w in waveforms) / SAMPLE_RATE
    sherpa_ms = 1000 * torch.tensor(sherpa_chunks, dtype=torch.float64)
    our_ms = torch.tensor([s["compute_ms_mean"] for s in our_chunks], dtype=torch.float64)
    counts = torch.tensor([s["chunks"] for s in our_chunks], dtype=torch.float64)
    return {
        "checkpoint": str(args.checkpoint),
        "chunk_ms": args.chunk_ms,
        "attention_context": our_chunks[0]["attention_context"],
        "utterances": len(waveforms),
        "audio_s": round(audio_s, 1),
        "threads": args.threads,
        "wer_streaming_session": round(float(word_error_rate(ours, references)), 5),
        "wer_sherpa_online": round(float(word_error_rate(sherpa, references)), 5),
        "wer_sherpa_vs_session": round(float(word_error_rate(sherpa, ours)), 5),
        "identical_transcripts": sum(a == b for a, b in zip(sherpa, ours, strict=True)),
        "session_real_time_factor": round(our_seconds / audio_s, 4),
        "sherpa_real_time_factor": round(sherpa_seconds / audio_s, 4),
        "session_chunk_ms_mean": round(float((our_ms * counts).sum() / counts.sum()), 2),
        "sherpa_chunk_ms_mean": round(float(sherpa_ms.mean()), 2),
        "sherpa_chunk_ms_p95": round(float(sherpa_ms.quantile(0.95)), 2),
        "sherpa_tail_ms": args.chunk_ms + SHERPA_ONLINE_TAIL_EXTRA_MS,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--streaming", action="store_true", help="OnlineRecognizer vs ours")
    parser.add_argument("--chunk-ms", type=int, default=STREAMING_CHUNK_MS, help="with --streaming")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    utterances = read_manifest(args.manifest)
    references = [normalize_text(u.text) for u in utterances]
    waveforms = [load_audio(AudioItem(u.audio_filepath, u.offset, u.duration)) for u in utterances]
    if args.streaming:
        report = streaming_report(args, references, waveforms)
        print(json.dumps(report) if args.json else json.dumps(report, indent=1))
        return report
    with tempfile.TemporaryDirectory() as folder:
        paths = export_onnx(args.checkpoint, Path(folder) / "onnx")
        start = time.perf_counter()
        sherpa = sherpa_transcripts(paths, waveforms, args.threads)
        sherpa_seconds = time.perf_counter() - start
        model, tokenizer = load_checkpoint(args.checkpoint)
        result = transcribe_manifest(model, tokenizer, args.manifest, Path(folder) / "ours.jsonl")
        lines = (Path(folder) / "ours.jsonl").read_text(encoding="utf-8").splitlines()
        ours = [json.loads(line)["pred_text"] for line in lines]
    report = {
        "checkpoint": str(args.checkpoint),
        "frontend_style": model.config.frontend_style,
        "utterances": len(utterances),
        "audio_s": round(sum(len(w) for w in waveforms) / SAMPLE_RATE, 1),
        "threads": args.threads,
        "wer_pytorch": round(float(word_error_rate(ours, references)), 5),
        "wer_sherpa_onnx": round(float(word_error_rate(sherpa, references)), 5),
        "wer_sherpa_vs_pytorch": round(float(word_error_rate(sherpa, ours)), 5),
        "identical_transcripts": sum(a == b for a, b in zip(sherpa, ours, strict=True)),
        "sherpa_onnx_wall_s": round(sherpa_seconds, 2),
        "pytorch_wall_s": round(result.wall_seconds, 2),
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
