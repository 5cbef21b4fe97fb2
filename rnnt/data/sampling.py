"""Batch sampling: duration buckets and a strict bound on padded audio per batch.

``BucketingSampler`` (lhotse's ``DynamicBucketingSampler``) groups the cuts of a ``CutSource``
by duration (little padding) into batches of at most ``max_duration`` seconds *including
padding* (batch size x longest cut, enforced by ``PaddedDurationConstraint``) and at most
``max_cuts`` cuts; ``duration_bins`` chooses the bucket edges. Under DDP every rank gets a
disjoint share and the same number of batches. Only durations are used: no audio is read.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from lhotse.dataset.sampling.base import TimeConstraint

from rnnt.constants import BUCKET_ESTIMATE_CUTS, BUCKET_MAX_EDGE_RATIO
from rnnt.data.cuts import CutSource

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
        index = min(
            bisect.bisect_left(self.bucket_edges, self.longest_seen), len(self.bucket_edges) - 1
        )
        longest_possible = max(self.bucket_edges[index], self.longest_seen)
        return (self.num_cuts + 1) * longest_possible > self.max_duration


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
    """``DynamicBucketingSampler`` over a ``CutSource`` with a strict padded-duration bound.

    ``set_epoch`` also reaches the source (new order and speed factors each epoch). Batches
    hold at most ``max_cuts`` cuts and at most ``max_duration`` seconds of padded audio
    (batch size x longest cut); ``None`` turns a bound off.
    """

    def __init__(
        self,
        source: CutSource,
        *,
        max_duration: float | None,
        max_cuts: int | None,
        num_buckets: int,
        **kwargs,
    ) -> None:
        self.source = source
        sample = [cut.duration for cut in itertools.islice(source, BUCKET_ESTIMATE_CUTS)]
        longest = source.longest_duration() * (1 + LONGEST_MARGIN)
        bins = duration_bins(sample, num_buckets, longest)
        constraint = PaddedDurationConstraint(
            max_duration=max_duration, max_cuts=max_cuts, bucket_edges=[*bins, longest]
        )
        super().__init__(CutSet(source), constraint=constraint, duration_bins=bins, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.source.set_epoch(epoch)
