"""Audio records -> lhotse cuts, lazily: ``CutSource``, shuffled and speed-perturbed per epoch.

The duration-bucketing sampler (``rnnt.data.sampling``) iterates a ``CutSource``; training
cuts are perturbed here, *before* the sampler, so its ``max_duration`` counts perturbed
durations. Records come from ``rnnt.data.records``; the cuts' audio is decoded in the
data-loader workers (``rnnt.data.audio``).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
from lhotse.cut import Cut

from rnnt.constants import SEED
from rnnt.data.augment import RandomSpeed
from rnnt.data.records import AudioRecord

EPOCH_FIELD = "epoch"  # cut.custom key: the training epoch a cut was drawn for


def tag_epoch(cut: Cut, epoch: int) -> Cut:
    """A copy of ``cut`` that carries ``epoch`` to the data-loader workers (``cut_epoch``)."""
    return cut.with_custom(EPOCH_FIELD, int(epoch))


def cut_epoch(cut: Cut) -> int:
    """The epoch ``tag_epoch`` put on ``cut``; 0 for an untagged cut."""
    return int((cut.custom or {}).get(EPOCH_FIELD, 0))


class CutSource:
    """Lazily yields the cuts of ``records``: shuffled and speed-perturbed per epoch if asked.

    The order and speed factors depend only on (seed, epoch), so every DDP rank iterates the
    same cuts with the same durations, which the lhotse sampler needs to split them. With
    ``carry_epoch`` each cut also carries its epoch (``tag_epoch``): persistent workers never
    see ``set_epoch``, and per-epoch augmentation in them needs it.
    """

    def __init__(
        self,
        records: list[AudioRecord],
        *,
        shuffle: bool = False,
        speed: RandomSpeed | None = None,
        seed: int = SEED,
        carry_epoch: bool = False,
    ) -> None:
        self.records = records
        self.shuffle = shuffle
        self.speed = speed
        self.seed = seed
        self.carry_epoch = carry_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.speed is not None:
            self.speed.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def durations(self) -> np.ndarray:
        """(N,) seconds: every record's duration, before speed perturbation."""
        return np.fromiter((record.duration for record in self.records), dtype=np.float64)

    def duration_sample(self, count: int) -> list[float]:
        """Seconds: the first ``count`` cuts' durations of this epoch (bucket edges)."""
        return [cut.duration for cut in itertools.islice(self, count)]

    def longest_duration(self) -> float:
        """Seconds: an upper bound on any cut's duration, speed perturbation included."""
        slowest = min(self.speed.factors, default=1.0) if self.speed is not None else 1.0
        return max(record.duration for record in self.records) / min(slowest, 1.0)

    def __iter__(self):
        order = range(len(self.records))
        if self.shuffle:
            order = list(order)
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        for index in order:
            cut = self.records[index].to_cut()
            if self.carry_epoch:
                cut = tag_epoch(cut, self.epoch)
            yield self.speed(cut) if self.speed is not None else cut
