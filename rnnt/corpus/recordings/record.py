"""What a source gives: verified recordings, and the clips it skipped with the reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Recording:
    """One labelled human recording.

    ``path`` is the audio file, or the zip archive that holds it as ``member`` (``None`` for a
    plain file). ``text`` is the verified transcript in the demo corpus's form (lower-case
    a-z, apostrophe, single spaces, numbers in words). ``speaker`` is unique within ``source``;
    ``voice`` ("source:speaker") is unique across sources. ``category`` says what kind of
    speech it is ("word", "prompt", ...).
    """

    path: str
    member: str | None
    text: str
    speaker: str
    source: str
    licence: str
    category: str

    @property
    def voice(self) -> str:
        return f"{self.source}:{self.speaker}"

    @property
    def where(self) -> str:
        """The file, or ``archive:member``, for messages."""
        return f"{self.path}:{self.member}" if self.member else self.path


@dataclass(frozen=True)
class Skip:
    """A clip a source did not use: ``reason`` is a short key, ``detail`` says what was wrong."""

    where: str
    reason: str
    detail: str


class Found(list[Recording]):
    """The verified recordings of one source (a list), with ``skipped``: what was left out."""

    def __init__(self, recordings: Iterable[Recording] = (), skipped: Iterable[Skip] = ()) -> None:
        super().__init__(recordings)
        self.skipped: list[Skip] = list(skipped)

    def skip(self, where: str, reason: str, detail: str) -> None:
        self.skipped.append(Skip(where, reason, detail))

    def skip_counts(self) -> dict[str, int]:
        """Skipped clips per reason, most frequent first."""
        return dict(Counter(skip.reason for skip in self.skipped).most_common())


class LabelError(ValueError):
    """A transcript that cannot be used; ``reason`` is the short key counted in ``Found``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
