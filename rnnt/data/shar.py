"""Training from lhotse Shar shards: the set's index, each rank's endless stream, its sampler.

A shard set (``rnnt shard``, ``rnnt.data.shar_writer``) is a folder of lhotse Shar shards, per
shard a ``cuts.NNNNNN.jsonl.gz`` (the cuts, with the manifest's own transcripts) and a
``recording.NNNNNN.tar`` (each cut's audio, encoded), and the index ``shards.json``
(``rnnt.data.shar_index``: files, sizes, each cut's duration), checked against the files at
setup. The index's durations size the buckets and the epochs.

Under DDP each rank reads only its own shards (``ShardSource``): every epoch the shards are
shuffled, seeded by (seed, epoch), and dealt round-robin, so the ranks read disjoint shards whose
union is the set, each about 1/world_size of the bytes. Their shares differ by up to a shard, and
DDP needs the same number of steps on every rank, so a rank's stream is endless: after its shards
it reads them again, reshuffled for each pass by (seed, epoch, rank, pass). ``ShardSampler``
batches it with ``BucketingSampler`` (world size 1: the stream is this rank's alone) and takes
exactly N batches per epoch on every rank, N being the set's batches (estimated from the index
with the bucket edges and speed factors) divided by the world size.

The trade-off: an epoch is N batches, not exactly one pass over the set. A rank whose shards hold
more than its share leaves their last cuts unread this epoch, and one whose shards hold less
starts over and sees some twice; the next epoch deals the shards anew, so across epochs every cut
is drawn about equally often. Make many shards per rank (hundreds of utterances each) to keep
the shares even. The batches are a deterministic function of (seed, epoch, rank), which is what
resuming mid-epoch (``rnnt.data.loader.ResumedSampler``: skip the first k) relies on.

Cuts hold their encoded audio in memory (read from the tar in the main process, decoded by
``rnnt.data.audio.load_mono`` in the workers), so the sampler's buffer costs host memory:
``SHAR_SAMPLER_BUFFER_SIZE`` cuts per rank. A shard that fails to read part-way (truncated,
corrupt tar) loses the rest of its cuts, counted in ``num_unreadable`` with a warning naming the
file; audio that does not decode is the workers' counted skip, as for audio files.
"""

from __future__ import annotations

import itertools
import logging
import random
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from lhotse.cut import Cut
from lhotse.shar import LazySharIterator

from rnnt.constants import (
    NUM_BUCKETS,
    SEED,
    SHAR_SAMPLER_BUFFER_SIZE,
)
from rnnt.data.augment import RandomSpeed
from rnnt.data.cuts import tag_epoch
from rnnt.data.sampling import BucketingSampler, bucket_batch_sizes
from rnnt.data.shar_index import DURATION_DECIMALS, Shard, read_shard_index

logger = logging.getLogger(__name__)

# What reading a damaged shard raises: tarfile, gzip and JSON errors, lhotse's RuntimeError for
# an odd number of tar members and AssertionError for a member that is not the cut's.
READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, RuntimeError)
READ_ERRORS += (AssertionError,)


class ShardSource:
    """One rank's cuts from a shard set: its own shards, per epoch, endlessly (see the module).

    The shard order and every speed factor depend only on (seed, epoch, rank), so the stream is
    reproducible. Each cut read goes through ``prepare`` (the caller's text normalisation and
    token count; ``None`` skips the cut, counted in ``num_skipped``), gets its epoch when
    ``carry_epoch`` (``rnnt.data.cuts.tag_epoch``: persistent workers never see ``set_epoch``),
    then its speed factor (``speed``, before the sampler, which must see perturbed durations).
    With ``endless=False`` one pass over this rank's shards is read (tests, checks).

    Raises:
        FileNotFoundError, ValueError: from ``read_shard_index``; ValueError when the set has
            fewer shards than ranks.
    """

    def __init__(
        self,
        shar_dir: str | Path,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = SEED,
        speed: RandomSpeed | None = None,
        carry_epoch: bool = False,
        prepare: Callable[[Cut], Cut | None] | None = None,
        endless: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.index = read_shard_index(shar_dir)
        shards = len(self.index.shards)
        if shards < world_size:
            raise ValueError(
                f"{self.index.path}: {shards} shards for {world_size} ranks; each rank reads "
                "shards of its own: re-run rnnt shard with a smaller --shard-size (at most "
                f"{max(1, self.index.num_cuts // world_size)}, better several shards per rank)"
            )
        if shards % world_size:
            logger.warning(
                "%s: %d shards over %d ranks: some ranks hold one shard more than others, and "
                "an epoch repeats or leaves out more of their cuts; a multiple of %d is best",
                self.index.path,
                shards,
                world_size,
                world_size,
            )
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.speed = speed
        self.carry_epoch = carry_epoch
        self.prepare = prepare
        self.endless = endless
        self.epoch = 0
        self.num_skipped = 0  # cuts ``prepare`` refused
        self.num_unreadable = 0  # cuts lost to shards that could not be read to their end

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.speed is not None:
            self.speed.epoch = epoch

    def __len__(self) -> int:
        """Cuts per rank per epoch: the set's share of one rank (the stream itself is endless)."""
        return max(1, round(self.index.num_cuts / self.world_size))

    def durations(self) -> np.ndarray:
        """(num_cuts,) seconds of every cut of the set (all ranks'), unperturbed, from the index."""
        return self.index.durations()

    def duration_sample(self, count: int) -> list[float]:
        """Seconds: ``count`` cut durations for the sampler's bucket edges, read from the index.

        The first ``count`` of the whole set in this epoch's shard order, each divided by a
        speed factor drawn with a seeded generator (the cuts' own factors need their ids):
        the same on every rank, so every rank gets the same edges and the same number of
        batches. No shard file is opened.
        """
        durations = [d for s in self.shard_order() for d in self.index.shards[s].durations]
        durations = durations[:count]
        if self.speed is None or not self.speed.factors:
            return durations
        draw = random.Random(f"{self.seed}:{self.epoch}:sample")
        return [duration / draw.choice(self.speed.factors) for duration in durations]

    def longest_duration(self) -> float:
        """Seconds: an upper bound on any cut's duration, speed perturbation included."""
        slowest = min(self.speed.factors, default=1.0) if self.speed is not None else 1.0
        longest = max(max(shard.durations) for shard in self.index.shards)
        return (longest + 0.5 * 10**-DURATION_DECIMALS) / min(slowest, 1.0)

    def shard_order(self, epoch: int | None = None) -> list[int]:
        """The set's shards (indices into ``index.shards``) in ``epoch``'s order, all ranks'."""
        order = list(range(len(self.index.shards)))
        random.Random(f"{self.seed}:{self.epoch if epoch is None else epoch}").shuffle(order)
        return order

    def rank_shards(self, epoch: int | None = None, pass_index: int = 0) -> list[int]:
        """This rank's shards, in the order its ``pass_index``-th pass of ``epoch`` reads them."""
        epoch = self.epoch if epoch is None else epoch
        shards = self.shard_order(epoch)[self.rank :: self.world_size]
        if pass_index:
            random.Random(f"{self.seed}:{epoch}:{self.rank}:{pass_index}").shuffle(shards)
        return shards

    def __iter__(self) -> Iterator[Cut]:
        epoch = self.epoch
        for pass_index in itertools.count():
            yielded = 0
            for shard in self.rank_shards(epoch, pass_index):
                for cut in self._read(self.index.shards[shard]):
                    cut = self._finish(cut, epoch)
                    if cut is not None:
                        yielded += 1
                        yield cut
            if not self.endless:
                return
            if not yielded:  # an endless stream that yields nothing would hang the sampler
                names = ", ".join(self.index.shards[s].recording.name for s in self.rank_shards())
                raise ValueError(
                    f"rank {self.rank} read no usable cut in a whole pass over its shards of "
                    f"{self.index.folder} ({names}); see the warnings above"
                )

    def _finish(self, cut: Cut, epoch: int) -> Cut | None:
        if cut.custom:
            cut.custom.pop("shar_epoch", None)  # the reader's pass counter; ours is the epoch tag
        if self.prepare is not None:
            prepared = self.prepare(cut)
            if prepared is None:
                self.num_skipped += 1
                return None
            cut = prepared
        if self.carry_epoch:
            cut = tag_epoch(cut, epoch)
        return self.speed(cut) if self.speed is not None else cut

    def _read(self, shard: Shard) -> Iterator[Cut]:
        fields = {"cuts": [str(shard.cuts)], "recording": [str(shard.recording)]}
        cuts = iter(LazySharIterator(fields=fields))
        count = 0
        while True:
            try:
                cut = next(cuts)
            except StopIteration:
                break
            except READ_ERRORS as error:
                self._lost(shard, count, f"{type(error).__name__}: {' '.join(str(error).split())}")
                return
            count += 1
            yield cut
        if count < shard.num_cuts:  # a damaged tar header reads as the archive's end
            self._lost(shard, count, "the archive ends early")

    def _lost(self, shard: Shard, count: int, why: str) -> None:
        lost = shard.num_cuts - count
        self.num_unreadable += lost
        logger.warning(
            "shard %s unreadable after %d of its %d cuts (%s); skipping the other %d; %d cuts "
            "lost to unreadable shards so far",
            shard.recording,
            count,
            shard.num_cuts,
            why[:300],
            lost,
            self.num_unreadable,
        )


class ShardSampler:
    """Exactly ``num_batches`` duration-bucketed batches per epoch from a rank's ``ShardSource``.

    ``BucketingSampler`` (strict padded-duration and lattice bounds) runs on the rank's own
    stream with world size 1. Its bucket edges come from the index's durations
    (``ShardSource.duration_sample``), the same on every rank; so is ``num_batches``
    (``estimate_rank_batches``), and DDP ranks step together. Usable where
    the loaders take a ``BucketingSampler``: ``set_epoch``, iteration (lhotse ``CutSet``
    batches), ``estimate_num_batches`` and ``count_batches`` (both exact: ``num_batches``),
    ``world_size`` and ``rank`` (the DDP layout, for the dataset's stand-in batches), and inside
    ``rnnt.data.loader.ResumedSampler``.
    """

    def __init__(
        self,
        source: ShardSource,
        *,
        max_duration: float | None,
        max_cuts: int | None,
        num_buckets: int = NUM_BUCKETS,
        max_lattice_cells: int | None = None,
        buffer_size: int = SHAR_SAMPLER_BUFFER_SIZE,
        seed: int = SEED,
    ) -> None:
        if max_duration is None and max_cuts is None:
            raise ValueError("training from shards needs max_duration or max_cuts per batch")
        self.source = source
        # The buffer fills from the endless stream: more than a rank's share would hold copies.
        buffer_size = max(1, min(buffer_size, source.index.num_cuts // source.world_size))
        self.sampler = BucketingSampler(
            source,
            max_duration=max_duration,
            max_cuts=max_cuts,
            num_buckets=num_buckets,
            max_lattice_cells=max_lattice_cells,
            shuffle=True,
            drop_last=False,
            buffer_size=buffer_size,
            seed=seed,
            world_size=1,
            rank=0,
        )
        # The sampler's edges come from the index alone (duration_sample): N is the same on
        # every rank.
        self.num_batches = estimate_rank_batches(
            source.durations(),
            self.sampler.constraint.bucket_edges,
            max_duration=max_duration,
            max_cuts=max_cuts,
            speed_factors=source.speed.factors if source.speed is not None else (),
            world_size=source.world_size,
        )

    @property
    def world_size(self) -> int:
        return self.source.world_size

    @property
    def rank(self) -> int:
        return self.source.rank

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)  # reaches the source: new shard order and speed factors

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.sampler), self.num_batches)

    def __len__(self) -> int:
        return self.num_batches

    def estimate_num_batches(self) -> int:
        """Batches per epoch on this rank: exactly ``num_batches``."""
        return self.num_batches

    def count_batches(self) -> int:
        """Batches per epoch on this rank: exactly ``num_batches`` (nothing is read)."""
        return self.num_batches


def make_shard_sampler(source: ShardSource, **kwargs) -> ShardSampler:
    """The training sampler of ``source``; ``kwargs`` as ``ShardSampler`` takes them."""
    return ShardSampler(source, **kwargs)


def estimate_rank_batches(
    durations: np.ndarray,
    bucket_edges: Sequence[float],
    *,
    max_duration: float | None,
    max_cuts: int | None,
    speed_factors: Sequence[float],
    world_size: int,
) -> int:
    """Batches per rank that one pass over ``durations`` (seconds) makes, rounded.

    A cut goes to the first bucket whose upper edge holds it, and bucket i's batches hold
    ``min(max_cuts, floor(max_duration / edge_i))`` cuts (the sampler's padded-duration bound);
    an endless stream leaves no partial batch. Each speed factor is drawn equally often, so
    the count is averaged over the factors. Lattice-bound splits are rare and ignored.
    """
    edges = np.asarray(bucket_edges, dtype=np.float64)
    sizes = bucket_batch_sizes(edges, max_duration, max_cuts)
    factors = [float(factor) for factor in speed_factors] or [1.0]
    batches = 0.0
    for factor in factors:
        buckets = np.minimum(np.searchsorted(edges, durations / factor), len(edges) - 1)
        batches += float((np.bincount(buckets, minlength=len(edges)) / sizes).sum())
    return max(1, round(batches / len(factors) / world_size))
