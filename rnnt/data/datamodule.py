"""The training data pipeline as a LightningDataModule: manifests -> cuts -> buckets -> batches.

``TransducerDataModule`` is what ``rnnt fit|validate|test`` use. The pieces:

* manifests are validated by ``read_manifest`` and each utterance becomes an audio record
  (header read, any rate or channel count soundfile reads): ``rnnt.data.records``; its
  lhotse cut is resampled to 16 kHz and averaged to mono while loading: ``rnnt.data.audio``.
  Large manifests, lhotse cut manifests and weighted lists of them are read lazily instead,
  no audio file opened before a worker loads it: ``rnnt.data.sources``;
* training cuts are shuffled per epoch and speed-perturbed *before* the sampler, so the
  sampler's ``max_duration`` counts perturbed durations (``CutSource``, ``rnnt.data.cuts``);
* every transcript is tokenized at setup: one with more tokens than its audio's encoder
  frames can emit is skipped (``text_too_long_for_audio``), and its count rides with the cut;
* ``BucketingSampler`` (lhotse's ``DynamicBucketingSampler`` with strict bounds) groups cuts
  of similar duration (little padding) into batches of at most ``max_batch_duration`` seconds
  *including padding* (batch size x longest cut), at most ``batch_size`` cuts and at most
  ``MAX_BATCH_LATTICE_CELLS`` padded lattice cells B x T' x (U+1) (the loss's memory); under
  DDP every rank gets a disjoint share and the same number of batches: ``rnnt.data.sampling``;
* ``TransducerDataset`` runs in the workers: loads audio, adds background noise and channel
  effects (training: reverb, gain and clipping, telephone line, ``rnnt.data.channels``; their
  per-utterance draws need the epoch, which training cuts carry from the sampler), tokenizes,
  pads; its batch dicts are described in ``rnnt.data.dataset``. Unreadable audio and
  invalid targets are skipped with a warning and a running count;
* the loaders skip batches that failed entirely and resume mid-epoch; val/test loaders have
  an exact ``len()``, every loader an ``estimated_length`` (progress bars): ``rnnt.data.loader``.

Under DDP, build the Trainer with ``use_distributed_sampler=False``: the lhotse sampler
already splits the data by rank, and Lightning would otherwise wrap it a second time.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from rnnt.arguments import DATA_RULES, check_arguments
from rnnt.constants import (
    BATCH_SIZE,
    BG_NOISE_PATH,
    CHANNELS_START_EPOCH,
    CLIPPING_PROBABILITY,
    MAX_BATCH_DURATION,
    MAX_BATCH_LATTICE_CELLS,
    MAX_DECODE_DURATION,
    MAX_UTTERANCE_DURATION,
    MIN_UTTERANCE_DURATION,
    NOISE_PROBABILITY,
    NOISE_SNR_RANGE_DB,
    NUM_BUCKETS,
    NUM_WORKERS,
    REVERB_PROBABILITY,
    SAMPLE_RATE,
    SAMPLER_BUFFER_SIZE,
    SEED,
    SPEED_PERTURB_FACTORS,
    TELEPHONE_PROBABILITY,
    TEST_MANIFEST,
    TOKENIZER_MODEL_PATH,
    TRAIN_MANIFEST,
    VAL_MANIFEST,
)
from rnnt.data.augment import BackgroundNoise, NoiseSource, RandomSpeed
from rnnt.data.channels import ChannelAugment
from rnnt.data.dataset import TransducerDataset
from rnnt.data.loader import ResumedSampler, SkippingDataLoader, ignore_stop_signals
from rnnt.data.manifest_stats import ManifestStats
from rnnt.data.sampling import BucketingSampler
from rnnt.data.shar import ShardSampler
from rnnt.data.sources import (
    ManifestSpec,
    SplitData,
    log_unknown_characters,
    open_shards,
    open_split,
    shard_sampler,
)
from rnnt.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class TransducerDataModule(pl.LightningDataModule):
    """Train/val/test data for ``rnnt fit|validate|test``; every default comes from constants.

    Args:
        train_manifest, val_manifest: JSON-lines manifests.
        test_manifest: one test manifest, or a list of them: ``rnnt test`` scores each in turn
            (``test_manifests``; ``rnnt.test_sets.score_test_sets``); a plain
            ``trainer.test`` scores the first (or the one ``use_test_manifest`` chose).
        tokenizer_path: SentencePiece model (``rnnt tokenizer`` writes it).
        noise_path: folder of background noise audio (searched recursively); None: no noise.
        max_batch_duration: seconds of audio per batch, padding included (B x longest);
            None: batches of exactly ``batch_size`` utterances (still duration-bucketed).
        batch_size: most utterances per batch (a cap next to ``max_batch_duration``).
        num_workers: data-loader worker processes per rank (0: load in the main process).
        num_buckets: duration buckets of equal total duration; the last one (the long tail)
            is split further until its edges differ by at most ``BUCKET_MAX_EDGE_RATIO``.
        speed_perturb: speed factors, one drawn per training utterance and epoch; [] = off.
        noise_probability: chance a training utterance gets noise.
        snr_range_db: [low, high] dB, the noise SNR is drawn uniformly from it.
        reverb_probability: chance a training utterance goes through a simulated room.
        telephone_probability: chance it goes through a telephone line (8 kHz, 300-3400 Hz,
            G.711 mu-law).
        clipping_probability: chance it gets a random gain and hard clipping.
        channels_start_epoch: the three channel effects start at this epoch (0: at once).
        min_duration, max_duration: seconds; training utterances outside are skipped.
        max_eval_duration: seconds; longer val/test utterances are skipped (the model would
            run on each in one piece); None: no limit.
        skip_invalid: skip bad manifest lines and unreadable audio (with a warning) instead
            of stopping with an error naming file:line. Skips at setup are counted per split
            in ``setup_stats``, skips while loading audio in ``num_skipped_utterances``.
        read_headers: read every audio file's header at setup (exact checks before training;
            a file open per utterance); False: read manifests lazily, checking audio as the
            workers load it; None: only for one NeMo manifest of up to
            ``HEADER_READ_MAX_BYTES`` (``rnnt.data.sources``).
        shar_dir: train from this lhotse Shar shard set (``rnnt shard``) instead of
            ``train_manifest``: each DDP rank reads its own shards, and an epoch is a fixed
            number of batches, about one pass (``rnnt.data.shar``).
        seed: shuffling, speed factors and bucket choice.
        world_size, rank: override the DDP layout (testing); None: from torch.distributed.
    """

    def __init__(
        self,
        train_manifest: ManifestSpec = TRAIN_MANIFEST,
        val_manifest: str = VAL_MANIFEST,
        test_manifest: str | list[str] = TEST_MANIFEST,
        tokenizer_path: str = TOKENIZER_MODEL_PATH,
        noise_path: str | None = BG_NOISE_PATH,
        max_batch_duration: float | None = MAX_BATCH_DURATION,
        batch_size: int | None = BATCH_SIZE,
        num_workers: int = NUM_WORKERS,
        num_buckets: int = NUM_BUCKETS,
        speed_perturb: list[float] = SPEED_PERTURB_FACTORS,
        noise_probability: float = NOISE_PROBABILITY,
        snr_range_db: list[float] = NOISE_SNR_RANGE_DB,
        reverb_probability: float = REVERB_PROBABILITY,
        telephone_probability: float = TELEPHONE_PROBABILITY,
        clipping_probability: float = CLIPPING_PROBABILITY,
        channels_start_epoch: int = CHANNELS_START_EPOCH,
        min_duration: float = MIN_UTTERANCE_DURATION,
        max_duration: float = MAX_UTTERANCE_DURATION,
        max_eval_duration: float | None = MAX_DECODE_DURATION,
        skip_invalid: bool = True,
        read_headers: bool | None = None,
        shar_dir: str | None = None,
        seed: int = SEED,
        world_size: int | None = None,
        rank: int | None = None,
    ) -> None:
        check_arguments("data", DATA_RULES, locals())  # one line naming a wrong --data.* value
        super().__init__()
        self.save_hyperparameters()
        self.train_manifest = train_manifest
        self.val_manifest = val_manifest
        many = isinstance(test_manifest, (list, tuple))
        self.test_manifests = list(test_manifest) if many else [test_manifest]
        self.test_manifest = self.test_manifests[0]  # the one test_dataloader reads
        self.tokenizer_path = tokenizer_path
        self.noise_path = noise_path
        self.max_batch_duration = max_batch_duration
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_buckets = num_buckets
        self.speed_perturb = list(speed_perturb)
        self.noise_probability = noise_probability
        self.snr_range_db = list(snr_range_db)
        self.channels = ChannelAugment(
            reverb_probability,
            telephone_probability,
            clipping_probability,
            start_epoch=channels_start_epoch,
            seed=seed,
        )
        self.min_duration = min_duration
        self.max_duration = max_duration
        self.max_eval_duration = max_eval_duration
        self.skip_invalid = skip_invalid
        self.read_headers = read_headers
        self.shar_dir = shar_dir
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self._tokenizer: Tokenizer | None = None
        self._splits: dict[str, SplitData] = {}
        self.setup_stats: dict[str, ManifestStats] = {}
        self._noise: NoiseSource | None = None
        self._datasets: list[TransducerDataset] = []
        self._resume_at: tuple[int, int] | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The SentencePiece tokenizer at ``tokenizer_path`` (loaded once)."""
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.load(self.tokenizer_path)
        return self._tokenizer

    @property
    def num_skipped_utterances(self) -> int:
        """Utterances skipped so far for unreadable audio in this process's loaders."""
        return sum(dataset.num_skipped for dataset in self._datasets)

    def setup(self, stage: str | None = None) -> None:
        """Validate the manifests the stage needs (errors name file:line) and read headers.

        ``fit``: train and val; ``validate``: val; ``test``: test; None: all three. Duration
        filtering (``min_duration``/``max_duration``) applies to training only: val and test
        are scored on every utterance up to ``max_eval_duration``. Every split's transcripts
        are tokenized and checked against their audio (``text_too_long_for_audio``,
        ``lattice_too_large``: ``rnnt.data.records``). What each split skipped is kept in
        ``setup_stats``; transcripts with characters the tokenizer never saw are logged (they
        train on the unknown piece). Only rank 0 logs the progress of a long scan.
        """
        splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": (),
        }.get(stage or "", ("train", "val", "test"))
        _ = self.tokenizer  # a missing tokenizer should stop us before any audio is read
        for split in splits:
            if split in self._splits:
                continue
            is_train = split == "train"
            bounds = dict(
                min_duration=self.min_duration if is_train else None,
                max_duration=self.max_duration if is_train else self.max_eval_duration,
                skip_invalid=self.skip_invalid,
                count_tokens=self._count_tokens,
                speed_factors=self.speed_perturb if is_train else (),
            )
            if is_train and self.shar_dir is not None:
                data = open_shards(self.shar_dir, **bounds)
            else:
                data = open_split(
                    getattr(self, f"{split}_manifest"),
                    field=f"{split}_manifest",
                    progress=self._is_rank_zero(),
                    read_headers=self.read_headers,
                    **bounds,
                )
            self.setup_stats[split] = data.stats
            if data.records is not None:
                log_unknown_characters(data.stats.path, data.records, self.tokenizer)
            self._splits[split] = data
        if "train" in splits and self._noise is None and self._uses_noise():
            self._noise = NoiseSource(self.noise_path, SAMPLE_RATE)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode_normalized(text))  # records hold normalised text

    def _layout(self) -> tuple[int, int]:
        """(world size, rank): the constructor's, else torch.distributed's, else (1, 0)."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        world_size = self.world_size or (torch.distributed.get_world_size() if distributed else 1)
        rank = (
            self.rank
            if self.rank is not None
            else (torch.distributed.get_rank() if distributed else 0)
        )
        return world_size, rank

    def _is_rank_zero(self) -> bool:
        if self.rank is not None:
            return self.rank == 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank() == 0
        return rank_zero_only.rank == 0

    def _uses_noise(self) -> bool:
        return self.noise_path is not None and self.noise_probability > 0

    def _split(self, split: str) -> SplitData:
        if split not in self._splits:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self._splits[split]

    def make_sampler(self, split: str) -> BucketingSampler:
        """The lhotse sampler of ``split`` (train: shuffled and speed-perturbed).

        The DDP rank and world size are read when this is called (from torch.distributed
        unless given to the constructor), so call it after the process group exists.
        """
        is_train = split == "train"
        speed = None
        if is_train and any(factor != 1.0 for factor in self.speed_perturb):
            speed = RandomSpeed(self.speed_perturb, self.seed)
        data = self._split(split)
        carry_epoch = is_train and self.channels.enabled  # the channels draw per epoch
        if data.shar_dir is not None:
            world_size, rank = self._layout()
            return shard_sampler(
                data.shar_dir,
                data.checks,
                data.stats,
                speed=speed,
                seed=self.seed,
                carry_epoch=carry_epoch,
                rank=rank,
                world_size=world_size,
                max_duration=self.max_batch_duration,
                max_cuts=self.batch_size,
                num_buckets=self.num_buckets,
                max_lattice_cells=MAX_BATCH_LATTICE_CELLS,
            )
        source = data.source(shuffle=is_train, speed=speed, seed=self.seed, carry_epoch=carry_epoch)
        return BucketingSampler(
            source,
            max_duration=self.max_batch_duration,
            max_cuts=self.batch_size,
            num_buckets=self.num_buckets,
            shuffle=is_train,
            drop_last=False,
            max_lattice_cells=MAX_BATCH_LATTICE_CELLS,
            buffer_size=SAMPLER_BUFFER_SIZE,
            seed=self.seed,
            world_size=self.world_size,
            rank=self.rank,
        )

    def make_dataloader(self, split: str) -> SkippingDataLoader:
        """A loader of padded batch dicts for ``split`` ("train", "val" or "test")."""
        sampler = self.make_sampler(split)
        noise = None
        if split == "train" and self._uses_noise():
            if self._noise is None:
                self._noise = NoiseSource(self.noise_path, SAMPLE_RATE)
            noise = BackgroundNoise(self._noise, self.noise_probability, self.snr_range_db)
        channels = self.channels if split == "train" and self.channels.enabled else None
        dataset = TransducerDataset(
            self.tokenizer, noise=noise, channels=channels, world_size=sampler.world_size
        )
        self._datasets.append(dataset)
        if split == "train" and self._resume_at is not None:
            epoch, batches_done = self._resume_at
            self._resume_at = None
            sampler.set_epoch(epoch)
            sampler = ResumedSampler(sampler, batches_done)
        loader = SkippingDataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=ignore_stop_signals,
        )
        # val/test: the same batches every epoch; shards: a fixed number of batches per epoch
        loader.exact_length = split != "train" or isinstance(sampler, ShardSampler)
        return loader

    def state_dict(self) -> dict[str, int]:
        """Where training stands in the current epoch, saved in every checkpoint.

        A checkpoint written mid-epoch (on SIGTERM, or every N steps) records the epoch and
        the batches this rank has trained on in it; resuming continues with the next batch
        of the same order instead of starting the epoch's data over. Empty at an epoch's end.
        """
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch or not progress.current.processed:
            return {}
        return {
            "train_epoch": trainer.current_epoch,
            "train_batches_done": progress.current.processed,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if "train_epoch" in state_dict:
            self._resume_at = (state_dict["train_epoch"], state_dict["train_batches_done"])

    def train_dataloader(self) -> SkippingDataLoader:
        return self.make_dataloader("train")

    def val_dataloader(self) -> SkippingDataLoader:
        return self.make_dataloader("val")

    def test_dataloader(self) -> SkippingDataLoader:
        return self.make_dataloader("test")

    def use_test_manifest(self, manifest: str) -> None:
        """Test on ``manifest`` from now on (``trainer.test`` again scores another test set;
        ``test_manifests`` stays the list given)."""
        self.test_manifest = manifest
        self._splits.pop("test", None)
        self.setup_stats.pop("test", None)
