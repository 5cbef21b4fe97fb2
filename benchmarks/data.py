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
- ``shar``: the same loader reading lhotse Shar shards (``rnnt shard``, ``--shard-size``
  utterances each) instead of the audio files, measured right after the files, side by side;
  also the shards' write speed and bytes, and how much of the set one shard epoch draws.
- ``startup``: a fresh process opens a generated ``--startup-lines``-line manifest (default
  1M lines pointing at a few real files; read lazily, ``rnnt.data.sources``) and gets its first
  training batch: seconds from before the project's imports, and peak resident memory.
  Target: <= 30 s and <= 2 GB.

    python benchmarks/data.py --json                       # the demo corpus, demo/data
    python benchmarks/data.py --tones 400 --json           # a synthetic corpus of tones
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
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
    MAX_BATCH_LATTICE_CELLS,
    NUM_BUCKETS,
    SAMPLE_RATE,
    SEED,
    SPEED_PERTURB_FACTORS,
)
from rnnt.data.augment import BackgroundNoise, NoiseSource, RandomSpeed
from rnnt.data.datamodule import TransducerDataModule
from rnnt.data.dataset import TransducerDataset
from rnnt.data.loader import SkippingDataLoader, ignore_stop_signals
from rnnt.data.manifest import write_manifest
from rnnt.data.shar import ShardSampler, ShardSource, make_shard_sampler
from rnnt.data.shar_writer import write_shards
from rnnt.data.tokenizer import train_tokenizer

PADDING_TARGET = 0.10  # bucketing: at most 10 % padded samples
THROUGHPUT_TARGET = 200.0  # seconds of audio per second, per worker
BATCHES = 30
BENCH_VOCAB_SIZE = 32  # a tokenizer for a corpus that has none (the tones' 12 words fit)
WORKERS = 1
STARTUP_LINES = 1_000_000  # the startup figure's manifest
STARTUP_FILES = 8  # real audio files its lines point at (2-9 s each)
STARTUP_TARGET_SECONDS = 30.0  # to the first batch, from process start
STARTUP_TARGET_RSS_GB = 2.0
SHARD_SIZE = 200  # utterances per shard in the shar figure (the demo corpus: 15 shards)
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
    source = module._split("train").source(
        shuffle=True, speed=speed, seed=module.seed, carry_epoch=False
    )
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


def measure_throughput(module: TransducerDataModule, batches: int, loader=None) -> dict:
    """The ``throughput`` figure of the module's training loader (or of ``loader``)."""
    loader = module.train_dataloader() if loader is None else loader
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


def measure_shar(module: TransducerDataModule, folder: Path, shard_size: int, batches: int) -> dict:
    """The ``shar`` figure: the train manifest written as shards (``rnnt shard``), then the
    training loader's throughput from the files and from the shards, one after the other, with
    the same workers, batch bounds, speed perturbation and noise; and the share of the set one
    shard epoch (``ShardSampler.num_batches`` batches) draws."""
    start = time.perf_counter()
    written = write_shards(module.train_manifest, folder, shard_size=shard_size)
    write_seconds = time.perf_counter() - start

    def shard_sampler() -> ShardSampler:
        speed = RandomSpeed(module.speed_perturb, module.seed) if module.speed_perturb else None
        source = ShardSource(folder, seed=module.seed, speed=speed)
        return make_shard_sampler(
            source,
            max_duration=module.max_batch_duration,
            max_cuts=module.batch_size,
            num_buckets=module.num_buckets,
            max_lattice_cells=MAX_BATCH_LATTICE_CELLS,
            seed=module.seed,
        )

    sampler = shard_sampler()
    drawn = sum(len(batch) for batch in sampler)  # one epoch: reads the tars, decodes nothing
    noise = None
    if module.noise_path is not None and module.noise_probability > 0:
        noise_source = NoiseSource(module.noise_path, SAMPLE_RATE)
        noise = BackgroundNoise(noise_source, module.noise_probability, module.snr_range_db)
    loader = SkippingDataLoader(
        TransducerDataset(module.tokenizer, noise=noise),
        sampler=shard_sampler(),
        batch_size=None,
        num_workers=module.num_workers,
        persistent_workers=module.num_workers > 0,
        worker_init_fn=ignore_stop_signals,
    )
    files = measure_throughput(module, batches)
    shards = measure_throughput(module, batches, loader)
    return {
        "shard_size": shard_size,
        "shards": written.num_shards,
        "shard_bytes": written.shard_bytes,
        "source_bytes": written.source_bytes,
        "write_seconds": round(write_seconds, 2),
        "write_realtime_factor": round(written.duration / write_seconds, 1),
        "epoch_batches": sampler.num_batches,
        "epoch_cuts_drawn_per_cut": round(drawn / written.num_cuts, 3),
        "files_realtime_factor_per_worker": files["realtime_factor_per_worker"],
        "shards_realtime_factor_per_worker": shards["realtime_factor_per_worker"],
        "shards_over_files": round(
            shards["realtime_factor_per_worker"] / files["realtime_factor_per_worker"], 3
        ),
        "files": files,
        "from_shards": shards,
    }


def make_big_manifest(folder: Path, lines: int, seed: int = SEED) -> tuple[Path, Path, Path]:
    """A ``lines``-line manifest whose utterances share ``STARTUP_FILES`` real files (2-9 s
    of noise), a 50-line validation manifest of the same files, and a tokenizer for them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for index in range(STARTUP_FILES):
        seconds = 2 + index
        path = folder / f"{index}.flac"
        soundfile.write(path, 0.1 * rng.standard_normal(seconds * SAMPLE_RATE), SAMPLE_RATE)
        files.append((path.name, seconds))
    texts = [" ".join(rng.choice(TONE_WORDS, size=int(rng.integers(3, 9)))) for _ in range(997)]
    big, small = folder / "train.jsonl", folder / "val.jsonl"
    with open(big, "w", encoding="utf-8") as handle:
        for index in range(lines):
            name, seconds = files[index % len(files)]
            text = texts[index % len(texts)]
            handle.write(json.dumps({"audio_filepath": name, "duration": seconds, "text": text}))
            handle.write("\n")
    with open(big, encoding="utf-8") as handle:
        small.write_text("".join(itertools.islice(handle, len(texts))))
    tokenizer = train_tokenizer([small], folder / "tokenizer.model", BENCH_VOCAB_SIZE)
    return big, small, tokenizer


def _first_batch_child(start: float, train: str, val: str, tokenizer: str, workers: int) -> None:
    # Runs in a fresh interpreter whose clock ``start`` was read before any import.
    module = TransducerDataModule(
        train_manifest=train,
        val_manifest=val,
        tokenizer_path=tokenizer,
        noise_path=None,
        num_workers=workers,
    )
    module.setup("fit")
    setup = time.perf_counter() - start
    batch = next(iter(module.train_dataloader()))
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    print(json.dumps({"seconds": seconds, "setup": setup, "rss": rss, "cuts": len(batch["ids"])}))


def measure_startup(folder: Path, lines: int, workers: int) -> dict:
    """The ``startup`` figure: a fresh process opens a ``lines``-line manifest (read lazily:
    no audio header is read) and gets its first training batch; wall time from before the
    project's imports, and the process's peak resident memory."""
    start = time.perf_counter()
    train, val, tokenizer = make_big_manifest(folder, lines)
    write_seconds = time.perf_counter() - start
    code = (
        "import time; start = time.perf_counter(); import sys; sys.path.insert(0, sys.argv[1]); "
        "from data import _first_batch_child; "
        "_first_batch_child(start, *sys.argv[2:5], int(sys.argv[5]))"
    )
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).parent),
            str(train),
            str(val),
            str(tokenizer),
            str(workers),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "lines": lines,
        "manifest_bytes": train.stat().st_size,
        "manifest_write_seconds": round(write_seconds, 1),
        "num_workers": workers,
        "seconds_to_setup": round(figures["setup"], 2),
        "seconds_to_first_batch": round(figures["seconds"], 2),
        "peak_rss_gb": round(figures["rss"] / 2**30, 3),
        "target_seconds": STARTUP_TARGET_SECONDS,
        "target_rss_gb": STARTUP_TARGET_RSS_GB,
        "ok": figures["seconds"] <= STARTUP_TARGET_SECONDS
        and figures["rss"] / 2**30 <= STARTUP_TARGET_RSS_GB,
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
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="shar figure's shards")
    parser.add_argument(
        "--startup-lines", type=int, default=STARTUP_LINES, help="startup figure's manifest (0: no)"
    )
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
        stats = module.setup_stats["train"]
        result = {
            "corpus": (
                f"synthetic tones x{args.tones} at {args.tone_rate} Hz"
                if args.tones
                else str(args.corpus)
            ),
            "utterances": stats.kept,
            "hours": round(stats.kept_duration / 3600, 3),
            "max_batch_duration": args.max_batch_duration,
            "batch_size": args.batch_size,
            "noise": module.noise_path is not None,
            "speed_perturb": module.speed_perturb,
            "padding": measure_padding(module),
            "throughput": measure_throughput(module, args.batches),
            "shar": measure_shar(module, Path(scratch) / "shards", args.shard_size, args.batches),
        }
        if args.startup_lines:
            result["startup"] = measure_startup(
                Path(scratch) / "startup", args.startup_lines, args.num_workers
            )
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
        shar = result["shar"]
        print(
            f"shar: {shar['shards']} shards of {shar['shard_size']} written at "
            f"{shar['write_realtime_factor']:.0f}x real time, {shar['shard_bytes'] / 1e6:.1f} MB "
            f"(files {shar['source_bytes'] / 1e6:.1f} MB); loader "
            f"{shar['shards_realtime_factor_per_worker']:.0f}x real time per worker from shards, "
            f"{shar['files_realtime_factor_per_worker']:.0f}x from files, side by side; an epoch "
            f"of {shar['epoch_batches']} batches draws {shar['epoch_cuts_drawn_per_cut']:.2f} x "
            "the set's cuts"
        )
        if "startup" in result:
            startup = result["startup"]
            print(
                f"startup: a {startup['lines']}-line manifest gives its first batch "
                f"{startup['seconds_to_first_batch']:.1f} s after the process starts (setup "
                f"{startup['seconds_to_setup']:.1f} s), peak memory {startup['peak_rss_gb']:.2f} "
                f"GB; target <= {STARTUP_TARGET_SECONDS:.0f} s and "
                f"{STARTUP_TARGET_RSS_GB:.0f} GB"
            )
    return result


if __name__ == "__main__":
    main()
