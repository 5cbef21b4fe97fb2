"""A NeMo-style manifest opened without reading any audio: where each kept line is, and its length.

``ManifestIndex`` scans a manifest once (``rnnt.data.manifest.scan_manifest``: every line is
validated, bad lines are errors naming ``file:line`` or counted skips, lines outside the
duration bounds are filtered) and keeps three numbers per kept line: its byte offset, its line
number and its duration, 16 bytes a line (16 MB for a million lines). No audio file is opened
or even looked up: the duration written in the manifest is trusted, and a missing or corrupt
file is found, skipped and counted when a data-loader worker loads it (``rnnt.data.lazy_cuts``).
The utterances themselves are read back by offset when the sampler needs them, so an epoch
can visit them in any order without holding them in memory.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from rnnt.constants import MANIFEST_MAX_LINE_BYTES
from rnnt.data.manifest import scan_manifest
from rnnt.data.manifest_line import InvalidLine, Utterance, parse_line
from rnnt.data.manifest_stats import SKIP_INVALID, ManifestStats

_BOM = b"\xef\xbb\xbf"
_CHANGED_S = 1e-3  # a duration further than this from the scanned one: the line was rewritten


class ManifestIndex:
    """The kept lines of a JSON-lines manifest: byte offsets, line numbers, durations.

    Args:
        path: the manifest (relative audio paths resolve against its folder).
        min_duration, max_duration: seconds; lines outside are filtered (``too_short``,
            ``too_long``); None: no bound.
        skip_invalid: count bad lines instead of raising ``ManifestError`` at the first.
        progress: log the scan's progress (rank 0 of a long scan).

    ``stats`` holds what the scan kept and skipped; ``durations`` (N,) float32 seconds,
    ``lines`` (N,) int32 1-based line numbers, ``offsets`` (N,) int64 bytes.

    Raises:
        ManifestError: as ``rnnt.data.manifest.read_manifest_with_stats``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        min_duration: float | None = None,
        max_duration: float | None = None,
        skip_invalid: bool = False,
        progress: bool = False,
    ) -> None:
        self.path = str(path)
        self.name = Path(path).name
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.stats = ManifestStats(path=self.path)
        offsets, lines, durations = array("q"), array("i"), array("f")
        for line, offset, record in scan_manifest(
            Path(path),
            self.stats,
            min_duration=min_duration,
            max_duration=max_duration,
            skip_invalid=skip_invalid,
            progress=progress,
        ):
            offsets.append(offset)
            lines.append(line)
            durations.append(record["duration"])
        self.offsets = np.frombuffer(offsets, dtype=np.int64)
        self.lines = np.frombuffer(lines, dtype=np.int32)
        self.durations = np.frombuffer(durations, dtype=np.float32)
        self.stats.kept = len(self.offsets)
        self.stats.kept_duration = float(self.durations.sum(dtype=np.float64))

    def __len__(self) -> int:
        return len(self.offsets)

    def utterances(self, order: Iterable[int]) -> Iterator[tuple[int, Utterance | InvalidLine]]:
        """``(line number, utterance)`` of the kept lines at the positions ``order`` (e.g. a
        permutation), through one file handle.

        A line changed since the scan (the manifest was rewritten under a running job) gives
        its ``InvalidLine``, never another line's utterance.
        """
        with open(self.path, "rb") as handle:
            for index in order:
                handle.seek(int(self.offsets[index]))
                raw = handle.readline(MANIFEST_MAX_LINE_BYTES + 1)
                line = int(self.lines[index])
                try:
                    utterance = parse_line(raw.removeprefix(_BOM), line, self.base_dir)
                    if abs(utterance.duration - float(self.durations[index])) > _CHANGED_S:
                        raise InvalidLine(SKIP_INVALID, "the line changed since it was scanned")
                except InvalidLine as invalid:
                    yield line, invalid
                else:
                    yield line, utterance
