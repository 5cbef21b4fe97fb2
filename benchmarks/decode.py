"""Decoding speed on the CPU: greedy and beam search, batched and one at a time, and streaming.

Figures, with ``--threads`` torch threads (default 2):

- ``presets``: for the tiny and small models, speed in seconds of audio per wall-clock second
  (``x_real_time``; 300 means 300 s of audio take 1 s) of greedy search and of beam search
  (``--beam-size``, default BEAM_SIZE), encoder included, and of the encoder alone.
  ``batched``: all utterances, sorted by duration in padded batches of ``--batch-seconds``
  (default TRANSCRIBE_BATCH_SECONDS_CPU), as ``rnnt transcribe`` does on the CPU;
  ``unbatched``: the first ``--unbatched`` utterances (default 8), one at a time.
  ``greedy_host_reads_max``: the most host reads (device values read back, a GPU sync each)
  of one greedy call, counted with ``rnnt.op_counts.count_ops`` outside the timed runs.
  Target: batched greedy on tiny >= 1000x real time on 2 cores, encoder included.
- ``streaming``: compute time per chunk (mean and p95, ms) of ``rnnt.streaming
  .StreamingSession`` for chunks of 160, 320 and 640 ms, on the tiny model made streaming
  (attention context [32, 0], causal convolutions), fed 10 ms at a time.

Weights are random: the figures are speed only (the transcripts are noise). An untrained joiner
emits a token at almost every try, five per frame, which would make decoding look five times
slower than it is; so the blank logit's bias is set by bisection until greedy search emits
``TOKENS_PER_FRAME`` tokens per encoder frame, what the trained demo model emits on its test
set (0.43 with 40 pieces). Beam search on such a model is pessimistic: its flat token
distributions keep more hypotheses on a frame than a trained model's (and its best hypothesis
is empty). The audio is synthetic (tones with a syllable-rate envelope plus
noise, 4-8 s), or the first ``--utterances`` lines of ``--manifest``. ``--checkpoint`` adds
a ``checkpoint`` entry: the same figures for a trained model (no calibration), best with real
audio from ``--manifest``.

Timing: the shortest of ``--repeats`` runs (default 2) of each figure, after a warm-up. The
1-minute load average before and after is reported: on a shared machine other processes slow
small-tensor decoding far more than their share of the cores suggests (threads wait for each
other), so compare figures of one run.

    python benchmarks/decode.py --json
    python benchmarks/decode.py --checkpoint runs/demo/checkpoints/last.ckpt \
        --manifest demo/data/test.jsonl --presets tiny --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from rnnt.constants import (
    BEAM_SIZE,
    MAX_SYMBOLS_PER_FRAME,
    SAMPLE_RATE,
    SEED,
    STREAMING_FEED_MS,
    TRANSCRIBE_BATCH_SECONDS_CPU,
    VOCAB_SIZE,
)
from rnnt.decoding import beam_search, greedy_search
from rnnt.models.transducer import Transducer, config_from_preset
from rnnt.op_counts import count_ops
from rnnt.transcribe import AudioItem, batch_by_duration, load_audio

PRESETS = ("tiny", "small")
UTTERANCES = 32
UNBATCHED_UTTERANCES = 8
REPEATS = 2
SECONDS_RANGE = (4.0, 8.0)  # synthetic utterance durations, uniform
THREADS = 2
TOKENS_PER_FRAME = 0.4  # greedy emission rate the random models are calibrated to
CALIBRATION_UTTERANCES = 8
CALIBRATION_STEPS = 12  # bisection steps on the blank bias
BLANK_BIAS_RANGE = (-10.0, 30.0)
STREAMING_CHUNKS_MS = (160, 320, 640)
STREAMING_CONTEXT = [32, 0]  # [left, right] encoder frames, as configs/streaming.yaml
STREAMING_UTTERANCES = 4
BATCHED_GREEDY_TARGET = 1000.0  # x real time, tiny preset, 2 cores, encoder included


def synthetic_audio(count: int, seed: int = SEED) -> list[torch.Tensor]:
    """``count`` waveforms ``(S,)`` at 16 kHz: harmonic tones switched on and off at a
    syllable rate, with noise; durations uniform in SECONDS_RANGE."""
    generator = torch.Generator().manual_seed(seed)
    waveforms = []
    for _ in range(count):
        low, high = SECONDS_RANGE
        seconds = low + (high - low) * float(torch.rand((), generator=generator))
        time_s = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        pitch = 100 + 150 * float(torch.rand((), generator=generator))
        syllables = 3 + 3 * float(torch.rand((), generator=generator))  # per second
        envelope = torch.sin(math.pi * syllables * time_s).clamp(min=0)
        voice = sum(torch.sin(2 * math.pi * k * pitch * time_s) / k for k in range(1, 6))
        noise = torch.randn(time_s.numel(), generator=generator)
        waveforms.append((0.1 * envelope * voice + 0.01 * noise).float())
    return waveforms


def manifest_audio(manifest: Path, count: int) -> list[torch.Tensor]:
    """The first ``count`` utterances of a manifest, loaded as ``rnnt transcribe`` does."""
    from rnnt.data.manifest import read_manifest

    utterances = read_manifest(manifest)[:count]
    return [load_audio(AudioItem(u.audio_filepath, u.offset, u.duration)) for u in utterances]


def _pad(waveforms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.numel() for w in waveforms])
    audio = torch.zeros(len(waveforms), int(lengths.max()))
    for row, waveform in enumerate(waveforms):
        audio[row, : waveform.numel()] = waveform
    return audio, lengths


@torch.inference_mode()
def calibrate_blank_bias(model: Transducer, waveforms: list[torch.Tensor]) -> dict:
    """Shift the blank logit's bias until greedy search emits TOKENS_PER_FRAME per frame."""
    encoder_out, encoder_lengths = model.encode(*_pad(waveforms[:CALIBRATION_UTTERANCES]))
    bias = model.joiner.output.bias
    blank = model.config.blank_id
    original = float(bias[blank])
    low, high = BLANK_BIAS_RANGE
    rate = float("nan")
    for _ in range(CALIBRATION_STEPS):
        shift = (low + high) / 2
        bias[blank] = original + shift
        ids = greedy_search(model, encoder_out, encoder_lengths)
        rate = sum(map(len, ids)) / int(encoder_lengths.sum())
        low, high = (shift, high) if rate > TOKENS_PER_FRAME else (low, shift)
    return {"blank_bias_shift": round(shift, 3), "greedy_tokens_per_frame": round(rate, 3)}


def _timed(repeats: int, function, *args):
    """``function(*args)`` and its shortest wall time over ``repeats`` runs, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return result, min(times)


@torch.inference_mode()
def measure(
    model: Transducer, groups: list[list[torch.Tensor]], beam_size: int, repeats: int = 1
) -> dict:
    """Encoder, greedy and beam seconds over ``groups`` of waveforms (one padded batch each);
    each timing is the shortest of ``repeats`` runs."""
    seconds = {"encoder": 0.0, "greedy": 0.0, "beam": 0.0}
    tokens = {"greedy": 0, "beam": 0}
    frames = 0
    host_reads = 0
    for group in groups:
        (encoder_out, encoder_lengths), took = _timed(repeats, model.encode, *_pad(group))
        seconds["encoder"] += took
        frames += int(encoder_lengths.sum())
        ids, took = _timed(repeats, greedy_search, model, encoder_out, encoder_lengths)
        seconds["greedy"] += took
        tokens["greedy"] += sum(map(len, ids))
        with count_ops() as counts:
            greedy_search(model, encoder_out, encoder_lengths)
        host_reads = max(host_reads, counts.host_reads)
        ids, took = _timed(
            repeats,
            beam_search,
            model,
            encoder_out,
            encoder_lengths,
            beam_size,
            MAX_SYMBOLS_PER_FRAME,
        )
        seconds["beam"] += took
        tokens["beam"] += sum(map(len, ids))
    audio_s = sum(w.numel() for group in groups for w in group) / SAMPLE_RATE
    encoder = seconds["encoder"]
    return {
        "batches": len(groups),
        "audio_s": round(audio_s, 2),
        "encoder_s": round(encoder, 3),
        "greedy_search_s": round(seconds["greedy"], 3),
        "beam_search_s": round(seconds["beam"], 3),
        "encoder_x_real_time": round(audio_s / encoder, 1),
        "greedy_x_real_time": round(audio_s / (encoder + seconds["greedy"]), 1),
        "beam_x_real_time": round(audio_s / (encoder + seconds["beam"]), 1),
        "greedy_tokens_per_frame": round(tokens["greedy"] / frames, 3),
        "greedy_host_reads_max": host_reads,
        "beam_tokens_per_frame": round(tokens["beam"] / frames, 3),
    }


def random_model(preset: str, **overrides) -> Transducer:
    torch.manual_seed(SEED)
    return Transducer(config_from_preset(preset, VOCAB_SIZE + 1, **overrides)).eval()


def bench_model(model: Transducer, waveforms: list[torch.Tensor], args: argparse.Namespace) -> dict:
    """Batched and unbatched figures of one model."""
    measure(model, [waveforms[:2]], args.beam_size)  # warm-up: kernels, allocator, threads
    durations = [w.numel() / SAMPLE_RATE for w in waveforms]
    batches = [
        [waveforms[i] for i in batch] for batch in batch_by_duration(durations, args.batch_seconds)
    ]
    singles = [[waveform] for waveform in waveforms[: args.unbatched]]
    return {
        "parameters": model.num_parameters(),
        "batched": measure(model, batches, args.beam_size, args.repeats),
        "unbatched": measure(model, singles, args.beam_size, args.repeats),
    }


def bench_preset(preset: str, waveforms: list[torch.Tensor], args: argparse.Namespace) -> dict:
    model = random_model(preset)
    calibration = calibrate_blank_bias(model, waveforms)
    return {**calibration, **bench_model(model, waveforms, args)}


def bench_streaming(waveforms: list[torch.Tensor]) -> dict:
    """Compute time per chunk of a streaming session, or why it was skipped."""
    try:
        from rnnt.streaming import StreamingSession
    except ImportError as error:
        return {"skipped": f"rnnt.streaming is not importable: {error}"}
    model = random_model("tiny", attention_context_size=STREAMING_CONTEXT, causal_conv=True)
    calibration = calibrate_blank_bias(model, waveforms)
    utterances = waveforms[:STREAMING_UTTERANCES]
    piece = SAMPLE_RATE * STREAMING_FEED_MS // 1000
    result = {"preset": "tiny", "attention_context_size": STREAMING_CONTEXT, **calibration}
    for chunk_ms in STREAMING_CHUNKS_MS:
        chunk_seconds: list[float] = []
        for index, waveform in enumerate(utterances):
            try:  # the contract: StreamingSession(model, chunk_ms=...), .accept(samples (S,)),
                # .finish(), and .chunk_seconds, the compute seconds of each chunk run
                session = StreamingSession(model, chunk_ms=chunk_ms)
                for start in range(0, waveform.numel(), piece):
                    session.accept(waveform[start : start + piece])
                session.finish()
                seconds = list(session.chunk_seconds)
            except (AttributeError, TypeError, ValueError) as error:
                return {"skipped": f"StreamingSession does not run as expected: {error!r}"}
            if index > 0:  # the first utterance warms up
                chunk_seconds.extend(seconds)
        milliseconds = sorted(1000 * s for s in chunk_seconds)
        audio_s = sum(w.numel() for w in utterances[1:]) / SAMPLE_RATE
        result[f"chunk_{chunk_ms}ms"] = {
            "chunks": len(milliseconds),
            "compute_ms_mean": round(statistics.fmean(milliseconds), 2),
            "compute_ms_p95": round(milliseconds[math.ceil(0.95 * len(milliseconds)) - 1], 2),
            "x_real_time": round(audio_s / (sum(milliseconds) / 1000), 1),
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--utterances", type=int, default=UTTERANCES)
    parser.add_argument("--unbatched", type=int, default=UNBATCHED_UTTERANCES)
    parser.add_argument("--checkpoint", type=Path, help="also measure this trained model")
    parser.add_argument("--manifest", type=Path, help="take audio from this manifest instead")
    parser.add_argument("--beam-size", type=int, default=BEAM_SIZE)
    parser.add_argument("--batch-seconds", type=float, default=TRANSCRIBE_BATCH_SECONDS_CPU)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timings: shortest of N")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--no-streaming", action="store_true", help="skip the streaming part")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.manifest:
        waveforms = manifest_audio(args.manifest, args.utterances)
        audio = f"{args.manifest} (first {len(waveforms)} utterances)"
    else:
        waveforms = synthetic_audio(args.utterances)
        audio = (
            f"synthetic: {len(waveforms)} utterances of {SECONDS_RANGE[0]:g}-{SECONDS_RANGE[1]:g} s"
        )
    started = time.perf_counter()
    result: dict = {
        "device": "cpu",
        "threads": args.threads,
        "load_average_1min_before": round(os.getloadavg()[0], 2),
        "weights": (
            "random init (speed only); blank bias calibrated to "
            f"{TOKENS_PER_FRAME} greedy tokens per frame"
        ),
        "audio": audio,
        "audio_s": round(sum(w.numel() for w in waveforms) / SAMPLE_RATE, 2),
        "num_classes": VOCAB_SIZE + 1,
        "beam_size": args.beam_size,
        "repeats": args.repeats,
        "max_symbols_per_frame": MAX_SYMBOLS_PER_FRAME,
        "presets": {preset: bench_preset(preset, waveforms, args) for preset in args.presets},
    }
    if args.checkpoint:
        from rnnt.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.checkpoint, map_location="cpu")
        result["checkpoint"] = {
            "path": str(args.checkpoint),
            "num_classes": model.config.num_classes,
            **bench_model(model, waveforms, args),
        }
    if args.no_streaming:
        result["streaming"] = {"skipped": "--no-streaming"}
    else:
        result["streaming"] = bench_streaming(waveforms)
    if "tiny" in result["presets"]:
        measured = result["presets"]["tiny"]["batched"]["greedy_x_real_time"]
        result["target"] = {
            "tiny_batched_greedy_x_real_time": BATCHED_GREEDY_TARGET,
            "measured": measured,
            "met": measured >= BATCHED_GREEDY_TARGET,
        }
    result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
