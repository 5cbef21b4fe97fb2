"""The synthesized demo corpus: English speech from eSpeak NG, made locally in minutes.

``synthesize_demo_corpus(out_dir)`` writes::

    out_dir/train.jsonl, val.jsonl, test.jsonl   NeMo-style manifests (paths relative)
    out_dir/audio/{train,val,test}/*.flac         16 kHz mono 16-bit FLAC, one utterance each
    out_dir/noise/*.flac                          background noise for augmentation
    out_dir/corpus.json                           what was made, from which settings

Sentences come from the built-in grammar (``rnnt/data/grammar.py``: numbers, digit strings,
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
eSpeak is reloaded per utterance, see ``rnnt/data/espeak.py``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from rnnt.constants import (
    DEMO_ACCENTS,
    DEMO_BABBLE_LOOP_S,
    DEMO_BABBLE_TALKERS,
    DEMO_HELDOUT_ACCENTS,
    DEMO_HELDOUT_VARIANTS,
    DEMO_INTONATION_RANGE,
    DEMO_NOISE_KINDS,
    DEMO_NOISE_PEAK_DBFS,
    DEMO_NOISE_SECONDS_RANGE,
    DEMO_PEAK_DBFS_RANGE,
    DEMO_PITCH_RANGE,
    DEMO_RATE_RANGE_WPM,
    DEMO_SILENCE_MARGIN_S,
    DEMO_TEST_HELDOUT_FRACTION,
    DEMO_TEST_UTTERANCES,
    DEMO_TRAIN_HOURS,
    DEMO_TRIM_THRESHOLD_DB,
    DEMO_VAL_UTTERANCES,
    DEMO_VARIANTS,
    DEMO_WORD_GAP_RANGE,
    SAMPLE_RATE,
    SEED,
)
from rnnt.data import espeak
from rnnt.data.grammar import generate_sentence, spoken_form
from rnnt.data.manifest import write_manifest
from rnnt.data.sound import coloured_noise, fan_noise, mains_hum, normalised_rms, resample

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NOISE_KINDS = ("white", "pink", "brown", "hum50", "hum60", "fan", "babble", "cafe")
_STREAMS = {"train": 0, "val": 1, "test": 2, "noise": 3}  # per-seed random streams
_MAX_DUPLICATE_DRAWS = 10_000  # consecutive repeats before the grammar counts as exhausted


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
    espeak.check_voices(_all_voice_names())
    workers = (os.cpu_count() or 1) if num_workers is None else max(1, int(num_workers))
    started = time.perf_counter()
    sentences = _SentenceStream(seed)
    # Test and val first: their sentences never depend on how many training utterances it takes.
    planned = {
        "test": [_plan_utterance(out, "test", i, sentences, seed) for i in range(test_utterances)],
        "val": [_plan_utterance(out, "val", i, sentences, seed) for i in range(val_utterances)],
    }
    with _Runner(workers) as runner:
        durations: dict[str, list[float]] = {}
        for split in ("val", "test"):
            durations[split] = list(
                runner.map(
                    _render_utterance, planned[split], _bar(progress, split, len(planned[split]))
                )
            )
        planned["train"], durations["train"] = _render_train(
            out, train_hours * 3600.0, sentences, seed, runner, progress
        )
        noise_jobs = _plan_noise(out, sentences, seed)
        noise_bar = _bar(progress, "noise", len(noise_jobs), unit="file")
        list(runner.map(_render_noise, noise_jobs, noise_bar))
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


# --- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _UtteranceJob:
    """Everything one utterance needs: a worker renders it from this alone."""

    split: str
    index: int
    text: str
    category: str
    voice: espeak.Voice
    espeak_seed: int
    margins_s: tuple[float, float]
    peak_dbfs: float
    unseen_voice: bool
    path: str

    @property
    def utterance_id(self) -> str:
        return f"{self.split}-{self.index:06d}"

    def record(self, duration: float) -> dict:
        return {
            "audio_filepath": self.path,
            "duration": duration,
            "text": self.text,
            "id": self.utterance_id,
            "voice": self.voice.name,
            "category": self.category,
            "unseen_voice": self.unseen_voice,
        }

    def estimated_seconds(self) -> float:
        # Only sizes the next batch of training utterances; exact durations come from audio.
        words = len(self.text.split())
        return words * 60.0 / self.voice.rate_wpm + sum(self.margins_s)


@dataclass(frozen=True)
class _NoiseJob:
    kind: str
    index: int
    seconds: float
    seed: int
    path: str
    babble: tuple[tuple[tuple[str, espeak.Voice, int], ...], ...] = ()  # per talker: sentences


class _SentenceStream:
    """Sentences from the grammar in a seeded order, each at most once across all splits."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._used: set[str] = set()

    def next(self):
        for _ in range(_MAX_DUPLICATE_DRAWS):
            sentence = generate_sentence(self._rng)
            if sentence.text not in self._used:
                self._used.add(sentence.text)
                return sentence
        raise RuntimeError(
            f"the grammar produced {_MAX_DUPLICATE_DRAWS} repeats in a row after "
            f"{len(self._used)} distinct sentences; ask for a smaller corpus or extend "
            "rnnt/data/grammar.py"
        )


def _all_voice_names() -> list[str]:
    accents = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS]
    variants = [*DEMO_VARIANTS, *DEMO_HELDOUT_VARIANTS]
    return [*accents, *(f"{DEMO_ACCENTS[0]}+{variant}" for variant in variants)]


def _is_heldout(index: int) -> bool:
    # Spreads held-out voices evenly: utterance i is held out when i*f crosses an integer.
    fraction = DEMO_TEST_HELDOUT_FRACTION
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def _draw_voice(rng: np.random.Generator, heldout: bool, any_voice: bool = False) -> espeak.Voice:
    if heldout:
        accents, variants = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS], DEMO_HELDOUT_VARIANTS
    elif any_voice:
        accents = [*DEMO_ACCENTS, *DEMO_HELDOUT_ACCENTS]
        variants = [*DEMO_VARIANTS, *DEMO_HELDOUT_VARIANTS]
    else:
        accents, variants = DEMO_ACCENTS, DEMO_VARIANTS
    accent = accents[rng.integers(len(accents))]
    variant = variants[rng.integers(len(variants))]
    return espeak.Voice(
        name=f"{accent}+{variant}",
        rate_wpm=int(rng.integers(DEMO_RATE_RANGE_WPM[0], DEMO_RATE_RANGE_WPM[1] + 1)),
        pitch=int(rng.integers(DEMO_PITCH_RANGE[0], DEMO_PITCH_RANGE[1] + 1)),
        intonation=int(rng.integers(DEMO_INTONATION_RANGE[0], DEMO_INTONATION_RANGE[1] + 1)),
        word_gap=int(rng.integers(DEMO_WORD_GAP_RANGE[0], DEMO_WORD_GAP_RANGE[1] + 1)),
    )


def _plan_utterance(
    out: Path, split: str, index: int, sentences: _SentenceStream, seed: int
) -> _UtteranceJob:
    sentence = sentences.next()
    rng = np.random.default_rng([seed, _STREAMS[split], index])
    unseen = split == "test" and _is_heldout(index)
    voice = _draw_voice(rng, heldout=unseen)
    margins = tuple(float(m) for m in rng.uniform(*DEMO_SILENCE_MARGIN_S, size=2))
    return _UtteranceJob(
        split=split,
        index=index,
        text=sentence.text,
        category=sentence.category,
        voice=voice,
        espeak_seed=int(rng.integers(2**31 - 1)),
        margins_s=margins,
        peak_dbfs=float(rng.uniform(*DEMO_PEAK_DBFS_RANGE)),
        unseen_voice=unseen,
        path=str(out / "audio" / split / f"{split}-{index:06d}.flac"),
    )


def _render_train(
    out: Path,
    target_seconds: float,
    sentences: _SentenceStream,
    seed: int,
    runner: _Runner,
    progress: bool,
) -> tuple[list[_UtteranceJob], list[float]]:
    """Training utterances 0, 1, ... up to the first whose cumulative duration reaches target.

    Rendered in batches sized from an estimate; what a batch renders past the target is
    discarded, so the result does not depend on batch sizes or workers.
    """
    jobs: list[_UtteranceJob] = []
    durations: list[float] = []
    bar = _bar(progress, "train", round(target_seconds), unit="s")
    total = 0.0
    while total < target_seconds:
        batch: list[_UtteranceJob] = []
        estimate = 0.0
        # 5% spare so that one batch usually suffices. Batch sizes must not depend on the
        # number of workers: planning consumes sentences, which later jobs would notice.
        while estimate < (target_seconds - total) * 1.05:
            batch.append(_plan_utterance(out, "train", len(jobs) + len(batch), sentences, seed))
            estimate += batch[-1].estimated_seconds()
        for job, duration in zip(batch, runner.map(_render_utterance, batch), strict=True):
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


def _plan_noise(out: Path, sentences: _SentenceStream, seed: int) -> list[_NoiseJob]:
    unknown = sorted(set(DEMO_NOISE_KINDS) - set(NOISE_KINDS))
    if unknown:
        raise ValueError(f"unknown noise kinds {unknown} in DEMO_NOISE_KINDS; known: {NOISE_KINDS}")
    jobs = []
    for index, kind in enumerate(DEMO_NOISE_KINDS):
        rng = np.random.default_rng([seed, _STREAMS["noise"], index])
        seconds = round(float(rng.uniform(*DEMO_NOISE_SECONDS_RANGE)), 2)
        babble: list[tuple[tuple[str, espeak.Voice, int], ...]] = []
        if kind in ("babble", "cafe"):
            for _ in range(DEMO_BABBLE_TALKERS):
                talker, spoken = [], 0.0
                # A few seconds per talker, looped: overlapped talkers hide the repetition.
                while spoken < min(seconds, DEMO_BABBLE_LOOP_S):
                    sentence = sentences.next()
                    voice = _draw_voice(rng, heldout=False, any_voice=True)
                    talker.append((spoken_form(sentence.text), voice, int(rng.integers(2**31 - 1))))
                    spoken += len(sentence.text.split()) * 60.0 / DEMO_RATE_RANGE_WPM[1]
                babble.append(tuple(talker))
        jobs.append(
            _NoiseJob(
                kind=kind,
                index=index,
                seconds=seconds,
                seed=int(rng.integers(2**31 - 1)),
                path=str(out / "noise" / f"{kind}-{index:02d}.flac"),
                babble=tuple(babble),
            )
        )
    return jobs


# --- rendering (runs in worker processes) -------------------------------------------------------


def _render_utterance(job: _UtteranceJob) -> float:
    """Synthesize, trim, resample, level and write one utterance; its duration in seconds."""
    speech = _speak(spoken_form(job.text), job.voice, job.espeak_seed)
    if speech.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {job.text!r} with {job.voice}")
    speech *= 10.0 ** (job.peak_dbfs / 20.0) / np.abs(speech).max()
    lead, trail = (round(margin * SAMPLE_RATE) for margin in job.margins_s)
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    _write_flac(job.path, audio)
    return len(audio) / SAMPLE_RATE


def _speak(text: str, voice: espeak.Voice, seed: int) -> np.ndarray:
    """eSpeak's audio for ``text`` without leading/trailing silence, float32 at SAMPLE_RATE."""
    samples, rate = espeak.synthesize(text, voice, seed)
    if samples.size == 0:
        return np.zeros(0, dtype=np.float32)
    magnitude = np.abs(samples.astype(np.int32))
    if magnitude.max() == 0:
        return np.zeros(0, dtype=np.float32)
    voiced = np.flatnonzero(magnitude > magnitude.max() * 10.0 ** (DEMO_TRIM_THRESHOLD_DB / 20.0))
    trimmed = samples[voiced[0] : voiced[-1] + 1].astype(np.float32) / 32768.0
    return resample(trimmed, rate, SAMPLE_RATE)


def _render_noise(job: _NoiseJob) -> None:
    rng = np.random.default_rng(job.seed)
    length = round(job.seconds * SAMPLE_RATE)
    makers: dict[str, Callable[[], np.ndarray]] = {
        "white": lambda: rng.standard_normal(length),
        "pink": lambda: coloured_noise(rng, length, exponent=1.0),
        "brown": lambda: coloured_noise(rng, length, exponent=2.0),
        "hum50": lambda: mains_hum(rng, length, 50.0),
        "hum60": lambda: mains_hum(rng, length, 60.0),
        "fan": lambda: fan_noise(rng, length),
        "babble": lambda: _babble(rng, length, job.babble),
        "cafe": lambda: (
            normalised_rms(_babble(rng, length, job.babble))
            + 0.5 * normalised_rms(coloured_noise(rng, length, exponent=1.0))
        ),
    }
    noise = makers[job.kind]()
    noise *= 10.0 ** (DEMO_NOISE_PEAK_DBFS / 20.0) / max(np.abs(noise).max(), 1e-12)
    _write_flac(job.path, noise)


def _babble(
    rng: np.random.Generator,
    length: int,
    talkers: Sequence[Sequence[tuple[str, espeak.Voice, int]]],
) -> np.ndarray:
    """Several talkers at once, each a run of sentences with short pauses, looped to ``length``."""
    mixture = np.zeros(length)
    for talker in talkers:
        pieces = []
        for text, voice, seed in talker:
            speech = _speak(text, voice, seed)
            if speech.size == 0:
                continue
            pieces += [
                normalised_rms(speech),
                np.zeros(round(rng.uniform(0.05, 0.4) * SAMPLE_RATE)),
            ]
        speech = np.resize(np.concatenate(pieces), length)  # loops if short
        mixture += rng.uniform(0.5, 1.0) * np.roll(speech, int(rng.integers(length)))
    return mixture


def _write_flac(path: str, audio: np.ndarray) -> None:
    # Encoded in memory and written at once: libsndfile's many small writes and seeks on a
    # file cost more than the encoding itself.
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(buffer.getvalue())


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


def _remove_stale(
    out: Path, planned: dict[str, list[_UtteranceJob]], noise: list[_NoiseJob]
) -> None:
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
    planned: dict[str, list[_UtteranceJob]],
    durations: dict[str, list[float]],
    noise: list[_NoiseJob],
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
