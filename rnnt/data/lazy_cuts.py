"""Cuts that are made without touching their audio: deferred cuts and lhotse cut manifests.

A cut from a lazily read NeMo manifest (``rnnt.data.manifest_index``) is *deferred*: it knows
its audio file, offset and duration (as the manifest says) but not the file's sample rate or
channels, so the main process never opens a file. ``defer_speed`` speed-perturbs it (the
sampler must see the perturbed duration), and ``resolve_cut`` makes it a real lhotse cut in
the data-loader worker, where the file is opened anyway: its header is read there, with the
same checks a header read at start-up makes (``rnnt.data.records``), and a failure is the
worker's counted skip.

``LhotseCutFile`` reads a lhotse ``CutSet`` manifest (``cuts_*.jsonl.gz`` as icefall and
lhotse's recipes write them, or plain ``.jsonl``) one line at a time, with line numbers, so a
bad line is named ``file:line`` like a bad line of our own manifests. Relative audio paths in
lhotse manifests resolve against the working directory, as lhotse resolves them.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from lhotse import SupervisionSegment
from lhotse.cut import Cut, MonoCut
from lhotse.cut.data import DataCut
from lhotse.cut.set import deserialize_cut
from lhotse.utils import fastcopy

from rnnt.data.manifest_line import InvalidLine, Utterance
from rnnt.data.manifest_stats import SKIP_INVALID, SKIP_MISSING_AUDIO
from rnnt.data.records import Unusable, make_record, read_header

AUDIO_FIELD = "audio"  # cut.custom of a deferred cut: where its audio is
SPEED_FIELD = "speed"  # cut.custom of a deferred cut: its speed factor (1.0 when absent)
_GZIP_MAGIC = b"\x1f\x8b"


def deferred_cut(utterance: Utterance, cut_id: str, text: str, num_tokens: int | None) -> Cut:
    """A cut of ``utterance`` (normalised ``text``, U = ``num_tokens``) with no audio opened.

    Its duration is the manifest's; ``resolve_cut`` fills in the recording in the worker.
    """
    custom = {
        AUDIO_FIELD: {
            "path": utterance.audio_filepath,
            "offset": utterance.offset,
            "duration": utterance.duration,
            "line": utterance.line,
        }
    }
    if num_tokens is not None:
        custom["num_tokens"] = num_tokens
    supervision = SupervisionSegment(
        id=cut_id, recording_id=cut_id, start=0.0, duration=utterance.duration, text=text
    )
    return MonoCut(
        id=cut_id,
        start=0.0,
        duration=utterance.duration,
        channel=0,
        supervisions=[supervision],
        custom=custom,
    )


def is_deferred(cut: Cut) -> bool:
    """Whether ``cut`` is a deferred cut (``deferred_cut``) still waiting for its recording."""
    return not cut.has_recording and AUDIO_FIELD in (cut.custom or {})


def defer_speed(cut: Cut, factor: float) -> Cut:
    """``cut`` (deferred) played ``factor`` times faster: duration / factor, applied on load."""
    duration = cut.duration / factor
    supervisions = [fastcopy(supervision, duration=duration) for supervision in cut.supervisions]
    return fastcopy(
        cut,
        duration=duration,
        supervisions=supervisions,
        custom={**cut.custom, SPEED_FIELD: float(factor)},
    )


def audio_path(cut: Cut) -> str:
    """The audio file a cut reads ("?" when it has none): for messages."""
    if is_deferred(cut):
        return cut.custom[AUDIO_FIELD]["path"]
    if cut.has_recording and cut.recording.sources:
        source = cut.recording.sources[0]
        if source.type == "memory":  # read from a shard: name the shard's file and the cut
            return f"{(cut.custom or {}).get('shard_origin', 'a shard')} ({cut.id})"
        return str(source.source)
    return "?"


def resolve_cut(cut: Cut) -> Cut:
    """The real lhotse cut of a deferred cut: its file's header read, offset and duration
    checked (``rnnt.data.records.make_record``), speed perturbation applied.

    The id, text, token count and every other ``custom`` field (the epoch) are kept.

    Raises:
        Unusable: the file is missing or unreadable, or offset/duration fall outside it.
    """
    where = cut.custom[AUDIO_FIELD]
    path = where["path"]
    if not os.path.isfile(path):
        raise Unusable(SKIP_MISSING_AUDIO, f"audio file not found: {path}")
    header = read_header(path)
    if isinstance(header, Unusable):
        raise header
    rate, frames, channels = header
    utterance = Utterance(
        audio_filepath=path,
        duration=where["duration"],
        text=cut.supervisions[0].text,
        offset=where["offset"],
        line=where["line"],
    )
    record = make_record(utterance, cut.id, rate, frames, channels, None)
    resolved = record.to_cut()
    resolved.custom = {
        key: value for key, value in cut.custom.items() if key not in (AUDIO_FIELD, SPEED_FIELD)
    }
    factor = cut.custom.get(SPEED_FIELD, 1.0)
    return resolved if factor == 1.0 else resolved.perturb_speed(factor, affix_id=False)


def is_lhotse_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a lhotse cut manifest (gzip or not) rather than a NeMo manifest.

    Decided by the first line: lhotse cuts have ``supervisions``; a missing or unreadable
    file is not (the NeMo reader then names the problem).
    """
    try:
        with _open_text(path) as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    return isinstance(record, dict) and "supervisions" in record
    except (OSError, ValueError, EOFError):
        return False
    return False


class LhotseCutFile:
    """A lhotse cut manifest read lazily, one line at a time: ``(line number, cut)``.

    Only cuts with a recording are usable (the model computes its own features from the
    audio); a line that is not a cut, or a cut without audio, raises ``InvalidLine`` naming
    why (the caller counts it or stops, naming ``file:line``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.name = Path(path).name
        if not os.path.isfile(path):
            raise FileNotFoundError(path)

    def __iter__(self) -> Iterator[tuple[int, Cut | InvalidLine]]:
        """``(line number, cut)`` per non-empty line; an unusable line gives its ``InvalidLine``."""
        with _open_text(self.path) as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, _parse_cut(line)

    def count_lines(self) -> int:
        """Non-empty lines (cuts) in the file: one decompressing pass, no JSON parsed."""
        with _open_text(self.path) as handle:
            return sum(1 for line in handle if line.strip())


def _parse_cut(line: str) -> Cut | InvalidLine:
    try:
        cut = deserialize_cut(json.loads(line))
    except Exception as error:  # lhotse raises whatever its constructors raise
        return InvalidLine(SKIP_INVALID, f"not a lhotse cut ({type(error).__name__}: {error})")
    if not isinstance(cut, DataCut) or not cut.has_recording:
        return InvalidLine(
            SKIP_INVALID,
            f"cut {cut.id} has no recording (a {type(cut).__name__}); the model computes its "
            "own features from audio, so cuts need their recordings",
        )
    return cut


def _open_text(path: str | os.PathLike):
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")
