"""sherpa-onnx against PyTorch on a manifest: does the exported model transcribe the same?

Exports ``--checkpoint`` with ``rnnt export`` (``rnnt.export.export_onnx``), transcribes every
line of ``--manifest`` with sherpa-onnx's offline NeMo-transducer recognizer (greedy search,
one utterance at a time) and with ``rnnt.transcribe.transcribe_manifest`` (batched greedy), and
prints the WER of each against the references, the WER between the two transcript sets, the
number of identical transcripts, and the wall time of each (2 threads by default).

    python benchmarks/sherpa.py --checkpoint demo/runs/demo/checkpoints/last.ckpt \\
        --manifest demo/data/test.jsonl --json

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
from rnnt.constants import SAMPLE_RATE
from rnnt.data.manifest import read_manifest
from rnnt.data.tokenizer import normalize_text
from rnnt.export import export_onnx
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    utterances = read_manifest(args.manifest)
    references = [normalize_text(u.text) for u in utterances]
    waveforms = [load_audio(AudioItem(u.audio_filepath, u.offset, u.duration)) for u in utterances]
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
