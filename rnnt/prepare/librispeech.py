"""LibriSpeech (OpenSLR 12, and Mini LibriSpeech, OpenSLR 31) through lhotse's recipe.

The layout as the tarballs extract it; ``--corpus-dir`` is ``LibriSpeech`` or its parent::

    LibriSpeech/dev-clean/84/121123/84-121123.trans.txt     84-121123-0000 GO DO YOU HEAR
    LibriSpeech/dev-clean/84/121123/84-121123-0000.flac     16 kHz mono

Every split folder present becomes ``SPLIT.jsonl`` (``dev-clean.jsonl``, ``train-clean-100.jsonl``,
...). ``lhotse.recipes.prepare_librispeech`` reads the layout and the audio headers (``--jobs``
threads). Its habits handled here: it drops a transcript line whose flac is missing with a log
line only, so the transcript files are read first to count those as ``missing_audio`` (and a
split with no flac at all, where it fails, is not given to it); it stops at the first unreadable
flac or unparsable transcript line, so those become a ``PrepareError`` naming the file (a
complete LibriSpeech has neither: re-extract); and its progress bars are kept off the terminal.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rnnt.data.manifest_stats import SKIP_MISSING_AUDIO
from rnnt.prepare.writer import Entry, PrepareError, Skipped, Split

logger = logging.getLogger(__name__)

READER = "lhotse.recipes.prepare_librispeech"
_FAILED_FILE = re.compile(r"from '(?P<path>.+?)' failed")


def librispeech_splits(corpus_dir: Path, jobs: int) -> list[Split]:
    """The split folders under ``corpus_dir``, each a lazy ``Split`` (the recipe runs when it
    is iterated).

    Raises:
        PrepareError: no split folder, a split without transcript files, or a transcript line
            the recipe cannot read; each names the file or folder and the layout expected.
    """
    from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH

    root = corpus_dir / "LibriSpeech" if (corpus_dir / "LibriSpeech").is_dir() else corpus_dir
    names = [name for name in (*LIBRISPEECH, *MINI_LIBRISPEECH) if (root / name).is_dir()]
    if not names:
        raise PrepareError(
            f"{root}: no split folder (expected {', '.join(LIBRISPEECH)} or some of them, as "
            "extracted from the OpenSLR tarballs: LibriSpeech/SPLIT/SPEAKER/CHAPTER/"
            "SPEAKER-CHAPTER.trans.txt beside SPEAKER-CHAPTER-NNNN.flac)"
        )
    listed = {name: _listed_utterances(root / name) for name in names}
    return [Split(name, _entries(root, name, listed[name], jobs)) for name in names]


def _listed_utterances(split_dir: Path) -> dict[str, tuple[str, Path]]:
    # {utterance id: (transcript file:line, the flac the recipe will look for)}.
    transcripts = sorted(split_dir.rglob("*.trans.txt"))
    if not transcripts:
        raise PrepareError(
            f"{split_dir}: no transcript file (expected SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt "
            f"below it, as extracted from {split_dir.name}.tar.gz)"
        )
    listed: dict[str, tuple[str, Path]] = {}
    for transcript in transcripts:
        lines = transcript.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            fields = line.split(maxsplit=1)
            if len(fields) < 2:
                what = "a blank line" if not fields else f"{fields[0]} has no transcript after it"
                raise PrepareError(
                    f"{transcript}:{number}: {what} (each line is 'ID TEXT', which lhotse's "
                    "prepare_librispeech needs; fix or delete the line)"
                )
            utterance = fields[0]
            # Where the recipe looks: SPLIT/SPEAKER/CHAPTER/ID.flac from ID = SPEAKER-CHAPTER-N.
            flac = split_dir / Path(utterance.replace("-", "/")).parent / f"{utterance}.flac"
            listed[utterance] = (f"{transcript}:{number}", flac)
    return listed


def _entries(
    root: Path, name: str, listed: dict[str, tuple[str, Path]], jobs: int
) -> Iterator[Entry | Skipped]:
    from lhotse.audio.utils import AudioLoadingError
    from lhotse.recipes import librispeech as recipe

    if not any(flac.is_file() for _, flac in listed.values()):  # the recipe fails on none
        for where, flac in listed.values():
            yield Skipped(where, SKIP_MISSING_AUDIO, f"audio file not found: {flac}")
        return
    logger.info(
        "%s: lhotse's prepare_librispeech reads %d audio headers (%d threads)",
        name,
        len(listed),
        jobs,
    )
    try:
        with _quiet(recipe):
            manifests = recipe.prepare_librispeech(root, dataset_parts=[name], num_jobs=jobs)
    except AudioLoadingError as error:
        found = _FAILED_FILE.search(str(error))
        where = found["path"] if found else str(root / name)
        raise PrepareError(
            f"{where}: unreadable audio, and lhotse's prepare_librispeech stops at the first "
            f"(re-extract {name}.tar.gz, or delete the file and its transcript line)"
        ) from None
    recordings = manifests[name]["recordings"]
    supervisions = sorted(manifests[name]["supervisions"], key=lambda segment: segment.id)
    for segment in supervisions:
        source = recordings[segment.recording_id].sources[0].source
        where = listed[segment.id][0] if segment.id in listed else segment.id
        yield Entry(where, str(source), segment.text, segment.duration, segment.start)
    prepared = {segment.id for segment in supervisions}
    for utterance, (where, flac) in listed.items():
        if utterance not in prepared:
            yield Skipped(where, SKIP_MISSING_AUDIO, f"audio file not found: {flac}")


@contextmanager
def _quiet(recipe) -> Iterator[None]:
    # The recipe draws three nested tqdm bars per split (escape codes in a log file) and warns
    # "No such file" on the root logger for each missing flac, which the summary counts
    # anyway; one error line must not come after a screen of them. tqdm reads TQDM_DISABLE
    # only when it is imported, so the recipe's module gets a bar that draws nothing.
    bars = recipe.tqdm
    root = logging.getLogger()
    recipe.tqdm = _no_bar
    root.addFilter(_not_a_missing_file)
    try:
        yield
    finally:
        recipe.tqdm = bars
        root.removeFilter(_not_a_missing_file)


def _no_bar(iterable=None, *args, **kwargs):
    return iterable


def _not_a_missing_file(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("No such file: ")
