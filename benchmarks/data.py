"""Padding of duration-bucketed batches and data-loader throughput.

Two figures on a corpus's ``train.jsonl`` (and its ``noise/`` folder):

- ``padding``: the fraction of padded samples over one epoch of training batches,
  ``1 - sum(durations) / sum(batch size x longest)``, for the project's bucketing sampler
  and for random batching (lhotse ``DynamicCutSampler``, shuffled) with the same
  ``max_batch_duration``, ``batch_size`` and speed perturbation. Only durations are used
  (no audio is read). Target: bucketing < 10 %.
- ``throughput``: seconds of audio delivered per wall-clock second by the training
  ``DataLoader`` with ``num_workers`` workers (default 1), speed perturbation and background
  noise on, over ``--batches`` batches after a warm-up batch (worker start-up excluded),
  divided by the number of workers. Target: > 200x real time per worker.

    python benchmarks/data.py --json                       # the demo corpus, demo/data
    python benchmarks/data.py --tones 400 --json           # a synthetic corpus of tones
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile
from lhotse import CutSet
from lhotse.dataset import DynamicCutSampler

from rnnt.constants import (
    BATCH_SIZE,
    DEMO_DATA_DIR,
    MAX_BATCH_DURATION,
    NUM_BUCKETS,
    SAMPLE_RATE,
    SEED,
    SPEED_PERTURB_FACTORS,
)
from rnnt.data.augment import RandomSpeed
from rnnt.data.cuts import CutSource
from rnnt.data.datamodule import TransducerDataModule
from rnnt.data.manifest import write_manifest
from rnnt.data.tokenizer import train_tokenizer

PADDING_TARGET = 0.10  # bucketing: at most 10 % padded samples
THROUGHPUT_TARGET = 200.0  # seconds of audio per second, per worker
BATCHES = 30
BENCH_VOCAB_SIZE = 32  # a tokenizer for a corpus that has none (the tones' 12 words fit)
WORKERS = 1
TONE_SECONDS = (1.0, 6.0)  # durations of the synthetic utterances, uniform
TONE_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


def make_tone_corpus(
    folder: Path, utterances: int, sample_rate: int = SAMPLE_RATE, seed: int = SEED
) -> Path:
    """``train.jsonl`` of tones (1-6 s at ``sample_rate`` Hz) with word-salad texts, and noise/."""
    rng = np.random.default_rng(seed)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    (folder / "noise").mkdir(exist_ok=True)
    records = []
    for index in range(utterances):
        frames = int(rng.uniform(*TONE_SECONDS) * sample_rate)
        hz = rng.uniform(200, 2000)
        tone = 0.3 * np.sin(2 * np.pi * hz * np.arange(frames) / sample_rate)
        path = folder / "audio" / f"{index:05d}.flac"
        soundfile.write(path, tone.astype(np.float32), sample_rate)
        words = rng.choice(TONE_WORDS, size=int(rng.integers(3, 9)))
        records.append(
            {"audio_filepath": str(path), "duration": frames / sample_rate, "text": " ".join(words)}
        )
    for index in range(3):
        noise = rng.normal(size=10 * SAMPLE_RATE).astype(np.float32) * 0.1
        soundfile.write(folder / "noise" / f"noise{index}.wav", noise, SAMPLE_RATE)
    write_manifest(folder / "train.jsonl", records)
    return folder


def padding_fraction(batches) -> tuple[float, int]:
    """(padded fraction over all batches, number of batches) from CutSet batches."""
    real = padded = 0.0
    count = 0
    for cuts in batches:
        durations = [cut.duration for cut in cuts]
        real += sum(durations)
        padded += len(durations) * max(durations)
        count += 1
    return 1.0 - real / padded, count


def measure_padding(module: TransducerDataModule) -> dict:
    bucketed, bucketed_batches = padding_fraction(module.make_sampler("train"))
    speed = RandomSpeed(module.speed_perturb, module.seed) if module.speed_perturb else None
    source = CutSource(module._records_for("train"), shuffle=True, speed=speed, seed=module.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lhotse's "eager CutSet" hint does not apply here
        random_sampler = DynamicCutSampler(
            CutSet(source),
            max_duration=module.max_batch_duration,
            max_cuts=module.batch_size,
            shuffle=True,
            seed=module.seed,
        )
    random_padding, random_batches = padding_fraction(random_sampler)
    return {
        "bucketing": round(bucketed, 4),
        "random": round(random_padding, 4),
        "bucketing_batches": bucketed_batches,
        "random_batches": random_batches,
        "target": PADDING_TARGET,
        "ok": bucketed < PADDING_TARGET,
    }


def measure_throughput(module: TransducerDataModule, batches: int) -> dict:
    loader = module.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # worker start-up and first batch: not what the figure is about
    seconds_of_audio = 0.0
    count = 0
    start = time.perf_counter()
    for batch in iterator:
        seconds_of_audio += float(batch["audio_lengths"].sum()) / SAMPLE_RATE
        count += 1
        if count == batches:
            break
    elapsed = time.perf_counter() - start
    workers = max(module.num_workers, 1)
    per_worker = seconds_of_audio / elapsed / workers
    return {
        "batches": count,
        "audio_seconds": round(seconds_of_audio, 1),
        "wall_seconds": round(elapsed, 3),
        "num_workers": module.num_workers,
        "realtime_factor_per_worker": round(per_worker, 1),
        "target": THROUGHPUT_TARGET,
        "ok": per_worker > THROUGHPUT_TARGET,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(DEMO_DATA_DIR))
    parser.add_argument("--tones", type=int, default=0, help="benchmark N synthetic tones instead")
    parser.add_argument("--tone-rate", type=int, default=SAMPLE_RATE, help="their sample rate, Hz")
    parser.add_argument("--max-batch-duration", type=float, default=MAX_BATCH_DURATION)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--num-buckets", type=int, default=NUM_BUCKETS)
    parser.add_argument("--num-workers", type=int, default=WORKERS)
    parser.add_argument("--batches", type=int, default=BATCHES)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        corpus = args.corpus
        if args.tones:
            corpus = make_tone_corpus(Path(scratch) / "tones", args.tones, args.tone_rate)
        manifest = corpus / "train.jsonl"
        if not manifest.is_file():
            sys.exit(f"{manifest} not found: run `rnnt demo-data` first, or pass --tones N")
        tokenizer = corpus / "tokenizer.model"
        if not tokenizer.is_file():
            tokenizer = train_tokenizer(
                [manifest], Path(scratch) / "tokenizer.model", BENCH_VOCAB_SIZE
            )
        noise = corpus / "noise"
        module = TransducerDataModule(
            train_manifest=str(manifest),
            val_manifest=str(manifest),
            test_manifest=str(manifest),
            tokenizer_path=str(tokenizer),
            noise_path=str(noise) if noise.is_dir() else None,
            max_batch_duration=args.max_batch_duration,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            num_buckets=args.num_buckets,
            speed_perturb=list(SPEED_PERTURB_FACTORS),
        )
        module.setup("fit")
        records = module._records_for("train")
        result = {
            "corpus": (
                f"synthetic tones x{args.tones} at {args.tone_rate} Hz"
                if args.tones
                else str(args.corpus)
            ),
            "utterances": len(records),
            "hours": round(sum(r.duration for r in records) / 3600, 3),
            "max_batch_duration": args.max_batch_duration,
            "batch_size": args.batch_size,
            "noise": module.noise_path is not None,
            "speed_perturb": module.speed_perturb,
            "padding": measure_padding(module),
            "throughput": measure_throughput(module, args.batches),
        }
    if args.json:
        print(json.dumps(result))
    else:
        padding, throughput = result["padding"], result["throughput"]
        print(
            f"corpus: {result['corpus']} ({result['utterances']} utterances, {result['hours']} h)"
        )
        print(
            f"padding: bucketing {padding['bucketing']:.1%} ({padding['bucketing_batches']} batches), "
            f"random {padding['random']:.1%} ({padding['random_batches']} batches); "
            f"target < {PADDING_TARGET:.0%}"
        )
        print(
            f"throughput: {throughput['realtime_factor_per_worker']:.0f}x real time per worker "
            f"({throughput['audio_seconds']} s of audio in {throughput['wall_seconds']} s, "
            f"{throughput['num_workers']} worker(s)); target > {THROUGHPUT_TARGET:.0f}x"
        )
    return result


if __name__ == "__main__":
    main()
