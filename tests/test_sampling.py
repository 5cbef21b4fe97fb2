"""Tests for rnnt/data/sampling.py: duration and lattice bounds, epochs, batch counts, DDP."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from rnnt.constants import SAMPLE_RATE
from rnnt.data.augment import RandomSpeed
from rnnt.data.cuts import CutSource
from rnnt.data.records import AudioRecord, encoder_frames
from rnnt.data.sampling import BucketingSampler, lattice_cells, split_by_lattice
from tests.test_cuts import make_corpus
from tests.test_dataset import all_batches, datamodule


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_each_training_utterance_once_per_epoch_in_a_new_order(corpus):
    module = datamodule(corpus)
    loader = module.train_dataloader()
    first = [i for batch in all_batches(loader) for i in batch["ids"]]
    loader.sampler.set_epoch(1)
    second = [i for batch in all_batches(loader) for i in batch["ids"]]
    assert sorted(first) == sorted(second) == sorted(f"train.jsonl:{n}" for n in range(1, 25))
    assert first != second


def test_batches_respect_max_batch_duration_counting_speed_perturbation(corpus):
    limit = 7.0
    module = datamodule(corpus, max_batch_duration=limit, speed_perturb=[0.9, 1.1])
    records = {record.id: record for record in module._splits["train"].records}
    perturbed = 0
    for batch in all_batches(module.train_dataloader()):
        lengths = batch["audio_lengths"]
        # lhotse bounds the padded size: utterances x longest <= limit (so the sum is, too).
        assert len(lengths) * int(lengths.max()) / SAMPLE_RATE <= limit + 1e-6
        for utterance_id, length in zip(batch["ids"], lengths.tolist(), strict=True):
            ratio = records[utterance_id].duration * SAMPLE_RATE / length
            assert ratio == pytest.approx(0.9, abs=2e-3) or ratio == pytest.approx(1.1, abs=2e-3)
            perturbed += 1
    assert perturbed == 24


def test_fixed_batch_size_without_duration_limit(corpus):
    module = datamodule(corpus, max_batch_duration=None, batch_size=5, num_buckets=1)
    sizes = [len(batch["ids"]) for batch in all_batches(module.val_dataloader())]
    assert sum(sizes) == 24 and max(sizes) == 5


def test_two_ranks_get_disjoint_shares_covering_everything(corpus):
    shares = []
    for rank in (0, 1):
        module = datamodule(corpus, world_size=2, rank=rank, max_batch_duration=6.0)
        shares.append([i for batch in all_batches(module.train_dataloader()) for i in batch["ids"]])
    originals = [{i for i in share if "_dup" not in i} for share in shares]
    assert not originals[0] & originals[1]
    assert originals[0] | originals[1] == {f"train.jsonl:{n}" for n in range(1, 25)}


def _ddp_worker(rank, corpus, init_file, out_dir):
    for name in ("RANK", "WORLD_SIZE"):  # lhotse prefers these over torch.distributed
        os.environ.pop(name, None)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        module = datamodule(corpus, max_batch_duration=6.0, noise_path=None)
        sampler = module.make_sampler("train")
        ids = [cut.id for cuts in sampler for cut in cuts]
        with open(os.path.join(out_dir, f"{rank}.json"), "w") as handle:
            json.dump({"world_size": sampler.world_size, "rank": sampler.rank, "ids": ids}, handle)
    finally:
        dist.destroy_process_group()


def test_real_gloo_ranks_are_read_from_torch_distributed(corpus, tmp_path):
    torch_mp.spawn(
        _ddp_worker, args=(corpus, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["world_size"], r["rank"]) for r in results] == [(2, 0), (2, 1)]
    originals = [{i for i in r["ids"] if "_dup" not in i} for r in results]
    assert not originals[0] & originals[1]
    assert len(originals[0] | originals[1]) == 24


# --- the lattice bound -------------------------------------------------------------------------


def _synthetic_records(seed: int, count: int, max_cells: int) -> list[AudioRecord]:
    """Durations of 0.2-20 s with token counts from speech-like to the most setup lets through
    (125 a second), each small enough to fit ``max_cells`` alone at speed 0.9; no audio."""
    rng = np.random.default_rng(seed)
    records = []
    while len(records) < count:
        duration = float(rng.uniform(0.2, 20.0))
        rate = rng.uniform(2, 20) if rng.random() < 0.8 else rng.uniform(20, 125)
        tokens = int(duration * rate)
        if encoder_frames(duration / 0.9) * (tokens + 1) > max_cells:
            continue
        records.append(
            AudioRecord(
                id=f"m.jsonl:{len(records) + 1}",
                path="/nowhere.wav",
                sample_rate=SAMPLE_RATE,
                num_frames=round(duration * SAMPLE_RATE),
                num_channels=1,
                offset=0.0,
                duration=duration,
                text="x",
                num_tokens=tokens,
            )
        )
    return records


def _sampler(records, world_size=1, rank=0, max_cells=None, max_duration=60.0, epoch=0):
    source = CutSource(records, shuffle=True, speed=RandomSpeed([0.9, 1.0, 1.1], 3), seed=3)
    sampler = BucketingSampler(
        source,
        max_duration=max_duration,
        max_cuts=16,
        num_buckets=5,
        max_lattice_cells=max_cells,
        shuffle=True,
        drop_last=False,
        seed=3,
        world_size=world_size,
        rank=rank,
    )
    sampler.set_epoch(epoch)
    return sampler


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_no_batch_holds_more_lattice_cells_than_the_bound(seed, world_size):
    max_cells = 40_000
    records = _synthetic_records(seed, 150, max_cells)
    shares = []
    for rank in range(world_size):
        batches = [list(batch) for batch in _sampler(records, world_size, rank, max_cells)]
        for batch in batches:
            assert lattice_cells(batch) <= max_cells
            assert len(batch) * max(cut.duration for cut in batch) <= 60.0 + 1e-6
        shares.append(batches)
    assert len({len(batches) for batches in shares}) == 1  # DDP: every rank the same steps
    ids = [cut.id for batches in shares for batch in batches for cut in batch]
    originals = [i for i in ids if "_dup" not in i]
    assert sorted(originals) == sorted(record.id for record in records)  # each once


def test_without_the_bound_the_same_data_gives_oversized_lattices():
    # The property above is not vacuous: duration bucketing alone lets the lattice grow.
    records = _synthetic_records(0, 150, 40_000)
    assert max(lattice_cells(list(batch)) for batch in _sampler(records)) > 40_000


def test_a_batch_whose_last_cut_has_many_tokens_is_split_within_the_bound():
    records = _synthetic_records(1, 6, 10**9)
    cuts = [
        dataclasses.replace(record, duration=2.0, num_tokens=tokens).to_cut()
        for record, tokens in zip(records, [10, 12, 11, 9, 10, 240], strict=False)
    ]
    assert lattice_cells(cuts) == 6 * 50 * 241
    pieces = split_by_lattice(cuts, 5 * 50 * 13)
    assert [len(piece) for piece in pieces] == [5, 1]
    assert all(lattice_cells(piece) <= 5 * 50 * 13 for piece in pieces[:1])
    assert split_by_lattice(cuts, None) == [cuts]


def test_batch_count_is_exact_and_the_estimate_is_close():
    records = _synthetic_records(2, 400, 10**9)
    for world_size, epoch in ((1, 0), (1, 1), (2, 0)):
        sampler = _sampler(records, world_size=world_size, epoch=epoch)
        counted = sampler.count_batches()
        assert counted == sum(1 for _ in sampler)
        assert sampler.estimate_num_batches() == pytest.approx(counted, rel=0.1)
