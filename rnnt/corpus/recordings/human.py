"""Human recordings as demo-corpus utterances: extra training data and the test_human split.

``human_utterances(sources, seed, out_dir, split)`` writes 16 kHz mono 16-bit FLAC files to
``out_dir/audio/<split>/human-<source>-<index>.flac`` and returns their NeMo manifest records:
``audio_filepath, duration, text, id`` plus ``engine`` ("human"), ``voice`` ("source:speaker"),
``source`` and ``category``.

- ``split="train"``: every verified clip of the training sources (``RECORDINGS_TRAIN_SOURCES``),
  trimmed, resampled, given a random peak level and silence margins like the synthesized speech.
- ``split="test_human"``: sentences composed from the word clips of the test sources
  (``RECORDINGS_TEST_SOURCES``, ``rnnt/corpus/recordings/compose.py``): grammar sentences the
  clips can say, and (``RECORDINGS_TEST_BARE_FRACTION``) bare digit strings and clock times.

A source that is not installed is skipped with its reason (logged; ``survey`` lists them all).
The test_human speakers must never be heard in training: a source is in one list only (checked
on every call), speakers are named per source, and ``check_disjoint_voices`` checks the records
of the two splits. A new source is one module with ``NAME``, ``PACKAGE``, ``LICENCE``,
``DEFAULT_ROOT``, ``missing(root)`` and ``find(root)``, plus its line in ``SOURCES``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

from rnnt.constants import (
    DEMO_PEAK_DBFS_RANGE,
    DEMO_SILENCE_MARGIN_S,
    RECORDINGS_TEST_BARE_FRACTION,
    RECORDINGS_TEST_SOURCES,
    RECORDINGS_TEST_UTTERANCES,
    RECORDINGS_TRAIN_SOURCES,
    SAMPLE_RATE,
)
from rnnt.corpus.recordings import asterisk, audio, klettres, ktuberling, warzone2100
from rnnt.corpus.recordings.compose import Composed, compose, join, slot_sentence
from rnnt.corpus.recordings.record import Found, Recording
from rnnt.corpus.render import write_flac

logger = logging.getLogger(__name__)

SOURCES: dict[str, ModuleType] = {
    module.NAME: module for module in (asterisk, warzone2100, ktuberling, klettres)
}
TRAIN_SPLIT = "train"
TEST_SPLIT = "test_human"
ENGINE = "human"
_SPLIT_KEYS = {TRAIN_SPLIT: 1, TEST_SPLIT: 2}  # seeds each split's draws apart


def check_sources(
    train_sources: Collection[str] = RECORDINGS_TRAIN_SOURCES,
    test_sources: Collection[str] = RECORDINGS_TEST_SOURCES,
) -> None:
    """Raise ValueError for an unknown source, or one that is both for training and for test."""
    unknown = sorted((set(train_sources) | set(test_sources)) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown recording sources {unknown}; known: {sorted(SOURCES)}")
    shared = sorted(set(train_sources) & set(test_sources))
    if shared:
        raise ValueError(
            f"recording sources {shared} are in both RECORDINGS_TRAIN_SOURCES and "
            "RECORDINGS_TEST_SOURCES: test_human speakers must never be heard in training"
        )


def check_disjoint_voices(train_records: Iterable[dict], test_records: Iterable[dict]) -> None:
    """Raise ValueError when a test_human voice ("source:speaker") is in the training records."""
    shared = sorted({r["voice"] for r in train_records} & {r["voice"] for r in test_records})
    if shared:
        raise ValueError(f"test_human voices {shared} are also in the training split")


def find_sources(
    names: Iterable[str], roots: Mapping[str, str | Path] | None = None
) -> dict[str, Found | str]:
    """Each source's verified recordings, or the reason it cannot be used (a string).

    ``roots`` overrides a source's ``DEFAULT_ROOT`` (tests; other install locations).
    """
    check_sources()
    results: dict[str, Found | str] = {}
    for name in names:
        if name not in SOURCES:
            raise ValueError(f"unknown recording source {name!r}; known: {sorted(SOURCES)}")
        module = SOURCES[name]
        root = (roots or {}).get(name, module.DEFAULT_ROOT)
        reason = module.missing(root)
        results[name] = reason if reason is not None else module.find(root)
    return results


def survey(
    names: Iterable[str] = tuple(SOURCES), roots: Mapping[str, str | Path] | None = None
) -> dict[str, dict]:
    """What each source gives here: for ``rnnt demo-data`` to list, and for ``corpus.json``.

    Per source: ``missing`` (the reason), or ``recordings``, ``speakers``, ``skipped`` (count
    per reason), and always ``package`` and ``licence``.
    """
    summary: dict[str, dict] = {}
    for name, result in find_sources(names, roots).items():
        module = SOURCES[name]
        entry: dict = {"package": module.PACKAGE, "licence": module.LICENCE}
        if isinstance(result, str):
            entry["missing"] = result
        else:
            entry["recordings"] = len(result)
            entry["speakers"] = sorted({recording.speaker for recording in result})
            entry["skipped"] = result.skip_counts()
        summary[name] = entry
    return summary


def human_utterances(
    sources: Iterable[str],
    seed: int,
    out_dir: str | Path,
    split: str,
    *,
    count: int = RECORDINGS_TEST_UTTERANCES,
    avoid: Collection[str] = (),
    roots: Mapping[str, str | Path] | None = None,
) -> list[dict]:
    """Render the recordings of ``sources`` for ``split`` ("train" or "test_human").

    ``count`` is the number of test_human sentences (per test source; fewer if the clips cannot
    say that many), ``avoid`` sentences they must not be (the synthesized splits'). Everything
    is a function of ``seed`` and the installed packages. Returns the manifest records, in
    order; stale ``human-*.flac`` files of an earlier run in the split's folder are removed.

    Raises:
        ValueError: an unknown split or source, or a source not listed for ``split``.
    """
    if split not in _SPLIT_KEYS:
        raise ValueError(f"split must be {TRAIN_SPLIT!r} or {TEST_SPLIT!r}, got {split!r}")
    names = list(sources)
    allowed, constant = (
        (RECORDINGS_TRAIN_SOURCES, "RECORDINGS_TRAIN_SOURCES")
        if split == TRAIN_SPLIT
        else (RECORDINGS_TEST_SOURCES, "RECORDINGS_TEST_SOURCES")
    )
    wrong = [name for name in names if name not in allowed]
    if wrong:
        raise ValueError(f"recording sources {wrong} are not {split} sources ({constant})")
    folder = Path(out_dir).absolute() / "audio" / split
    records: list[dict] = []
    for name, result in find_sources(names, roots).items():
        if isinstance(result, str):
            logger.warning("recordings: %s skipped: %s", name, result)
            continue
        logger.info(
            "recordings: %s: %d verified clips, skipped %s", name, len(result), result.skip_counts()
        )
        if split == TRAIN_SPLIT:
            records += _render_clips(result, seed, folder, len(records))
        else:
            records += _render_composed(result, seed, folder, len(records), count, avoid)
    _remove_stale(folder, {Path(record["audio_filepath"]).name for record in records})
    return records


def _render_clips(recordings: list[Recording], seed: int, folder: Path, first: int) -> list[dict]:
    records = []
    for index, recording in enumerate(recordings, start=first):
        rng = np.random.default_rng((seed, _SPLIT_KEYS[TRAIN_SPLIT], index))
        speech = audio.speech(recording)
        if speech.size == 0:
            logger.warning("recordings: %s is silent, skipped", recording.where)
            continue
        utterance = Composed(recording.text, (recording,), recording.category)
        records.append(_write(folder, TRAIN_SPLIT, index, utterance, speech, rng))
    return records


def _render_composed(
    recordings: list[Recording],
    seed: int,
    folder: Path,
    first: int,
    count: int,
    avoid: Collection[str],
) -> list[dict]:
    rng = random.Random(seed)
    bare = round(count * RECORDINGS_TEST_BARE_FRACTION)
    sentences = compose(recordings, rng, count - bare, avoid=avoid)
    taken = set(avoid) | {sentence.text for sentence in sentences}
    sentences += compose(recordings, rng, bare, avoid=taken, sentences=slot_sentence)
    pieces: dict[Recording, np.ndarray] = {}  # each clip read and resampled once
    records = []
    for index, sentence in enumerate(sentences, start=first):
        draw = np.random.default_rng((seed, _SPLIT_KEYS[TEST_SPLIT], index))
        for clip in sentence.clips:
            if clip not in pieces:
                pieces[clip] = audio.speech(clip)
        speech = join([pieces[clip] for clip in sentence.clips], draw)
        records.append(_write(folder, TEST_SPLIT, index, sentence, speech, draw))
    return records


def _write(
    folder: Path,
    split: str,
    index: int,
    utterance: Composed,
    speech: np.ndarray,
    rng: np.random.Generator,
) -> dict:
    """Level ``speech (S,)`` to a random peak, add silence margins, write it; its record."""
    peak = np.abs(speech).max()
    level = 10.0 ** (rng.uniform(*DEMO_PEAK_DBFS_RANGE) / 20.0) / peak if peak > 0 else 1.0
    lead, trail = (round(rng.uniform(*DEMO_SILENCE_MARGIN_S) * SAMPLE_RATE) for _ in range(2))
    samples = np.concatenate([np.zeros(lead), speech * level, np.zeros(trail)])
    speaker = utterance.clips[0]  # one source and speaker per utterance
    path = folder / f"human-{speaker.source}-{index:05d}.flac"
    write_flac(str(path), samples)
    return {
        "audio_filepath": str(path),
        "duration": len(samples) / SAMPLE_RATE,
        "text": utterance.text,
        "id": f"{split}-{speaker.source}-{index:05d}",
        "engine": ENGINE,
        "voice": speaker.voice,
        "source": speaker.source,
        "category": utterance.category,
    }


def _remove_stale(folder: Path, keep: set[str]) -> None:
    for path in folder.glob("human-*.flac"):
        if path.name not in keep:
            path.unlink()
