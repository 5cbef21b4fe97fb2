"""Tests for rnnt/data/dataset.py: cuts, bucketing, resampling, DDP shares, bad audio."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from lhotse import CutSet

from rnnt.constants import MAX_BATCH_DURATION, SAMPLE_RATE
from rnnt.data.dataset import TransducerDataModule, TransducerDataset, load_audio_records
from rnnt.data.manifest import ManifestError
from rnnt.data.tokenizer import normalize_text, train_tokenizer

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "dog",
    "ran",
    "fast",
    "slow",
    "big",
    "small",
    "red",
    "blue",
    "green",
]
TONE_HZ = 440.0
RATES = (16_000, 8_000, 44_100)


def make_corpus(folder, num_utterances=24, seed=0):
    """Tones of 1-4 s at 8/16/44.1 kHz (every 4th stereo), white noise, a tokenizer."""
    rng = np.random.default_rng(seed)
    (folder / "audio").mkdir(parents=True)
    (folder / "noise").mkdir()
    records = []
    for index in range(num_utterances):
        rate = RATES[index % 3]
        frames = int(rng.uniform(1.0, 4.0) * rate)
        tone = 0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(frames) / rate)
        samples = np.stack([tone, tone], axis=1) if index % 4 == 3 else tone
        name = f"audio/{index:03d}.{'flac' if index % 2 else 'wav'}"
        soundfile.write(folder / name, samples, rate)
        text = " ".join(rng.choice(WORDS, size=4)).capitalize() + "!"
        records.append({"audio_filepath": name, "duration": frames / rate, "text": text})
    soundfile.write(folder / "noise" / "n.wav", rng.normal(size=SAMPLE_RATE) * 0.1, SAMPLE_RATE)
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    train_tokenizer([manifest], folder / "tokenizer.model", vocab_size=30)
    return folder


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
        for row in range(size):
            length = int(batch["target_lengths"][row])
            assert (batch["targets"][row, length:] == 0).all()
            assert (batch["targets"][row, :length] >= 1).all()
            assert tokenizer.decode(batch["targets"][row, :length].tolist()) == batch["texts"][row]
            assert (batch["audio"][row, int(batch["audio_lengths"][row]) :] == 0).all()


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


@pytest.mark.parametrize("index", [0, 1, 2, 3])  # 16 kHz, 8 kHz, 44.1 kHz, 16 kHz stereo
def test_any_rate_and_channels_load_as_16k_mono_tone(corpus, index):
    module = datamodule(corpus)
    record = module._records["val"][index]
    assert record.sample_rate == RATES[index % 3]
    assert record.num_channels == (2 if index == 3 else 1)
    batch = module.val_dataloader().dataset[CutSet([record.to_cut()])]
    length = int(batch["audio_lengths"][0])
    assert length == round(record.duration * SAMPLE_RATE)
    waveform = batch["audio"][0, :length].double()
    spectrum = torch.fft.rfft(waveform * torch.hann_window(length, dtype=torch.float64)).abs()
    peak_hz = float(spectrum.argmax()) * SAMPLE_RATE / length
    assert peak_hz == pytest.approx(TONE_HZ, abs=2.0)
    middle = waveform[length // 4 : 3 * length // 4]  # away from the resampler's edge ripple
    assert float(middle.abs().max()) == pytest.approx(0.3, abs=0.01)  # stereo averaged, not summed


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
    records = module._records["val"]
    dataset = TransducerDataset(module.tokenizer, world_size=2)
    good = dataset[CutSet([records[1].to_cut()])]
    (private_corpus / "audio" / "000.wav").write_bytes(b"garbage" * 100)
    repeated = dataset[CutSet([records[0].to_cut()])]
    assert repeated["ids"] == good["ids"]  # keeps every rank at the same number of steps
    assert torch.equal(repeated["audio"], good["audio"])
    assert TransducerDataset(module.tokenizer)[CutSet([records[0].to_cut()])] is None


def test_bad_audio_header_names_file_and_line(private_corpus):
    (private_corpus / "audio" / "002.wav").write_bytes(b"garbage" * 100)
    manifest = private_corpus / "train.jsonl"
    with pytest.raises(ManifestError, match=r"train\.jsonl:3: cannot read audio file"):
        load_audio_records(manifest)
    assert len(load_audio_records(manifest, skip_invalid=True)) == 23


def test_manifest_duration_past_end_of_file_is_an_error(tmp_path, corpus):
    lines = [
        {"audio_filepath": str(corpus / "audio" / "000.wav"), "duration": 60.0, "text": "a cat"},
        {"audio_filepath": str(corpus / "audio" / "000.wav"), "duration": 0.5, "text": "...!"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: duration 60 s .* overruns"):
        load_audio_records(manifest)
    assert load_audio_records(manifest, skip_invalid=True) == []  # line 2: no words either


def test_setup_filters_training_durations_only(corpus):
    module = datamodule(corpus, min_duration=2.0, max_duration=3.0)
    module.setup("test")
    assert all(2.0 <= record.duration <= 3.0 for record in module._records["train"])
    assert len(module._records["train"]) < 24
    assert len(module._records["val"]) == len(module._records["test"]) == 24
    assert module._records["val"][0].text == normalize_text(module._records["val"][0].text)


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
