"""Mozilla Common Voice, one language, as distributed (``cv-corpus-*.tar.gz``).

The layout; ``--corpus-dir`` is the language folder, or the release folder with ``--language``::

    cv-corpus-15.0-2023-09-08/eo/clips/common_voice_eo_25023456.mp3
    cv-corpus-15.0-2023-09-08/eo/train.tsv     client_id  path  sentence  up_votes ...
    cv-corpus-15.0-2023-09-08/eo/dev.tsv
    cv-corpus-15.0-2023-09-08/eo/test.tsv

``train.tsv``, ``dev.tsv`` and ``test.tsv`` become ``train.jsonl``, ``dev.jsonl`` and
``test.jsonl``; only their ``path`` and ``sentence`` columns are read, so every release's header
works. Read here rather than with ``lhotse.recipes.prepare_commonvoice`` (lhotse 1.33), which
fails with ``KeyError: 'variant'`` on releases before that column existed (Common Voice 13 and
older), stops at the first unreadable clip, drops missing clips with a log line in a worker
process that the caller never sees, and starts a spawned process pool per split. The TSVs are
read as that recipe reads them: tab-separated, no quoting (sentences hold unbalanced quotes).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from rnnt.data.manifest_stats import SKIP_INVALID
from rnnt.prepare.writer import Entry, PrepareError, Skipped, Split

READER = "rnnt.prepare.commonvoice"
SPLITS = ("train", "dev", "test")
_COLUMNS = ("path", "sentence")
_LAYOUT = (
    "a Common Voice language folder holds clips/*.mp3 and train.tsv, dev.tsv, test.tsv, as "
    "extracted from cv-corpus-*.tar.gz"
)


def commonvoice_splits(corpus_dir: Path, language: str | None) -> list[Split]:
    """train, dev and test of one language.

    Raises:
        PrepareError: no language folder (or several and no ``language``), a missing TSV or
            clips folder, or a TSV without the ``path`` and ``sentence`` columns.
    """
    language_dir = _language_dir(corpus_dir, language)
    clips = language_dir / "clips"
    if not clips.is_dir():
        raise PrepareError(f"{clips}: no such folder ({_LAYOUT})")
    splits = []
    for name in SPLITS:
        tsv = language_dir / f"{name}.tsv"
        if not tsv.is_file():
            raise PrepareError(f"{tsv}: no such file ({_LAYOUT})")
        _check_header(tsv)
        splits.append(Split(name, _entries(tsv, clips)))
    return splits


def _is_language_dir(folder: Path) -> bool:
    return (folder / "clips").is_dir() or any((folder / f"{name}.tsv").is_file() for name in SPLITS)


def _language_dir(corpus_dir: Path, language: str | None) -> Path:
    if language is not None and (corpus_dir / language).is_dir():
        return corpus_dir / language
    if _is_language_dir(corpus_dir):
        if language is not None and corpus_dir.name != language:
            raise PrepareError(
                f"--language {language}: {corpus_dir} is the language folder of "
                f"{corpus_dir.name!r}; give the release folder, or leave --language out"
            )
        return corpus_dir
    found = sorted(p.name for p in corpus_dir.iterdir() if p.is_dir() and _is_language_dir(p))
    if language is not None:
        raise PrepareError(
            f"--language {language}: no folder {corpus_dir / language} "
            f"(languages here: {', '.join(found) or 'none'}; {_LAYOUT})"
        )
    if not found:
        raise PrepareError(
            f"{corpus_dir}: no Common Voice language folder ({_LAYOUT}; give that folder, or "
            "the release folder holding it with --language LANG)"
        )
    if len(found) > 1:
        raise PrepareError(
            f"--language: {corpus_dir} holds {len(found)} languages ({', '.join(found)}); "
            "choose one with --language"
        )
    return corpus_dir / found[0]


def _tsv_reader(handle) -> csv.DictReader:
    return csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)


def _check_header(tsv: Path) -> None:
    with open(tsv, encoding="utf-8", newline="") as handle:
        header = _tsv_reader(handle).fieldnames or []
    missing = [column for column in _COLUMNS if column not in header]
    if missing:
        raise PrepareError(
            f"{tsv}: no {' or '.join(map(repr, missing))} column in its header line (found: "
            f"{', '.join(header) or 'nothing'}; Common Voice's TSVs start client_id, path, "
            "sentence, ...)"
        )


def _entries(tsv: Path, clips: Path) -> Iterator[Entry | Skipped]:
    with open(tsv, encoding="utf-8", newline="") as handle:
        reader = _tsv_reader(handle)
        for row in reader:
            where = f"{tsv.name}:{reader.line_num}"
            path, sentence = row.get("path"), row.get("sentence")
            if not path or sentence is None:
                yield Skipped(where, SKIP_INVALID, "row has no 'path' or no 'sentence' field")
                continue
            yield Entry(where, str(clips / path), sentence.strip())
