"""``rnnt prepare``: NeMo-style manifests from a corpus folder in the layout it is distributed in.

::

    from rnnt.prepare import prepare_corpus
    result = prepare_corpus("librispeech", "/data/LibriSpeech", "data/librispeech")
    # data/librispeech/dev-clean.jsonl, ..., data/librispeech/prepare.json

One module per corpus lists its splits' utterances (``librispeech`` through lhotse's recipe;
``commonvoice``, ``mls`` and ``folder`` read here, each module saying why); ``writer`` checks
them, writes the manifests and the ``prepare.json`` summary. Training never imports this
package: it reads the manifests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rnnt.arguments import refuse_existing
from rnnt.constants import (
    PREPARE_DEV_FRACTION,
    PREPARE_JOBS,
    PREPARE_SUMMARY_FILE,
    PREPARE_TEST_FRACTION,
)
from rnnt.prepare import commonvoice, folder, librispeech, mls
from rnnt.prepare.writer import PrepareError, Split, SplitReport, write_split, write_summary

CORPORA = ("librispeech", "commonvoice", "mls", "folder")
_READERS = {
    "librispeech": librispeech.READER,
    "commonvoice": commonvoice.READER,
    "mls": mls.READER,
    "folder": folder.READER,
}
_WITH_LANGUAGE = ("commonvoice", "mls")

__all__ = ["CORPORA", "PrepareError", "PrepareResult", "SplitReport", "prepare_corpus"]


@dataclass
class PrepareResult:
    """What ``prepare_corpus`` wrote: one report per split and the summary file."""

    corpus: str
    reader: str
    reports: list[SplitReport]
    summary_path: Path


def prepare_corpus(
    corpus: str,
    corpus_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    language: str | None = None,
    jobs: int = PREPARE_JOBS,
    dev_fraction: float = PREPARE_DEV_FRACTION,
    test_fraction: float = PREPARE_TEST_FRACTION,
    overwrite: bool = False,
    on_split: Callable[[SplitReport], None] | None = None,
) -> PrepareResult:
    """Write ``out/SPLIT.jsonl`` for each of the corpus's splits and ``out/prepare.json``.

    Args:
        corpus: one of ``CORPORA``.
        corpus_dir: the corpus folder as extracted (each corpus module shows its layout).
        out: the folder to write into (made if missing).
        language: commonvoice (``eo``, ``pt``) and mls (``polish``) only: the language to take
            when ``corpus_dir`` holds several.
        jobs: threads reading audio headers.
        dev_fraction, test_fraction: folder only: shares held out by a hash of each path.
        overwrite: replace manifests and a summary already in ``out``.
        on_split: called with each split's report once its manifest is written.

    Raises:
        PrepareError: an option that does not apply, or a layout that is not the corpus's
            (one line naming the missing file or folder and the layout expected).
        ValueError: an output file exists and ``overwrite`` is false.
    """
    if corpus not in CORPORA:
        raise PrepareError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    if language is not None and corpus not in _WITH_LANGUAGE:
        raise PrepareError(f"--language is for {' and '.join(_WITH_LANGUAGE)}, not {corpus}")
    if (dev_fraction or test_fraction) and corpus != "folder":
        raise PrepareError(
            f"--dev-fraction and --test-fraction are for folder; {corpus} comes split already"
        )
    if jobs < 1:
        raise PrepareError(f"--jobs {jobs} must be >= 1")
    corpus_path = Path(os.path.abspath(corpus_dir))
    if not corpus_path.is_dir():
        raise PrepareError(f"{corpus_dir}: no such folder (give the corpus folder as extracted)")
    splits = _splits(corpus, corpus_path, language, jobs, dev_fraction, test_fraction)
    out_path = Path(out)
    if not overwrite:
        names = [f"{split.name}.jsonl" for split in splits] + [PREPARE_SUMMARY_FILE]
        refuse_existing([out_path / name for name in names], "--out")
    out_path.mkdir(parents=True, exist_ok=True)
    reports = []
    for split in splits:
        reports.append(write_split(out_path, split, jobs))
        if on_split is not None:
            on_split(reports[-1])
    reader = _READERS[corpus]
    summary = write_summary(out_path, corpus, corpus_path, reader, reports)
    return PrepareResult(corpus, reader, reports, summary)


def _splits(
    corpus: str,
    corpus_dir: Path,
    language: str | None,
    jobs: int,
    dev_fraction: float,
    test_fraction: float,
) -> list[Split]:
    if corpus == "librispeech":
        return librispeech.librispeech_splits(corpus_dir, jobs)
    if corpus == "commonvoice":
        return commonvoice.commonvoice_splits(corpus_dir, language)
    if corpus == "mls":
        return mls.mls_splits(corpus_dir, language)
    return folder.folder_splits(corpus_dir, dev_fraction, test_fraction)
