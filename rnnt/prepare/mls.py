"""Multilingual LibriSpeech (OpenSLR 94), one language, the flac release (``mls_LANG.tar.gz``).

The layout; ``--corpus-dir`` is ``mls_LANG``, or the folder holding it with ``--language LANG``::

    mls_polish/train/transcripts.txt    4800_10003_000000<TAB>i tak dalej
    mls_polish/train/audio/4800/10003/4800_10003_000000.flac
    mls_polish/dev/...   mls_polish/test/...   (and metainfo.txt, segments.txt: not needed)

``train``, ``dev`` and ``test`` become ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl``. Read
here rather than with ``lhotse.recipes.prepare_mls`` (lhotse 1.33), which ends in a bare
``StopIteration`` when a transcript line's flac is missing, stops at the first unreadable flac,
prepares every ``mls_*`` language it finds (no choosing one) and needs ``metainfo.txt`` to name
every speaker. The opus release (``mls_LANG_opus``) is not supported: take the flac one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rnnt.data.manifest_stats import SKIP_INVALID
from rnnt.prepare.writer import Entry, PrepareError, Skipped, Split

READER = "rnnt.prepare.mls"
SPLITS = ("train", "dev", "test")
_LAYOUT = (
    "an MLS language folder, as extracted from mls_LANG.tar.gz, holds train/, dev/ and test/, "
    "each with transcripts.txt and audio/SPEAKER/BOOK/SPEAKER_BOOK_NNNNNN.flac"
)


def mls_splits(corpus_dir: Path, language: str | None) -> list[Split]:
    """train, dev and test of one MLS language.

    Raises:
        PrepareError: no language folder (or several and no ``language``), or a split without
            its folder, ``transcripts.txt`` or ``audio`` folder.
    """
    language_dir = _language_dir(corpus_dir, language)
    splits = []
    for name in SPLITS:
        split_dir = language_dir / name
        for needed in (split_dir, split_dir / "transcripts.txt", split_dir / "audio"):
            if not needed.exists():
                raise PrepareError(f"{needed}: no such file or folder ({_LAYOUT})")
        splits.append(Split(name, _entries(split_dir)))
    return splits


def _is_language_dir(folder: Path) -> bool:
    return any((folder / name / "transcripts.txt").is_file() for name in SPLITS)


def _language_dir(corpus_dir: Path, language: str | None) -> Path:
    if language is not None and (corpus_dir / f"mls_{language}").is_dir():
        return corpus_dir / f"mls_{language}"
    if _is_language_dir(corpus_dir):
        if language is not None and corpus_dir.name != f"mls_{language}":
            raise PrepareError(
                f"--language {language}: {corpus_dir} is a language folder itself; give the "
                "folder holding mls_LANG folders, or leave --language out"
            )
        return corpus_dir
    folders = [p for p in sorted(corpus_dir.glob("mls_*")) if p.is_dir() and "_lm_" not in p.name]
    found = [p.name.removeprefix("mls_") for p in folders if not p.name.endswith("_opus")]
    if language is not None:
        raise PrepareError(
            f"--language {language}: no folder {corpus_dir / f'mls_{language}'} "
            f"(languages here: {', '.join(found) or 'none'}; {_LAYOUT})"
        )
    if not found:
        opus = " (the opus release is not supported: take the flac one)" if folders else ""
        raise PrepareError(f"{corpus_dir}: no MLS language folder{opus} ({_LAYOUT})")
    if len(found) > 1:
        raise PrepareError(
            f"--language: {corpus_dir} holds {len(found)} MLS languages ({', '.join(found)}); "
            "choose one with --language"
        )
    return corpus_dir / f"mls_{found[0]}"


def _entries(split_dir: Path) -> Iterator[Entry | Skipped]:
    transcripts = split_dir / "transcripts.txt"
    with open(transcripts, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{transcripts}:{number}"
            utterance, tab, text = line.rstrip("\r\n").partition("\t")
            parts = utterance.split("_")
            if not tab or len(parts) != 3:
                yield Skipped(where, SKIP_INVALID, "not 'SPEAKER_BOOK_NNNNNN<TAB>text'")
                continue
            speaker, book, _ = parts
            flac = split_dir / "audio" / speaker / book / f"{utterance}.flac"
            yield Entry(where, str(flac), text.strip())
