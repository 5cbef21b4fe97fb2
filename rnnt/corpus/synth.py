"""The synthesized demo corpus: English speech from eSpeak NG, made locally in minutes.

``synthesize_demo_corpus(out_dir)`` writes::

    out_dir/train.jsonl, val.jsonl, test.jsonl   NeMo-style manifests (paths relative)
    out_dir/audio/{train,val,test}/*.flac         16 kHz mono 16-bit FLAC, one utterance each
    out_dir/noise/*.flac                          background noise for augmentation
    out_dir/corpus.json                           what was made, from which settings

Sentences come from the built-in grammar (``rnnt/corpus/grammar.py``: numbers, digit strings,
times, dates, commands, questions; lower-case words and apostrophes only), drawn at random and
deduplicated so that no sentence is in two splits. Each utterance gets an eSpeak NG voice
(``accent+variant``, e.g. "en-us+m3"), a random speaking rate, pitch, intonation range and word
gap, is trimmed of eSpeak's silence, resampled from 22.05 to 16 kHz, given a short random
silence margin at each end and a random peak level. Half the test utterances use voice variants
(and some accents) never heard in training: see ``DEMO_HELDOUT_*`` in ``rnnt/constants.py``.
Manifest lines carry ``id``, ``voice``, ``category`` and ``unseen_voice`` besides the required
fields.

The noise folder holds white, pink and brown noise, mains hum at 50 and 60 Hz with harmonics,
a fan (band-passed noise with a blade tone), babble (several talkers speaking sentences of no
split at once) and a cafe (babble over pink noise).

Everything is a function of ``seed``: the same seed gives byte-identical manifests and the same
audio, whatever ``num_workers`` (each utterance's settings are drawn from its own seed, and
eSpeak is reloaded per utterance, see ``rnnt/corpus/engines/espeak.py``).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from rnnt.constants import (
    DEMO_ACCENTS,
    DEMO_HELDOUT_ACCENTS,
    DEMO_HELDOUT_VARIANTS,
    DEMO_TEST_UTTERANCES,
    DEMO_TRAIN_HOURS,
    DEMO_VAL_UTTERANCES,
    DEMO_VARIANTS,
    SAMPLE_RATE,
    SEED,
)
from rnnt.corpus.engines import espeak
from rnnt.corpus.plan import (
    SPLITS,
    NoiseJob,
    SentenceStream,
    UtteranceJob,
    plan_noise,
    plan_utterance,
)
from rnnt.corpus.render import render_noise, render_utterance
from rnnt.corpus.voices import all_voice_names
from rnnt.data.manifest import write_manifest

logger = logging.getLogger(__name__)


def synthesize_demo_corpus(
    out_dir: str | os.PathLike,
    *,
    train_hours: float = DEMO_TRAIN_HOURS,
    val_utterances: int = DEMO_VAL_UTTERANCES,
    test_utterances: int = DEMO_TEST_UTTERANCES,
    seed: int = SEED,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Synthesize the demo corpus into ``out_dir`` (see the module docstring).

    Args:
        out_dir: output folder, created if needed; files of an earlier corpus there are replaced.
        train_hours: hours of training speech (the last utterance may go a few seconds over).
        val_utterances, test_utterances: utterances in the validation and test splits.
        seed: everything made is a function of it.
        num_workers: processes; ``None`` uses every core, ``<= 1`` works in this process.
            Workers are spawned, so a script that calls this with workers needs the usual
            ``if __name__ == "__main__":`` guard.
        progress: show tqdm progress bars.

    Returns:
        paths by name: ``train``, ``val``, ``test`` (manifests), ``audio`` and ``noise`` (folders).
        The manifests are written last, so their presence means the corpus is complete.
    """
    if train_hours <= 0 or val_utterances < 1 or test_utterances < 1:
        raise ValueError(
            f"need train_hours > 0 and at least one val and test utterance, got "
            f"train_hours={train_hours}, val_utterances={val_utterances}, "
            f"test_utterances={test_utterances}"
        )
    out = Path(out_dir).absolute()
    espeak.check_voices(all_voice_names())
    workers = (os.cpu_count() or 1) if num_workers is None else max(1, int(num_workers))
    started = time.perf_counter()
    sentences = SentenceStream(seed)
    # Test and val first: their sentences never depend on how many training utterances it takes.
    planned = {
        "test": [plan_utterance(out, "test", i, sentences, seed) for i in range(test_utterances)],
        "val": [plan_utterance(out, "val", i, sentences, seed) for i in range(val_utterances)],
    }
    with _Runner(workers) as runner:
        durations: dict[str, list[float]] = {}
        for split in ("val", "test"):
            durations[split] = list(
                runner.map(
                    render_utterance, planned[split], _bar(progress, split, len(planned[split]))
                )
            )
        planned["train"], durations["train"] = _render_train(
            out, train_hours * 3600.0, sentences, seed, runner, progress
        )
        noise_jobs = plan_noise(out, sentences, seed)
        noise_bar = _bar(progress, "noise", len(noise_jobs), unit="file")
        list(runner.map(render_noise, noise_jobs, noise_bar))
    audio_seconds = sum(sum(values) for values in durations.values())
    elapsed = time.perf_counter() - started
    _remove_stale(out, planned, noise_jobs)

    _write_info(out, seed, planned, durations, noise_jobs)
    paths: dict[str, Path] = {}
    for split in SPLITS:
        paths[split] = out / f"{split}.jsonl"
        records = [
            job.record(duration)
            for job, duration in zip(planned[split], durations[split], strict=True)
        ]
        write_manifest(paths[split], records)
    paths["audio"] = out / "audio"
    paths["noise"] = out / "noise"
    logger.info(
        "demo corpus in %s: %.2f h of speech (%s) in %.0f s with %d workers, %.0fx real time",
        out,
        audio_seconds / 3600,
        ", ".join(f"{split} {len(planned[split])}" for split in SPLITS),
        elapsed,
        workers,
        audio_seconds / max(elapsed, 1e-9),
    )
    return paths


def _render_train(
    out: Path,
    target_seconds: float,
    sentences: SentenceStream,
    seed: int,
    runner: _Runner,
    progress: bool,
) -> tuple[list[UtteranceJob], list[float]]:
    """Training utterances 0, 1, ... up to the first whose cumulative duration reaches target.

    Rendered in batches sized from an estimate; what a batch renders past the target is
    discarded, so the result does not depend on batch sizes or workers.
    """
    jobs: list[UtteranceJob] = []
    durations: list[float] = []
    bar = _bar(progress, "train", round(target_seconds), unit="s")
    total = 0.0
    while total < target_seconds:
        batch: list[UtteranceJob] = []
        estimate = 0.0
        # 5% spare so that one batch usually suffices. Batch sizes must not depend on the
        # number of workers: planning consumes sentences, which later jobs would notice.
        while estimate < (target_seconds - total) * 1.05:
            batch.append(plan_utterance(out, "train", len(jobs) + len(batch), sentences, seed))
            estimate += batch[-1].estimated_seconds()
        for job, duration in zip(batch, runner.map(render_utterance, batch), strict=True):
            if total >= target_seconds:
                Path(job.path).unlink(missing_ok=True)
                continue
            jobs.append(job)
            durations.append(duration)
            total += duration
            if bar is not None:
                bar.update(min(duration, target_seconds - bar.n))
    if bar is not None:
        bar.close()
    return jobs, durations


# --- running and bookkeeping --------------------------------------------------------------------


class _Runner:
    """Maps a function over jobs in order, in a process pool or (one worker) in this process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = None

    def __enter__(self) -> _Runner:
        if self.workers > 1:
            # spawn: workers start clean (no inherited eSpeak or thread state from the parent).
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._pool is not None:
            self._pool.terminate() if exc_info[0] else self._pool.close()
            self._pool.join()

    def map(self, function: Callable, jobs: Sequence, bar: tqdm | None = None) -> Iterator:
        results: Iterable = (
            map(function, jobs)
            if self._pool is None
            else self._pool.imap(
                function, jobs, chunksize=max(1, min(8, len(jobs) // (4 * self.workers)))
            )
        )
        for result in results:
            if bar is not None:
                bar.update(1)
            yield result
        if bar is not None:
            bar.close()


def _bar(progress: bool, split: str, total: int, unit: str = "utt") -> tqdm | None:
    if not progress:
        return None
    # Totals in seconds of audio are fractional: show them rounded.
    return tqdm(
        total=total,
        desc=f"demo {split}",
        unit=unit,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}, {rate_fmt}]",
    )


def _remove_stale(out: Path, planned: dict[str, list[UtteranceJob]], noise: list[NoiseJob]) -> None:
    """Delete files an earlier, different corpus left in our folders (only names we make)."""
    folders = {
        out / "audio" / split: (re.compile(rf"{split}-\d{{6}}\.flac"), planned[split])
        for split in SPLITS
    }
    folders[out / "noise"] = (re.compile(r"[a-z0-9]+-\d{2}\.flac"), noise)
    for folder, (pattern, jobs) in folders.items():
        keep = {Path(job.path).name for job in jobs}
        for path in folder.glob("*.flac"):
            if pattern.fullmatch(path.name) and path.name not in keep:
                path.unlink()


def _write_info(
    out: Path,
    seed: int,
    planned: dict[str, list[UtteranceJob]],
    durations: dict[str, list[float]],
    noise: list[NoiseJob],
) -> None:
    info = {
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "splits": {
            split: {
                "utterances": len(planned[split]),
                "hours": round(sum(durations[split]) / 3600, 4),
                "unseen_voice_utterances": sum(job.unseen_voice for job in planned[split]),
            }
            for split in SPLITS
        },
        "voices": {
            "accents": DEMO_ACCENTS,
            "variants": DEMO_VARIANTS,
            "test_only_accents": DEMO_HELDOUT_ACCENTS,
            "test_only_variants": DEMO_HELDOUT_VARIANTS,
        },
        "noise": [
            {"file": f"noise/{Path(job.path).name}", "kind": job.kind, "seconds": job.seconds}
            for job in noise
        ],
    }
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
