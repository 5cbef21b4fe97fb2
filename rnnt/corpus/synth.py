"""The synthesized demo corpus: English speech from several speech engines, made locally in minutes.

``synthesize_demo_corpus(out_dir)`` writes::

    out_dir/train.jsonl, val.jsonl, test.jsonl   NeMo-style manifests (paths relative)
    out_dir/test_unseen_engine.jsonl              or test_unseen_voice.jsonl: the held-out split
    out_dir/audio/<split>/*.flac                  16 kHz mono 16-bit FLAC, one utterance each
    out_dir/noise/*.flac                          background noise for augmentation
    out_dir/corpus.json                           what was made, from which settings and engines

Sentences come from the built-in grammar (``rnnt/corpus/grammar.py``: numbers, digit strings,
times, dates, commands, questions; lower-case words and apostrophes only), drawn at random and
deduplicated so that no sentence is in two splits. Each utterance gets an engine and a voice
(``rnnt/corpus/voices.py``: eSpeak NG always, Piper, Flite and Festival where installed) with
random speaking settings, is trimmed of the engine's silence, resampled to 16 kHz, given a short
random silence margin at each end and a random peak level. Half the eSpeak test utterances use
voices never heard in training; the held-out split is spoken by an engine training never heard
(``test_unseen_engine``) or, where no engine can be held out, by eSpeak voices never heard
(``test_unseen_voice``). Manifest lines carry ``id``, ``engine``, ``voice``, ``category`` and
``unseen_voice`` besides the required fields.

The noise folder holds white, pink and brown noise, mains hum at 50 and 60 Hz with harmonics,
a fan (band-passed noise with a blade tone), babble (several eSpeak talkers speaking sentences
of no split at once) and a cafe (babble over pink noise).

Everything is a function of ``seed`` and of the engines installed: the same seed gives
byte-identical manifests and the same audio, whatever ``num_workers`` (each utterance's settings
are drawn from its own seed, and every engine's output depends only on its arguments).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from rnnt.constants import (
    DEMO_HUMAN_TRAINING,
    DEMO_TEST_UTTERANCES,
    DEMO_TRAIN_HOURS,
    DEMO_UNSEEN_UTTERANCES,
    DEMO_VAL_UTTERANCES,
    RECORDINGS_TEST_SOURCES,
    RECORDINGS_TRAIN_SOURCES,
    SAMPLE_RATE,
    SEED,
)
from rnnt.corpus.engines import ENGINES, engine, espeak
from rnnt.corpus.plan import (
    HUMAN_SPLIT,
    SPLITS,
    NoiseJob,
    SentenceStream,
    UtteranceJob,
    plan_noise,
    plan_utterance,
)
from rnnt.corpus.render import render_noise, render_utterance
from rnnt.corpus.voices import (
    UNSEEN_ENGINE_SPLIT,
    UNSEEN_VOICE_SPLIT,
    Cast,
    all_espeak_voice_names,
    cast_voices,
)
from rnnt.data.manifest import write_manifest

logger = logging.getLogger(__name__)


def synthesize_demo_corpus(
    out_dir: str | os.PathLike,
    *,
    train_hours: float = DEMO_TRAIN_HOURS,
    val_utterances: int = DEMO_VAL_UTTERANCES,
    test_utterances: int = DEMO_TEST_UTTERANCES,
    unseen_utterances: int = DEMO_UNSEEN_UTTERANCES,
    engines: Sequence[str] = ENGINES,
    recordings: bool | None = None,
    human_training: bool = DEMO_HUMAN_TRAINING,
    seed: int = SEED,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Synthesize the demo corpus into ``out_dir`` (see the module docstring).

    Args:
        out_dir: output folder, created if needed; files of an earlier corpus there are replaced.
        train_hours: hours of training speech (the last utterance may go a few seconds over).
        val_utterances, test_utterances: utterances in the validation and test splits.
        unseen_utterances: utterances in the held-out split (``test_unseen_engine`` or
            ``test_unseen_voice``, see ``rnnt/corpus/voices.py``).
        engines: the speech engines to use where installed (``rnnt.corpus.engines.ENGINES``);
            what is missing is logged and recorded in ``corpus.json``.
        recordings: human recordings (``rnnt/corpus/recordings``): ``None`` adds those
            installed (training clips, and the ``test_human`` split), ``True`` the same but
            fails when none is installed, ``False`` none.
        human_training: add the training sources' clips (``RECORDINGS_TRAIN_SOURCES``) to the
            training split (``DEMO_HUMAN_TRAINING``); ``test_human`` is made either way.
        seed: everything made is a function of it (and of the engines installed).
        num_workers: processes; ``None`` uses every core, ``<= 1`` works in this process.
            Workers are spawned, so a script that calls this with workers needs the usual
            ``if __name__ == "__main__":`` guard.
        progress: show tqdm progress bars.

    Returns:
        paths by name: one manifest per split (``train``, ``val``, ``test`` and the held-out
        split), ``audio`` and ``noise`` (folders). The manifests are written last, so their
        presence means the corpus is complete.
    """
    if train_hours <= 0 or min(val_utterances, test_utterances, unseen_utterances) < 1:
        raise ValueError(
            f"need train_hours > 0 and at least one val, test and unseen utterance, got "
            f"train_hours={train_hours}, val_utterances={val_utterances}, "
            f"test_utterances={test_utterances}, unseen_utterances={unseen_utterances}"
        )
    out = Path(out_dir).absolute()
    cast = cast_voices(tuple(engines))
    _check_voices(cast)
    logger.info(
        "demo corpus engines: training %s; held-out split %s%s",
        ", ".join(cast.engines),
        cast.heldout_split,
        "".join(f"; skipped {name}: {reason}" for name, reason in cast.skipped.items()),
    )
    workers = (os.cpu_count() or 1) if num_workers is None else max(1, int(num_workers))
    started = time.perf_counter()
    sentences = SentenceStream(seed)
    # Test splits and val first: their sentences never depend on how much training it takes.
    counts = {"test": test_utterances, "val": val_utterances, cast.heldout_split: unseen_utterances}
    planned = {
        split: [plan_utterance(out, split, i, sentences, seed, cast) for i in range(count)]
        for split, count in counts.items()
    }
    human = _human_splits(
        out,
        seed,
        recordings,
        human_training,
        avoid=[job.text for jobs in planned.values() for job in jobs],
    )
    sentences.reserve([record["text"] for record in human.get(HUMAN_SPLIT, [])])
    with _Runner(workers) as runner:
        durations: dict[str, list[float]] = {}
        for split in counts:
            bar = _bar(progress, split, len(planned[split]))
            durations[split] = list(runner.map(render_utterance, planned[split], bar))
        planned["train"], durations["train"] = _render_train(
            out, train_hours * 3600.0, sentences, seed, cast, runner, progress
        )
        noise_jobs = plan_noise(out, sentences, seed)
        noise_bar = _bar(progress, "noise", len(noise_jobs), unit="file")
        list(runner.map(render_noise, noise_jobs, noise_bar))
    elapsed = time.perf_counter() - started
    _remove_stale(out, planned, noise_jobs)

    manifests = {
        split: [job.record(duration) for job, duration in zip(jobs, durations[split], strict=True)]
        for split, jobs in planned.items()
    }
    manifests["train"] += human.get("train", [])
    if human.get(HUMAN_SPLIT):
        manifests[HUMAN_SPLIT] = human[HUMAN_SPLIT]
    _write_info(out, seed, cast, manifests, noise_jobs, human.get("survey"))
    paths: dict[str, Path] = {}
    for split, records in manifests.items():
        paths[split] = out / f"{split}.jsonl"
        write_manifest(paths[split], records)
    if HUMAN_SPLIT not in paths:  # an earlier corpus's, made with recordings
        (out / f"{HUMAN_SPLIT}.jsonl").unlink(missing_ok=True)
    audio_seconds = sum(record["duration"] for records in manifests.values() for record in records)
    paths["audio"] = out / "audio"
    paths["noise"] = out / "noise"
    logger.info(
        "demo corpus in %s: %.2f h of speech (%s) in %.0f s with %d workers, %.0fx real time",
        out,
        audio_seconds / 3600,
        ", ".join(f"{split} {len(records)}" for split, records in manifests.items()),
        elapsed,
        workers,
        audio_seconds / max(elapsed, 1e-9),
    )
    return paths


def _check_voices(cast: Cast) -> None:
    """Every voice the cast names exists in its engine (``ValueError`` naming those that do not)."""
    espeak.check_voices(all_espeak_voice_names())
    for name, voices in cast.voices.items():
        engine(name).check_voices(list(voices))
    if cast.heldout_engine:
        engine(cast.heldout_engine).check_voices(list(cast.heldout_voices))


def _render_train(
    out: Path,
    target_seconds: float,
    sentences: SentenceStream,
    seed: int,
    cast: Cast,
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
            index = len(jobs) + len(batch)
            batch.append(plan_utterance(out, "train", index, sentences, seed, cast))
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
        out / "audio" / split: (re.compile(rf"{split}-\d{{6}}\.flac"), planned.get(split, []))
        for split in (*SPLITS, UNSEEN_ENGINE_SPLIT, UNSEEN_VOICE_SPLIT)
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
    cast: Cast,
    manifests: dict[str, list[dict]],
    noise: list[NoiseJob],
    recordings: dict | None,
) -> None:
    info = {
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "splits": {
            split: {
                "utterances": len(records),
                "hours": round(sum(record["duration"] for record in records) / 3600, 4),
                "unseen_voice_utterances": sum(bool(r.get("unseen_voice")) for r in records),
                "engines": dict(sorted(Counter(record["engine"] for record in records).items())),
            }
            for split, records in manifests.items()
        },
        "voices": cast.describe(),
        "recordings": recordings,
        "noise": [
            {"file": f"noise/{Path(job.path).name}", "kind": job.kind, "seconds": job.seconds}
            for job in noise
        ],
    }
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _human_splits(
    out: Path, seed: int, wanted: bool | None, training: bool, avoid: list[str]
) -> dict[str, list[dict]]:
    """Human recordings for ``train`` and ``test_human`` (see ``synthesize_demo_corpus``).

    Raises:
        RuntimeError: ``wanted`` is True and no recording source is installed.
    """
    if wanted is False:
        return {}
    from rnnt.corpus.recordings import human

    found = {
        split: human.human_utterances(sources, seed, out, split, avoid=avoid)
        for split, sources in (
            ("train", RECORDINGS_TRAIN_SOURCES if training else ()),
            (HUMAN_SPLIT, RECORDINGS_TEST_SOURCES),
        )
    }
    if wanted and not any(found.values()):
        missing = {name: info.get("missing") for name, info in human.survey().items()}
        raise RuntimeError(
            f"--with-recordings: no human recordings are installed ({missing}); run make voices"
        )
    human.check_disjoint_voices(found["train"], found[HUMAN_SPLIT])
    found["survey"] = human.survey()
    return found


def describe_sources(corpus_json: str | os.PathLike) -> str:
    """Lines saying which engines and recordings a corpus used and which it found missing."""
    info = json.loads(Path(corpus_json).read_text(encoding="utf-8"))
    voices = info["voices"]
    lines = [
        f"engines used for training: {', '.join(voices['training_engines'])}",
        f"held-out split: {voices['heldout_split']}"
        + (f" (engine {voices['heldout_engine']})" if voices["heldout_engine"] else ""),
    ]
    lines += [f"skipped engine {name}: {why}" for name, why in voices["skipped_engines"].items()]
    for name, source in (info.get("recordings") or {}).items():
        if "missing" in source:
            lines.append(f"skipped recordings {name}: {source['missing']}")
        else:
            lines.append(f"recordings {name}: {source['recordings']} clips ({source['licence']})")
    return "\n".join(lines)
