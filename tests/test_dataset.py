"""Tests for rnnt/data/dataset.py: batch dicts, augmentation, bad audio, the DataModule's setup."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from lhotse import CutSet

from rnnt.constants import BLANK_ID, MAX_BATCH_DURATION
from rnnt.data.datamodule import TransducerDataModule
from rnnt.data.dataset import TransducerDataset, target_problem
from rnnt.data.tokenizer import normalize_text
from tests.test_cuts import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def datamodule(corpus, **overrides):
    manifest = str(corpus / "train.jsonl")
    options = dict(
        train_manifest=manifest,
        val_manifest=manifest,
        test_manifest=manifest,
        tokenizer_path=str(corpus / "tokenizer.model"),
        noise_path=str(corpus / "noise"),
        max_batch_duration=10.0,
        num_workers=0,
        num_buckets=3,
    )
    options.update(overrides)
    module = TransducerDataModule(**options)
    module.setup("fit")
    return module


def all_batches(loader):
    return list(loader)


def test_batch_dict_shapes_and_dtypes(corpus):
    module = datamodule(corpus)
    batches = all_batches(module.train_dataloader())
    assert batches
    tokenizer = module.tokenizer
    for batch in batches:
        size = len(batch["ids"])
        assert batch["audio"].dtype == torch.float32 and batch["audio"].dim() == 2
        assert batch["audio"].shape[0] == size
        assert batch["audio_lengths"].dtype == torch.int64
        assert batch["targets"].dtype == torch.int64
        assert batch["target_lengths"].dtype == torch.int64
        assert batch["audio"].shape[1] == int(batch["audio_lengths"].max())
        assert batch["targets"].shape == (size, int(batch["target_lengths"].max()))
        assert len(batch["texts"]) == size
        # The same lengths as Python lists, which stay on the host when the batch goes to a GPU.
        assert batch["host_audio_lengths"] == batch["audio_lengths"].tolist()
        assert batch["host_target_lengths"] == batch["target_lengths"].tolist()
        assert batch["host_counted"] == batch["counted"].tolist()
        for row in range(size):
            length = int(batch["target_lengths"][row])
            assert (batch["targets"][row, length:] == 0).all()
            assert (batch["targets"][row, :length] >= 1).all()
            assert tokenizer.decode(batch["targets"][row, :length].tolist()) == batch["texts"][row]
            assert (batch["audio"][row, int(batch["audio_lengths"][row]) :] == 0).all()


def test_only_training_gets_noise_and_speed_perturbation(corpus):
    loud = dict(noise_probability=1.0, snr_range_db=[0.0, 0.0], speed_perturb=[0.9, 1.1])
    noisy, clean = datamodule(corpus, **loud), datamodule(corpus, noise_path=None)
    for noisy_batch, clean_batch in zip(
        all_batches(noisy.val_dataloader()), all_batches(clean.val_dataloader()), strict=True
    ):
        assert noisy_batch["ids"] == clean_batch["ids"]
        assert torch.equal(noisy_batch["audio"], clean_batch["audio"])
    clean_audio = {
        i: audio
        for b in all_batches(clean.val_dataloader())
        for i, audio in zip(b["ids"], b["audio"], strict=True)
    }
    for batch in all_batches(noisy.train_dataloader()):
        for utterance_id, audio in zip(batch["ids"], batch["audio"], strict=True):
            assert audio.shape != clean_audio[utterance_id].shape or not torch.equal(
                audio, clean_audio[utterance_id]
            )


@pytest.fixture()
def private_corpus(corpus, tmp_path):
    return shutil.copytree(corpus, tmp_path / "corpus")


def test_corrupt_audio_is_skipped_with_a_count(private_corpus, caplog):
    module = datamodule(private_corpus, noise_path=None)
    (private_corpus / "audio" / "005.flac").write_bytes(b"this is not audio any more" * 100)
    with caplog.at_level(logging.WARNING, logger="rnnt.data.dataset"):
        ids = [i for batch in all_batches(module.val_dataloader()) for i in batch["ids"]]
    assert "train.jsonl:6" not in ids and len(ids) == 23
    assert module.num_skipped_utterances == 1
    assert "005.flac" in caplog.text and "1 skipped so far" in caplog.text


def test_skip_count_is_shared_across_worker_processes(private_corpus):
    module = datamodule(private_corpus, noise_path=None, num_workers=1)
    for name in ("003.flac", "010.wav"):
        (private_corpus / "audio" / name).write_bytes(b"garbage" * 100)
    ids = [i for batch in all_batches(module.val_dataloader()) for i in batch["ids"]]
    assert len(ids) == 22
    assert module.num_skipped_utterances == 2


def test_batch_where_everything_fails_is_skipped(private_corpus):
    module = datamodule(private_corpus, noise_path=None, batch_size=1)
    (private_corpus / "audio" / "000.wav").write_bytes(b"garbage" * 100)
    batches = all_batches(module.val_dataloader())
    assert len(batches) == 23  # the failed one is passed over: the loop sees the next batch
    assert "train.jsonl:1" not in [batch["ids"][0] for batch in batches]


def test_batch_where_everything_fails_repeats_last_good_under_ddp(private_corpus):
    module = datamodule(private_corpus, noise_path=None)
    records = module._splits["val"].records
    dataset = TransducerDataset(module.tokenizer, world_size=2)
    good = dataset[CutSet([records[1].to_cut()])]
    (private_corpus / "audio" / "000.wav").write_bytes(b"garbage" * 100)
    repeated = dataset[CutSet([records[0].to_cut()])]
    assert repeated["ids"] == good["ids"]  # keeps every rank at the same number of steps
    assert torch.equal(repeated["audio"], good["audio"])
    assert repeated["host_counted"] == [False] * len(good["ids"]) and all(good["host_counted"])
    assert TransducerDataset(module.tokenizer)[CutSet([records[0].to_cut()])] is None


@pytest.mark.parametrize("bad_ids", [[BLANK_ID], [1, 10_000], [-1]], ids=["blank", "big", "neg"])
def test_invalid_targets_are_skipped_with_a_count_naming_the_utterance(
    corpus, caplog, monkeypatch, bad_ids
):
    """The training loss checks nothing (its checks would read the device on the host): the
    dataset refuses targets the loss cannot take, like audio it cannot load."""
    module = datamodule(corpus, noise_path=None)
    records = module._splits["val"].records[:4]
    bad = records[2]
    tokenizer = module.tokenizer
    encode = tokenizer.encode
    monkeypatch.setattr(
        tokenizer, "encode", lambda text: bad_ids if text == bad.text else encode(text)
    )
    dataset = TransducerDataset(tokenizer)
    with caplog.at_level(logging.WARNING, logger="rnnt.data.dataset"):
        batch = dataset[CutSet([record.to_cut() for record in records])]
    assert batch["ids"] == [record.id for record in records if record is not bad]
    assert dataset.num_skipped == 1
    assert f"skipping utterance {bad.id}: target token id" in caplog.text
    assert "1 skipped so far" in caplog.text


def test_target_problem_names_the_token_or_the_missing_frame():
    num_classes = 10
    assert target_problem([1, 9], num_classes, num_samples=16_000) is None
    assert target_problem([], num_classes, num_samples=16_000) is None  # U = 0 is a lattice
    assert "id 0 at position 1" in target_problem([3, 0], num_classes, num_samples=16_000)
    assert "id 10 at position 0" in target_problem([10], num_classes, num_samples=16_000)
    assert "not one feature frame" in target_problem([1], num_classes, num_samples=100)


def test_setup_filters_training_durations_only(corpus):
    module = datamodule(corpus, min_duration=2.0, max_duration=3.0)
    module.setup("test")
    assert all(2.0 <= record.duration <= 3.0 for record in module._splits["train"].records)
    assert len(module._splits["train"].records) < 24
    assert len(module._splits["val"].records) == len(module._splits["test"].records) == 24
    assert module._splits["val"].records[0].text == normalize_text(
        module._splits["val"].records[0].text
    )


def test_missing_tokenizer_and_noise_folder_fail_at_setup(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="rnnt tokenizer"):
        datamodule(corpus, tokenizer_path=str(tmp_path / "none.model"))
    with pytest.raises(FileNotFoundError, match="noise_path: null"):
        datamodule(corpus, noise_path=str(tmp_path / "no-noise"))


def test_lightning_cli_can_build_it_from_the_signature():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(TransducerDataModule, "data")
    defaults = parser.parse_args([])
    assert defaults.data.max_batch_duration == MAX_BATCH_DURATION
    config = parser.parse_args(
        ["--data.noise_path=null", "--data.max_batch_duration=null", "--data.speed_perturb=[1.0]"]
    )
    assert config.data.noise_path is None and config.data.max_batch_duration is None
    assert config.data.speed_perturb == [1.0]
