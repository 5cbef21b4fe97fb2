"""Tests for rnnt/data/sampling.py: duration bounds, epochs, fixed batch sizes, DDP shares."""

from __future__ import annotations

import json
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from rnnt.constants import SAMPLE_RATE
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
    records = {record.id: record for record in module._records["train"]}
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
