"""Data-loader pieces: skip failed batches, resume an epoch mid-way, keep workers alive on stop.

``TransducerDataModule`` (``rnnt.data.datamodule``) builds its loaders from these:
``SkippingDataLoader`` passes over batches whose every utterance failed to load,
``ResumedSampler`` starts a resumed epoch after the batches already trained on, and
``ignore_stop_signals`` is the workers' ``worker_init_fn``.
"""

from __future__ import annotations

import signal

from torch.utils.data import DataLoader

from rnnt.data.sampling import BucketingSampler


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers ignore SIGTERM, SIGUSR1 and SIGUSR2.

    Schedulers (SLURM, systemd) signal every process of a job, workers included. A worker
    killed by the signal would fail the run before the main process saves its checkpoint
    (``rnnt.callbacks.StopOnSignal``); workers end with the main process anyway.
    """
    for name in ("SIGTERM", "SIGUSR1", "SIGUSR2"):
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

    def __iter__(self):
        iterator = iter(self.sampler)
        for _ in range(self.skip):
            if next(iterator, None) is None:
                break
        self.skip = 0
        return iterator


class SkippingDataLoader(DataLoader):
    """A ``DataLoader`` that passes over ``None`` batches (every utterance failed to load)."""

    def __iter__(self):
        for batch in super().__iter__():
            if batch is not None:
                yield batch
