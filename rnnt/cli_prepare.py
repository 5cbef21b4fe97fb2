"""The ``rnnt prepare`` subcommand: its flags, and the summary it prints.

::

    rnnt prepare librispeech --corpus-dir /data/LibriSpeech --out data/librispeech
    rnnt prepare commonvoice --corpus-dir /data/cv-corpus-15.0-2023-09-08 --language eo --out cv
    rnnt prepare mls --corpus-dir /data/mls_polish --out data/mls_polish
    rnnt prepare folder --corpus-dir my_recordings --out data/mine --dev-fraction 0.05

Each split's line is printed when its manifest is written; ``prepare.json`` has the same
counts with examples of every skip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnt import cli_args as check
from rnnt import constants as C
from rnnt.prepare import CORPORA, SplitReport, prepare_corpus
from rnnt.prepare.writer import format_seconds


def add_prepare_command(commands: argparse._SubParsersAction) -> None:
    """Add ``rnnt prepare CORPUS --corpus-dir DIR --out DIR ...`` to the ``rnnt`` command."""
    prepare = commands.add_parser(
        "prepare",
        help="manifests of a corpus as distributed: librispeech, commonvoice, mls, or a folder "
        "of audio with same-named .txt/.lab transcripts",
    )
    prepare.add_argument("corpus", choices=CORPORA, help="the corpus's layout")
    prepare.add_argument(
        "--corpus-dir", required=True, type=existing_folder, help="the corpus as extracted"
    )
    prepare.add_argument(
        "--out", required=True, type=check.output_folder, help="folder for SPLIT.jsonl manifests"
    )
    prepare.add_argument(
        "--language", help="commonvoice (eo, pt, ...) or mls (polish, ...): the language folder"
    )
    prepare.add_argument(
        "--jobs", type=check.positive_int, default=C.PREPARE_JOBS, help="threads reading audio"
    )
    prepare.add_argument(
        "--dev-fraction",
        type=fraction,
        default=C.PREPARE_DEV_FRACTION,
        help="folder: share held out as dev.jsonl, chosen by a hash of each file's path "
        "(0: one all.jsonl)",
    )
    prepare.add_argument(
        "--test-fraction",
        type=fraction,
        default=C.PREPARE_TEST_FRACTION,
        help="folder: share held out as test.jsonl, the same way",
    )
    prepare.add_argument(
        "--overwrite", action="store_true", help="replace manifests already in --out"
    )
    prepare.set_defaults(run=run_prepare)


def existing_folder(text: str) -> Path:
    """A folder that exists (the corpus)."""
    path = Path(text)
    if path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is a file; give the corpus folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return path


def fraction(text: str) -> float:
    """A share in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def run_prepare(options: argparse.Namespace) -> None:
    """Prepare the corpus; print a line per split, then the totals and the summary's path."""

    def show(report: SplitReport) -> None:
        print(report.describe(str(options.out / report.manifest)))
        for reason, examples in sorted(report.examples.items()):
            for example in examples:
                print(f"  {reason}: {example}")

    result = prepare_corpus(
        options.corpus,
        options.corpus_dir,
        options.out,
        language=options.language,
        jobs=options.jobs,
        dev_fraction=options.dev_fraction,
        test_fraction=options.test_fraction,
        overwrite=options.overwrite,
        on_split=show,
    )
    utterances = sum(report.utterances for report in result.reports)
    seconds = sum(report.seconds for report in result.reports)
    skipped = sum(sum(report.skipped.values()) for report in result.reports)
    print(
        f"total: {utterances} utterances, {format_seconds(seconds)}, {skipped} skipped "
        f"(read by {result.reader}); summary: {result.summary_path}"
    )
