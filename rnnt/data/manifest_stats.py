"""What reading a manifest skipped, and why: skip reasons, per-manifest counts, one log line.

``ManifestStats`` is filled while a manifest is read (``rnnt.data.manifest``) and while its
audio headers are read (``rnnt.data.records``); ``log_stats`` reports it once per manifest.
The skip reasons below are the keys of ``ManifestStats.skipped``. ``ScanProgress`` says how far
a long scan got, so that a start-up over a large manifest is not silent.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from rnnt.constants import MANIFEST_PROGRESS_SECONDS, MANIFEST_SKIP_EXAMPLES

# Skip reasons, the keys of ManifestStats.skipped.
SKIP_INVALID = "invalid"  # not decodable, not JSON, missing field, wrong type or value
SKIP_EMPTY_TEXT = "empty_text"
SKIP_MISSING_AUDIO = "missing_audio"
SKIP_TOO_SHORT = "too_short"  # filtering, never an error
SKIP_TOO_LONG = "too_long"  # filtering, never an error
# Set by rnnt.data.records, which reads the audio headers:
SKIP_UNREADABLE_AUDIO = "unreadable_audio"  # no readable header (not audio), or no sample
SKIP_DURATION_MISMATCH = "duration_mismatch"  # offset/duration beyond the end of the file
# Set by rnnt.data.records when the tokenizer is known (the DataModule's setup):
SKIP_TEXT_TOO_LONG = "text_too_long_for_audio"  # more tokens than the audio's frames can emit
SKIP_LATTICE_TOO_LARGE = "lattice_too_large"  # T' x (U+1) > MAX_BATCH_LATTICE_CELLS: a limit


@dataclass
class ManifestStats:
    """What reading one manifest kept and skipped.

    ``skipped`` counts skipped lines per reason (``invalid``, ``empty_text``,
    ``missing_audio``, ``too_short``, ``too_long``; ``unreadable_audio`` and
    ``duration_mismatch`` once the audio headers are read; ``text_too_long_for_audio`` and
    ``lattice_too_large`` once the transcripts are tokenized); ``examples`` quotes the first
    few as ``"file:line: why"``; ``kept_duration`` is the seconds of audio kept;
    ``partial_audio`` counts kept utterances without an ``offset`` field that use only the
    start of a longer file.
    """

    path: str
    kept: int = 0
    kept_duration: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    partial_audio: int = 0

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, line: int, why: str) -> None:
        """Count line ``line`` as skipped for ``reason``; ``why`` is quoted if among the first."""
        self.skipped[reason] += 1
        if len(self.examples) < MANIFEST_SKIP_EXAMPLES:
            self.examples.append(f"{self.path}:{line}: {why}")

    def summary(self) -> str:
        """One line: kept, skipped per reason, the first examples."""
        counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
        text = (
            f"{self.path}: kept {self.kept} utterances ({self.kept_duration:.1f} s), "
            f"skipped {self.num_skipped}"
        )
        if self.num_skipped:
            text += f" ({counts}); first: {' | '.join(self.examples)}"
        return text


def log_stats(stats: ManifestStats, log: logging.Logger) -> None:
    """Log what a manifest's reading skipped, once, to ``log`` (the caller's logger): a warning
    when anything was unusable, info when utterances were only filtered by duration, nothing
    when nothing was skipped."""
    if not stats.num_skipped:
        return
    filtered_only = set(stats.skipped) <= {SKIP_TOO_SHORT, SKIP_TOO_LONG}
    log.log(logging.INFO if filtered_only else logging.WARNING, "%s", stats.summary())


class ScanProgress:
    """Logs how far a scan of a manifest got, every ``MANIFEST_PROGRESS_SECONDS``.

    Silent for scans that end sooner (tests, the demo) and when ``enabled`` is False (DDP
    ranks other than 0). ``update(done)`` is cheap enough to call for every line.
    """

    def __init__(
        self, path: str, what: str, log: logging.Logger, *, total: int | None, enabled: bool
    ) -> None:
        self.path = path
        self.what = what
        self.log = log
        self.total = total
        self.enabled = enabled
        self.start = time.monotonic()
        self.next_report = self.start + MANIFEST_PROGRESS_SECONDS

    def update(self, done: int) -> None:
        """``done`` lines (or utterances) of ``total`` are through; log if it is time to."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next_report:
            return
        self.next_report = now + MANIFEST_PROGRESS_SECONDS
        elapsed = now - self.start
        if self.total:
            left = elapsed * (self.total - done) / max(done, 1)
            self.log.info(
                "%s: %s %d of %d (%.0f%%) in %.0f s, about %.0f s left",
                self.path,
                self.what,
                done,
                self.total,
                100.0 * done / self.total,
                elapsed,
                left,
            )
        else:
            self.log.info("%s: %s %d so far (%.0f s)", self.path, self.what, done, elapsed)
