"""Data-loader pieces: skip failed batches, resume an epoch mid-way, keep workers alive on stop.

``TransducerDataModule`` (``rnnt.data.datamodule``) builds its loaders from these:
``SkippingDataLoader`` passes over batches whose every utterance failed to load and knows
how many batches to expect, ``ResumedSampler`` starts a resumed epoch after the batches
already trained on, and ``ignore_stop_signals`` is the workers' ``worker_init_fn``.
"""

from __future__ import annotations

import signal

from torch.utils.data import DataLoader

from rnnt.data.sampling import BucketingSampler


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers ignore SIGTERM, SIGINT, SIGUSR1 and SIGUSR2.

    Schedulers (SLURM, systemd) signal every process of a job, and Ctrl-C the whole process
    group, workers included. A worker killed by the signal would fail the run before the main
    process saves its checkpoint (``rnnt.callbacks.StopOnSignal``); workers end with the main
    process anyway.
    """
    for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"):
        signal.signal(signal.Signals[name], signal.SIG_IGN)


class ResumedSampler:
    """Iterates ``sampler`` (lhotse's, rank-aware) but starts its next epoch ``skip`` batches in.

    Only batch boundaries (cut durations) are computed for the skipped batches: no audio is
    read. Later epochs start from the beginning.
    """

    def __init__(self, sampler: BucketingSampler, skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def estimate_num_batches(self) -> int:
        """The sampler's estimate, less the batches this epoch skips."""
        return max(1, self.sampler.estimate_num_batches() - self.skip)

    def __iter__(self):
        iterator = iter(self.sampler)
        for _ in range(self.skip):
            if next(iterator, None) is None:
                break
        self.skip = 0
        return iterator


class SkippingDataLoader(DataLoader):
    """A ``DataLoader`` that passes over ``None`` batches (every utterance failed to load).

    ``len()`` exists only once ``exact_length`` is set (val/test, whose batches are the same
    every epoch): it is then the sampler's exact count (fewer if whole batches fail to load).
    A training loader has none: Lightning would end every epoch after that many batches and
    run the epoch-end validation only on reaching it, so a count that changes with each
    epoch's shuffle and speed factors would drop data or skip validation.
    ``estimated_length`` is the sampler's estimate for any loader (a progress bar's total).
    """

    exact_length = False  # set True on val/test loaders: len() is then the exact batch count
    _length: int | None = None

    def __len__(self) -> int:
        if not self.exact_length:
            raise TypeError("a training loader's number of batches changes every epoch")
        if self._length is None:
            self._length = self.sampler.count_batches()
        return self._length

    @property
    def estimated_length(self) -> int:
        """Batches expected this epoch, estimated (``BucketingSampler.estimate_num_batches``)."""
        return self.sampler.estimate_num_batches()

    def __iter__(self):
        for batch in super().__iter__():
            if batch is not None:
                yield batch
