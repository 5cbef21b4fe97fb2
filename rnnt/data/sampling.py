"""Batch sampling: duration buckets, strict bounds on padded audio and on the loss's lattice.

``BucketingSampler`` (lhotse's ``DynamicBucketingSampler``) groups the cuts of a ``CutSource``
by duration (little padding) into batches of at most ``max_duration`` seconds *including
padding* (batch size x longest cut, enforced by ``PaddedDurationConstraint``), at most
``max_cuts`` cuts and at most ``max_lattice_cells`` padded RNN-T lattice cells
B x T' x (U + 1) (``LatticeConstraint``, from each cut's ``custom["num_tokens"]``; a batch
that still exceeds it, because its last cut had more tokens than any before, is split);
``duration_bins`` chooses the bucket edges. Under DDP every rank gets a disjoint share and the
same number of batches. Only durations and token counts are used: no audio is read.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler
from lhotse.dataset.sampling.base import TimeConstraint

from rnnt.constants import BUCKET_ESTIMATE_CUTS, BUCKET_MAX_EDGE_RATIO
from rnnt.data.cuts import CutSource
from rnnt.data.records import encoder_frames

# Perturbed durations are computed through sample counts: allow for their rounding.
LONGEST_MARGIN = 1e-3


@dataclass
class PaddedDurationConstraint(TimeConstraint):
    """Bounds batch size x the longest duration the batch's bucket can hold by ``max_duration``.

    lhotse's ``TimeConstraint`` bounds batch size x the longest cut *seen so far*, so the cut
    that closes a batch can push its padded size over the limit (by up to half of it with wide
    buckets: an out-of-memory error hours into a run). All cuts of a batch come from one
    bucket, whose upper edge is known; bounding with it makes ``B x longest <= max_duration``
    hold for every batch (except a single cut that is longer than the limit on its own).

    ``bucket_edges[i]`` is the longest duration (seconds) bucket ``i`` can hold: the sampler's
    ``duration_bins`` followed by the longest cut of the data.
    """

    bucket_edges: list[float] = field(default_factory=list)

    def close_to_exceeding(self) -> bool:
        if self.max_cuts is not None and self.num_cuts >= self.max_cuts:
            return True
        if self.max_duration is None or not self.bucket_edges:
            return super().close_to_exceeding()
        return (self.num_cuts + 1) * self.longest_possible(self.longest_seen) > self.max_duration

    def longest_possible(self, longest_seen: float) -> float:
        """Seconds: the longest cut a batch whose longest so far is ``longest_seen`` can get."""
        if not self.bucket_edges:
            return longest_seen
        index = min(bisect.bisect_left(self.bucket_edges, longest_seen), len(self.bucket_edges) - 1)
        return max(self.bucket_edges[index], longest_seen)


def cut_tokens(cut: Cut) -> int:
    """U of a cut: its ``custom["num_tokens"]`` (``rnnt.data.records``), 0 where unknown."""
    return int((cut.custom or {}).get("num_tokens") or 0)


def lattice_cells(cuts: Iterable[Cut]) -> int:
    """Padded lattice cells of a batch, B x max T' x (max U + 1): what the loss holds for it."""
    frames = [encoder_frames(cut.duration) for cut in cuts]
    tokens = [cut_tokens(cut) for cut in cuts]
    return len(frames) * max(frames, default=0) * (max(tokens, default=0) + 1)


@dataclass
class LatticeConstraint(PaddedDurationConstraint):
    """``PaddedDurationConstraint`` that also bounds a batch's padded lattice by
    ``max_lattice_cells`` (None: no bound).

    lhotse adds a cut and then asks whether one more would exceed the limits; like its
    duration bound, this one assumes the next cut has no more tokens than the most seen so
    far (and the longest duration of the bucket). A cut with more can still push a batch over:
    ``BucketingSampler`` splits such a batch, so the bound holds for every batch it yields.
    """

    max_lattice_cells: int | None = None
    longest_duration: float = 0.0
    most_tokens: int = 0

    def add(self, example: Cut) -> None:
        super().add(example)
        self.longest_duration = max(self.longest_duration, example.duration)
        self.most_tokens = max(self.most_tokens, cut_tokens(example))

    def _cells(self, num_cuts: int, longest: float) -> int:
        return num_cuts * encoder_frames(longest) * (self.most_tokens + 1)

    def exceeded(self) -> bool:
        if super().exceeded():
            return True
        limit = self.max_lattice_cells
        return limit is not None and self._cells(self.num_cuts, self.longest_duration) > limit

    def close_to_exceeding(self) -> bool:
        if super().close_to_exceeding():
            return True
        limit = self.max_lattice_cells
        longest = self.longest_possible(self.longest_duration)
        return limit is not None and self._cells(self.num_cuts + 1, longest) > limit

    def reset(self) -> None:
        super().reset()
        self.longest_duration = 0.0
        self.most_tokens = 0


def split_by_lattice(cuts: Sequence[Cut], max_cells: int | None) -> list[list[Cut]]:
    """``cuts`` as one batch, or as several (fewest tokens first) that each hold at most
    ``max_cells`` lattice cells; a single cut above the bound stays a batch of its own."""
    if max_cells is None or lattice_cells(cuts) <= max_cells:
        return [list(cuts)]
    pieces: list[list[Cut]] = [[]]
    for cut in sorted(cuts, key=cut_tokens):
        if pieces[-1] and lattice_cells([*pieces[-1], cut]) > max_cells:
            pieces.append([])
        pieces[-1].append(cut)
    return pieces


def duration_bins(
    durations: Sequence[float],
    num_buckets: int,
    longest: float,
    max_edge_ratio: float = BUCKET_MAX_EDGE_RATIO,
) -> list[float]:
    """Bucket edges (seconds, ascending) for ``DynamicBucketingSampler(duration_bins=...)``.

    lhotse's estimate (buckets of equal total duration) from a sample of ``durations``; the
    last bucket, which reaches up to ``longest`` and so may hold a long tail, is split
    geometrically until its edges differ by at most ``max_edge_ratio``, so that bounding a
    batch by its bucket's upper edge wastes little.
    """
    bins: list[float] = []
    per_bucket = sum(durations) / max(num_buckets, 1)
    total = 0.0
    for duration in sorted(durations):  # lhotse's estimate: equal total duration per bucket
        if total > per_bucket and len(bins) < num_buckets - 1:
            bins.append(duration)
            total = 0.0
        total += duration
    bins = sorted(edge for edge in set(bins) if edge < longest)
    low = bins[-1] if bins else min(durations)
    if longest > low > 0:
        pieces = math.ceil(math.log(longest / low) / math.log(max_edge_ratio) - 1e-9)
        bins += [low * (longest / low) ** (j / pieces) for j in range(1, pieces)]
    return bins


class BucketingSampler(DynamicBucketingSampler):
    """``DynamicBucketingSampler`` over a ``CutSource`` with strict padded-duration and
    lattice bounds.

    ``set_epoch`` also reaches the source (new order and speed factors each epoch). Batches
    hold at most ``max_cuts`` cuts, at most ``max_duration`` seconds of padded audio (batch
    size x longest cut) and at most ``max_lattice_cells`` padded lattice cells; ``None`` turns
    a bound off. Under DDP, lhotse would merge the last batches of an epoch and deal them out
    again (mixing cuts of different batches, which could break the lattice bound); the last
    batches are split instead so that their number is a multiple of the world size.

    There is no ``len()``: a training epoch's batches change with its shuffle and speed
    factors, and Lightning ends an epoch after ``len()`` batches (and validates only when it
    reaches that count). ``count_batches`` is exact for the current epoch (a pass over the
    durations), ``estimate_num_batches`` a cheap estimate from the bucket edges.
    """

    def __init__(
        self,
        source: CutSource,
        *,
        max_duration: float | None,
        max_cuts: int | None,
        num_buckets: int,
        max_lattice_cells: int | None = None,
        **kwargs,
    ) -> None:
        self.source = source
        sample = source.duration_sample(BUCKET_ESTIMATE_CUTS)
        longest = source.longest_duration() * (1 + LONGEST_MARGIN)
        bins = duration_bins(sample, num_buckets, longest)
        constraint = LatticeConstraint(
            max_duration=max_duration,
            max_cuts=max_cuts,
            bucket_edges=[*bins, longest],
            max_lattice_cells=max_lattice_cells,
        )
        self.max_lattice_cells = max_lattice_cells
        self._batches: Iterator[CutSet] = iter(())
        self._estimate: int | None = None
        super().__init__(CutSet(source), constraint=constraint, duration_bins=bins, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        if not self.shuffle:  # val/test: the same batches every epoch, so len() stays exact
            return
        super().set_epoch(epoch)
        self.source.set_epoch(epoch)

    def __iter__(self) -> BucketingSampler:
        super().__iter__()
        self._batches = self._bounded_batches()
        return self

    def _next_batch(self) -> CutSet:
        return next(self._batches)  # lhotse deals these out to the ranks, world_size at a time

    def _bounded_batches(self) -> Iterator[CutSet]:
        # Every rank runs this on the same global sequence of batches, so all split alike.
        pending: deque[list[Cut]] = deque()
        yielded = 0
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.world_size:
                try:
                    batch = DynamicBucketingSampler._next_batch(self)
                except StopIteration:
                    exhausted = True
                    _split_to_multiple(pending, self.world_size, yielded)
                else:
                    pending.extend(split_by_lattice(list(batch), self.max_lattice_cells))
            if not pending:
                return
            yielded += 1
            yield CutSet.from_cuts(pending.popleft())

    def count_batches(self) -> int:
        """Exact number of batches this rank gets in the current epoch.

        A dry run of the sampler over durations and token counts (no audio; ~0.1 ms per cut).
        Call it before iterating, not during an iteration.
        """
        return sum(1 for _ in self)  # the next iter() starts the epoch afresh

    def estimate_num_batches(self) -> int:
        """Estimated batches this rank gets per epoch, from the bucket edges alone.

        Each duration bucket is packed with the batch size its upper edge allows (within
        ``max_duration`` and ``max_cuts``); speed perturbation (which averages out) and the
        rare splits for the lattice bound are ignored. Typically within a few percent. The
        same for every epoch, so computed once: a progress bar asks at every batch.
        """
        if self._estimate is None:
            self._estimate = self._estimate_num_batches()
        return self._estimate

    def _estimate_num_batches(self) -> int:
        constraint = self.constraint
        edges = np.asarray(constraint.bucket_edges, dtype=np.float64)
        durations = np.asarray(self.source.durations(), dtype=np.float64)
        counts = np.bincount(
            np.minimum(np.searchsorted(edges, durations), len(edges) - 1), minlength=len(edges)
        ) * (len(self.source) / max(len(durations), 1))  # a lazy source's durations: a sample
        sizes = bucket_batch_sizes(edges, constraint.max_duration, constraint.max_cuts)
        total = int(np.ceil(counts / sizes).sum()) if np.isfinite(sizes).all() else 1
        return max(1, math.ceil(total / self.world_size))


def bucket_batch_sizes(
    edges: np.ndarray, max_duration: float | None, max_cuts: int | None
) -> np.ndarray:
    """Cuts a full batch of each bucket holds: ``min(max_cuts, floor(max_duration / edge))``,
    at least 1 (``inf`` where neither bound is set); ``edges`` are the buckets' upper edges (s)."""
    sizes = np.full(len(edges), np.inf)
    if max_duration is not None:
        sizes = np.maximum(1.0, np.floor(max_duration / edges))
    if max_cuts is not None:
        sizes = np.minimum(sizes, max_cuts)
    return sizes


def _split_to_multiple(pending: deque[list[Cut]], world_size: int, yielded: int) -> None:
    """Split the largest of the last batches until all the epoch's batches are a multiple of
    ``world_size`` (or every one left holds a single cut)."""
    while (yielded + len(pending)) % world_size:
        largest = max(range(len(pending)), key=lambda index: len(pending[index]), default=None)
        if largest is None or len(pending[largest]) < 2:
            return
        cuts = pending[largest]
        pending[largest] = cuts[: len(cuts) // 2]
        pending.insert(largest + 1, cuts[len(cuts) // 2 :])
