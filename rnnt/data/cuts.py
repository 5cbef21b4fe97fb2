"""Audio records -> lhotse cuts, lazily: ``CutSource``, shuffled and speed-perturbed per epoch.

The duration-bucketing sampler (``rnnt.data.sampling``) iterates a ``CutSource``; training
cuts are perturbed here, *before* the sampler, so its ``max_duration`` counts perturbed
durations. Records come from ``rnnt.data.records``; the cuts' audio is decoded in the
data-loader workers (``rnnt.data.audio``).
"""

from __future__ import annotations

import random

from rnnt.constants import SEED
from rnnt.data.augment import RandomSpeed
from rnnt.data.records import AudioRecord


class CutSource:
    """Lazily yields the cuts of ``records``: shuffled and speed-perturbed per epoch if asked.

    The order and speed factors depend only on (seed, epoch), so every DDP rank iterates the
    same cuts with the same durations, which the lhotse sampler needs to split them.
    """

    def __init__(
        self,
        records: list[AudioRecord],
        *,
        shuffle: bool = False,
        speed: RandomSpeed | None = None,
        seed: int = SEED,
    ) -> None:
        self.records = records
        self.shuffle = shuffle
        self.speed = speed
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.speed is not None:
            self.speed.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

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
            yield self.speed(cut) if self.speed is not None else cut
