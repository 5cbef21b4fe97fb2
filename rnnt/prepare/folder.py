"""A folder of audio files with same-named transcripts: the common home-made layout.

::

    my_corpus/alice/0001.wav      my_corpus/alice/0001.txt     turn the lights off
    my_corpus/bob/day2/a.flac     my_corpus/bob/day2/a.lab     what time is it

Audio is ``.flac``, ``.wav``, ``.ogg`` or ``.mp3`` (any case) in the folder or below it; the
transcript is the ``.txt`` (else ``.lab``) file of the same name next to it, UTF-8 plain text
(its lines are joined with spaces). Files and folders whose names start with ``.`` are
ignored. Skipped, with their reason: audio without a transcript (``no_transcript``), a
transcript without audio (``missing_audio``: a stray README.txt shows up here too), a second
audio file of the same name (``duplicate_audio``; ``PREPARE_AUDIO_EXTENSIONS`` order decides).

The output is ``all.jsonl``; or, with ``dev_fraction``/``test_fraction``, ``train.jsonl``,
``dev.jsonl`` and ``test.jsonl``: each file goes to a split by a hash of its path relative to
the corpus folder, so the split is the same on every machine and every run, and a file added
later never moves one already held out into training (the sizes are near, not exactly, the
fractions). A speaker's files may land in different splits; keep speakers apart with folders
prepared separately when that matters.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from rnnt.constants import (
    PREPARE_AUDIO_EXTENSIONS,
    PREPARE_FOLDER_MANIFEST,
    PREPARE_TRANSCRIPT_EXTENSIONS,
)
from rnnt.data.manifest_stats import SKIP_INVALID, SKIP_MISSING_AUDIO
from rnnt.prepare.writer import (
    SKIP_DUPLICATE_AUDIO,
    SKIP_NO_TRANSCRIPT,
    Entry,
    PrepareError,
    Skipped,
    Split,
)

READER = "rnnt.prepare.folder"


def folder_splits(corpus_dir: Path, dev_fraction: float, test_fraction: float) -> list[Split]:
    """``all``, or ``train``/``dev``/``test`` split by path hash, of a folder corpus.

    ``dev_fraction`` and ``test_fraction`` are the expected shares held out, in [0, 1).

    Raises:
        PrepareError: no audio file at all, or a held-out split that got no utterance.
    """
    if not 0.0 <= dev_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
        raise PrepareError("--dev-fraction and --test-fraction must be in [0, 1)")
    if dev_fraction + test_fraction >= 1.0:
        raise PrepareError(
            f"--dev-fraction {dev_fraction:g} and --test-fraction {test_fraction:g} add up to 1 "
            "or more: nothing would be left to train on"
        )
    held_out = {"dev": dev_fraction, "test": test_fraction}
    names = ["train", *(name for name, share in held_out.items() if share > 0)]
    if len(names) == 1:
        names = [PREPARE_FOLDER_MANIFEST]
    items: dict[str, list[Entry | Skipped]] = {name: [] for name in names}
    for key, item in _scan(corpus_dir):
        items[_split_of(key, dev_fraction, test_fraction, names)].append(item)
    total = sum(isinstance(item, Entry) for entries in items.values() for item in entries)
    if not total:
        untranscribed = [
            item.where
            for entries in items.values()
            for item in entries
            if isinstance(item, Skipped) and item.reason == SKIP_NO_TRANSCRIPT
        ]
        found = "no audio file"
        if untranscribed:
            found = f"{len(untranscribed)} audio files, e.g. {untranscribed[0]}, but none"
        raise PrepareError(
            f"{corpus_dir}: {found} with a same-named "
            f".txt or .lab transcript beside it (audio: {', '.join(PREPARE_AUDIO_EXTENSIONS)}, "
            "in the folder or below it)"
        )
    for name, share in held_out.items():
        if name in items and not any(isinstance(item, Entry) for item in items[name]):
            raise PrepareError(
                f"--{name}-fraction {share:g} held out none of the {total} utterances (each "
                "file is held out with that chance, by a hash of its path); give a larger one"
            )
    return [Split(name, items[name]) for name in names]


def _split_of(key: str, dev_fraction: float, test_fraction: float, names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    draw = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1), fixed per path
    if draw < dev_fraction:
        return "dev"
    if draw < dev_fraction + test_fraction:
        return "test"
    return "train"


def _scan(corpus_dir: Path) -> Iterator[tuple[str, Entry | Skipped]]:
    # (path relative to corpus_dir, entry or skip) for every audio file and transcript, sorted.
    root = os.path.abspath(corpus_dir)
    visited: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a symbolic link back up the tree
            subfolders[:] = []
            continue
        visited.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        yield from _folder_items(root, folder, sorted(name for name in files if name[0] != "."))


def _folder_items(
    root: str, folder: str, files: list[str]
) -> Iterator[tuple[str, Entry | Skipped]]:
    audio: dict[str, list[str]] = {}
    transcripts: dict[str, list[str]] = {}
    for name in files:
        stem, extension = os.path.splitext(name)
        if extension.lower() in PREPARE_AUDIO_EXTENSIONS:
            audio.setdefault(stem, []).append(name)
        elif extension.lower() in PREPARE_TRANSCRIPT_EXTENSIONS:
            transcripts.setdefault(stem, []).append(name)
    for stem in sorted(set(audio) | set(transcripts)):
        audio_names = sorted(audio.get(stem, []), key=_audio_rank)
        transcript_names = sorted(transcripts.get(stem, []), key=_transcript_rank)
        if not audio_names:
            path = os.path.join(folder, transcript_names[0])
            why = "a transcript without an audio file of the same name beside it"
            yield _relative(path, root), Skipped(path, SKIP_MISSING_AUDIO, why)
            continue
        path = os.path.join(folder, audio_names[0])
        key = _relative(path, root)
        for other in audio_names[1:]:
            why = f"{audio_names[0]} of the same name is used instead"
            yield key, Skipped(os.path.join(folder, other), SKIP_DUPLICATE_AUDIO, why)
        if not transcript_names:
            stems = " or ".join(stem + extension for extension in PREPARE_TRANSCRIPT_EXTENSIONS)
            why = f"no transcript {stems} beside it"
            yield key, Skipped(path, SKIP_NO_TRANSCRIPT, why)
            continue
        transcript = os.path.join(folder, transcript_names[0])
        try:
            with open(transcript, encoding="utf-8-sig") as handle:
                lines = handle.read().splitlines()
        except (UnicodeDecodeError, OSError) as error:
            reason = f"cannot read the transcript: {' '.join(str(error).split())}"
            yield key, Skipped(transcript, SKIP_INVALID, reason)
            continue
        text = " ".join(line.strip() for line in lines if line.strip())
        yield key, Entry(transcript, path, text)


def _relative(path: str, root: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _audio_rank(name: str) -> int:
    return PREPARE_AUDIO_EXTENSIONS.index(os.path.splitext(name)[1].lower())


def _transcript_rank(name: str) -> int:
    return PREPARE_TRANSCRIPT_EXTENSIONS.index(os.path.splitext(name)[1].lower())
