"""Cuts of one or more manifests, read as the sampler needs them: ``LazySource``.

The large-corpus counterpart of ``rnnt.data.cuts.CutSource``, with the same interface for the
sampler (``set_epoch``, ``__iter__``, ``__len__``, ``longest_duration``, ``durations``). Its
parts are NeMo manifests opened as a ``ManifestIndex`` (16 bytes a line in memory, a full
shuffle per epoch) or lhotse cut manifests read as a stream (``LhotseCutFile``, shuffled
through a buffer of ``SAMPLER_BUFFER_SIZE`` cuts, as lhotse shuffles lazy manifests). Each cut
is checked as it is read, in the main process (``CutChecks``: normalised text, the token
count and its bounds, durations), and skipped and counted in its manifest's ``ManifestStats``
the first time, or, with ``skip_invalid=False``, stops the run naming ``file:line``.

Several parts mix in one of two ways:

* without weights, an epoch is one pass over every part, interleaved at random in proportion
  to what each part has left (the shuffled concatenation);
* with weights, each cut is drawn from part i with probability w_i / sum(w); a part that runs
  out starts another (reshuffled) pass, so a small corpus weighted up is repeated within the
  epoch. An epoch is as many cuts as all parts hold together.

The order depends only on (seed, epoch), so every DDP rank iterates the same cuts, as the
sampler's rank split needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from lhotse import SupervisionSegment
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from rnnt.constants import BUCKET_ESTIMATE_CUTS, SAMPLER_BUFFER_SIZE, SEED
from rnnt.data.augment import RandomSpeed
from rnnt.data.cuts import tag_epoch
from rnnt.data.lazy_cuts import LhotseCutFile, deferred_cut
from rnnt.data.manifest import ManifestError
from rnnt.data.manifest_index import ManifestIndex
from rnnt.data.manifest_line import InvalidLine, Utterance
from rnnt.data.manifest_stats import (
    SKIP_TOO_LONG,
    SKIP_TOO_SHORT,
    ManifestStats,
)
from rnnt.data.records import ALWAYS_SKIPPED, Unusable, checked_text, checked_tokens, speed_bounds

_ALWAYS_SKIPPED = (*ALWAYS_SKIPPED, SKIP_TOO_LONG)  # limits, not faults: lhotse cuts filter here


@dataclass
class CutChecks:
    """What every lazily read cut must pass: text, token count, duration bounds.

    ``count_tokens`` (normalised text -> U) may be None (no token checks); ``speed_factors``
    bound the audio's shortest and longest perturbed length, as ``rnnt.data.records``;
    ``min_duration``/``max_duration`` (seconds) filter lhotse cuts (a ``ManifestIndex`` has
    already filtered its lines).
    """

    count_tokens: Callable[[str], int] | None = None
    speed_factors: Sequence[float] = ()
    min_duration: float | None = None
    max_duration: float | None = None
    skip_invalid: bool = True
    _seen: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self._fastest, self._slowest = speed_bounds(self.speed_factors)

    def text_and_tokens(self, text: str, duration: float) -> tuple[str, int | None]:
        """Normalised text and U; raises ``Unusable`` for an empty or over-long transcript."""
        normalized = checked_text(text)
        if self.count_tokens is None:
            return normalized, None
        tokens = checked_tokens(
            normalized,
            duration,
            count_tokens=self.count_tokens,
            fastest=self._fastest,
            slowest=self._slowest,
        )
        return normalized, tokens

    def check_duration(self, duration: float) -> None:
        if self.min_duration is not None and duration < self.min_duration:
            raise Unusable(SKIP_TOO_SHORT, f"duration {duration:g} s < {self.min_duration:g} s")
        if self.max_duration is not None and duration > self.max_duration:
            raise Unusable(SKIP_TOO_LONG, f"duration {duration:g} s > {self.max_duration:g} s")

    def checked_cut(self, cut: Cut) -> Cut:
        """A lhotse cut with one supervision: its supervisions' texts joined and normalised,
        over the whole cut, and ``custom["num_tokens"]``; raises ``Unusable``."""
        self.check_duration(cut.duration)
        text = " ".join(s.text for s in cut.supervisions if s.text)
        text, tokens = self.text_and_tokens(text, cut.duration)
        supervision = SupervisionSegment(
            id=cut.id,
            recording_id=cut.recording_id,
            start=0.0,
            duration=cut.duration,
            channel=cut.channel,
            text=text,
        )
        custom = {**(cut.custom or {}), **({} if tokens is None else {"num_tokens": tokens})}
        return fastcopy(cut, supervisions=[supervision], custom=custom)

    def skip(self, stats: ManifestStats, line: int | str, reason: str, why: str) -> None:
        """Count a skip once per line (later epochs meet it again), or raise in strict mode.

        ``line`` is the line number, or the cut id where there is none (shards)."""
        if not self.skip_invalid and reason not in _ALWAYS_SKIPPED:
            where, what = (line, why) if isinstance(line, int) else (0, f"cut {line}: {why}")
            raise ManifestError(stats.path, where, f"{what} (fix it, or skip_invalid=True)")
        if (stats.path, line) not in self._seen:
            self._seen.add((stats.path, line))
            stats.skip(reason, line, why)


class LazyPart:
    """One manifest of a ``LazySource``: a ``ManifestIndex`` or a ``LhotseCutFile``."""

    def __init__(self, reader: ManifestIndex | LhotseCutFile, stats: ManifestStats, cut_name: str):
        self.reader = reader
        self.stats = stats
        self.cut_name = cut_name  # cut ids are f"{cut_name}:{line}" for NeMo manifests
        self.weight: float | None = None
        self._count: int | None = None
        self._sample: np.ndarray | None = None
        self._longest: float | None = None

    def __len__(self) -> int:
        if isinstance(self.reader, ManifestIndex):
            return len(self.reader)
        if self._count is None:
            self._count = self.reader.count_lines()
        return self._count

    def durations(self) -> np.ndarray:
        """Seconds: every kept line's (a ``ManifestIndex``) or the first cuts' (a stream)."""
        if isinstance(self.reader, ManifestIndex):
            return self.reader.durations
        if self._sample is None:
            cuts = itertools.islice(self.items(shuffle=False), BUCKET_ESTIMATE_CUTS)
            self._sample = np.array([c.duration for _, c in cuts if isinstance(c, Cut)])
        return self._sample

    def longest(self, bound: float | None) -> float:
        """Seconds: the longest utterance, or ``bound`` for a stream (one pass without it)."""
        if isinstance(self.reader, ManifestIndex):
            return float(self.reader.durations.max(initial=0.0))
        if bound is not None:
            return bound
        if self._longest is None:
            found = (c.duration for _, c in self.items(shuffle=False) if isinstance(c, Cut))
            self._longest = max(found, default=0.0)
        return self._longest

    def items(
        self, *, shuffle: bool, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[int, Utterance | Cut | InvalidLine]]:
        """One pass: ``(line number, Utterance, Cut or InvalidLine)``, shuffled with ``rng``."""
        if isinstance(self.reader, ManifestIndex):
            order = rng.permutation(len(self.reader)) if shuffle else range(len(self.reader))
            return self.reader.utterances(order)
        return _buffer_shuffled(iter(self.reader), rng) if shuffle else iter(self.reader)


class LazySource:
    """Lazily read cuts of ``parts``: checked, shuffled and speed-perturbed per epoch.

    Args:
        parts: the manifests; weights (``LazyPart.weight``) all None or all given.
        checks: the per-cut checks (``CutChecks``).
        shuffle, speed, seed, carry_epoch: as ``rnnt.data.cuts.CutSource``.
        longest_bound: seconds, an upper bound on durations before speed perturbation
            (the split's ``max_duration``): lhotse streams need it to avoid a full pass.
    """

    def __init__(
        self,
        parts: list[LazyPart],
        checks: CutChecks,
        *,
        shuffle: bool = False,
        speed: RandomSpeed | None = None,
        seed: int = SEED,
        carry_epoch: bool = False,
        longest_bound: float | None = None,
    ) -> None:
        self.parts = parts
        self.checks = checks
        self.shuffle = shuffle
        self.speed = speed
        self.seed = seed
        self.carry_epoch = carry_epoch
        self.longest_bound = longest_bound
        self.epoch = 0
        self.weighted = parts[0].weight is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.speed is not None:
            self.speed.epoch = epoch

    def __len__(self) -> int:
        """Cuts per epoch (lines of lhotse streams, skips included)."""
        return sum(len(part) for part in self.parts)

    def durations(self) -> np.ndarray:
        """Seconds: durations standing for the data's (``BucketingSampler`` estimates)."""
        return np.concatenate([part.durations() for part in self.parts])

    def duration_sample(self, count: int) -> list[float]:
        """Seconds: ``count`` durations spread over the data, speed-perturbed at random
        (bucket edges; no cut is read for a ``ManifestIndex``)."""
        durations = self.durations()
        picks = durations[
            np.linspace(0, len(durations) - 1, min(count, len(durations))).astype(int)
        ]
        if self.speed is not None and self.speed.factors:
            rng = np.random.default_rng(self.seed)
            picks = picks / rng.choice(self.speed.factors, size=len(picks))
        return [float(duration) for duration in picks]

    def longest_duration(self) -> float:
        """Seconds: an upper bound on any cut's duration, speed perturbation included."""
        slowest = min(self.speed.factors, default=1.0) if self.speed is not None else 1.0
        longest = max(part.longest(self.longest_bound) for part in self.parts)
        return longest / min(slowest, 1.0)

    def __iter__(self) -> Iterator[Cut]:
        for index, line, item in self._draws():
            cut = self._prepare(self.parts[index], line, item)
            if cut is None:
                continue
            if self.carry_epoch:
                cut = tag_epoch(cut, self.epoch)
            yield self.speed(cut) if self.speed is not None else cut

    def _draws(self) -> Iterator[tuple[int, int, Utterance | Cut | InvalidLine]]:
        """``(part index, line, item)`` in this epoch's order."""
        if not self.shuffle:
            for index, part in enumerate(self.parts):
                for line, item in part.items(shuffle=False):
                    yield index, line, item
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        passes = [0] * len(self.parts)

        def one_pass(index: int) -> Iterator:
            seed = [self.seed, self.epoch, index, passes[index]]
            passes[index] += 1
            return self.parts[index].items(shuffle=True, rng=np.random.default_rng(seed))

        streams = [one_pass(index) for index in range(len(self.parts))]
        if len(streams) == 1 and not self.weighted:
            yield from ((0, *item) for item in streams[0])
        elif self.weighted:
            weights = np.array([part.weight for part in self.parts], dtype=np.float64)
            yield from _weighted(streams, weights / weights.sum(), len(self), rng, one_pass)
        else:
            yield from _proportional(streams, [len(part) for part in self.parts], rng)

    def _prepare(self, part: LazyPart, line: int, item) -> Cut | None:
        try:
            if isinstance(item, InvalidLine):
                raise Unusable(item.reason, item.why)
            if isinstance(item, Utterance):
                text, tokens = self.checks.text_and_tokens(item.text, item.duration)
                return deferred_cut(item, f"{part.cut_name}:{line}", text, tokens)
            return self.checks.checked_cut(item)
        except Unusable as unusable:
            self.checks.skip(part.stats, line, unusable.reason, unusable.why)
            return None


def _proportional(streams: list[Iterator], sizes: list[int], rng: np.random.Generator):
    """Interleave ``streams`` at random, each its whole pass: a shuffled sequence of stream
    labels, ``sizes[i]`` of stream i (a pass yields exactly ``len(part)`` items)."""
    labels = np.repeat(np.arange(len(streams)), sizes)
    rng.shuffle(labels)
    for index in labels.tolist():
        item = next(streams[index], None)
        if item is not None:  # None: the file shrank since it was opened
            yield (index, *item)


def _weighted(streams, shares: np.ndarray, total: int, rng: np.random.Generator, restart):
    """``total`` items, each from stream i with probability ``shares[i]``; a stream that ends
    is restarted (``restart(i)``); one whose new pass is empty too is dropped."""
    shares = shares.copy()
    drawn = 0
    while drawn < total and shares.sum() > 0:
        for index in rng.choice(len(streams), size=min(4096, total - drawn), p=shares):
            if shares[index] == 0:
                continue
            item = next(streams[index], None)
            if item is None:
                streams[index] = restart(index)
                item = next(streams[index], None)
            if item is None:  # nothing usable in it at all
                shares[index] = 0
                if shares.sum() > 0:
                    shares /= shares.sum()
                break
            drawn += 1
            yield (index, *item)
            if drawn >= total:
                return


def _buffer_shuffled(items: Iterator, rng: np.random.Generator) -> Iterator:
    """``items`` in a random order, through a buffer of ``SAMPLER_BUFFER_SIZE``."""
    buffer = list(itertools.islice(items, SAMPLER_BUFFER_SIZE))
    for item in items:
        slot = int(rng.integers(len(buffer)))
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer
