"""Sharded data: ``rnnt shard`` writes lhotse Shar shards and their index, ``ShardSource`` and
``ShardSampler`` train from them (round trip, DDP split, epochs, resume, damaged shards)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from rnnt.constants import SHAR_INDEX_FILE
from rnnt.data.audio import load_mono
from rnnt.data.augment import RandomSpeed
from rnnt.data.cuts import cut_epoch
from rnnt.data.dataset import TransducerDataset
from rnnt.data.loader import ResumedSampler
from rnnt.data.records import load_audio_records
from rnnt.data.shar import ShardSource, make_shard_sampler
from rnnt.data.shar_index import read_shard_index
from rnnt.data.shar_writer import write_shards
from rnnt.data.tokenizer import Tokenizer, train_tokenizer

UTTERANCES = 20
SHARD_SIZE = 3  # 7 shards, the last one of 2
SAMPLER = {"max_duration": 3.0, "max_cuts": 4, "num_buckets": 3}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A manifest of 20 short utterances (one at 8 kHz, one stereo, 16-bit), one bad line, and a
    tokenizer; its shard set in ``shards/``."""
    folder = tmp_path_factory.mktemp("shar_corpus")
    rng = np.random.default_rng(3)
    lines = []
    for index in range(UTTERANCES):
        rate = 8000 if index == 5 else 16000
        frames = int(rng.uniform(0.3, 1.2) * rate)
        samples = (rng.normal(size=(frames, 2 if index == 7 else 1)) * 3000).astype(np.int16)
        soundfile.write(folder / f"u{index:02d}.flac", samples, rate, subtype="PCM_16")
        text = f"Utterance NUMBER {index}, it's fine!"
        lines.append({"audio_filepath": f"u{index:02d}.flac", "duration": frames / rate})
        lines[-1]["text"] = text
    manifest = folder / "train.jsonl"
    rows = [json.dumps(line) for line in lines]
    rows.insert(4, '{"audio_filepath": "u00.flac", "duration": ')  # a bad line, skipped
    manifest.write_text("\n".join(rows) + "\n")
    train_tokenizer([manifest], folder / "tokenizer.model", 28)
    write_shards(manifest, folder / "shards", shard_size=SHARD_SIZE)
    return folder


def _pass(corpus: Path, rank: int = 0, world_size: int = 1, epoch: int = 0, **kwargs) -> list:
    source = ShardSource(
        corpus / "shards", rank=rank, world_size=world_size, endless=False, **kwargs
    )
    source.set_epoch(epoch)
    return list(source)


def _sampler(corpus: Path, rank: int = 0, world_size: int = 1, shards: str = "shards", **kwargs):
    source = ShardSource(corpus / shards, rank=rank, world_size=world_size, **kwargs)
    return make_shard_sampler(source, **SAMPLER)


def _ids(batches) -> list[list[str]]:
    return [[cut.id for cut in batch] for batch in batches]


def test_round_trip_gives_the_same_utterances_audio_and_texts(corpus):
    records = {
        record.id: record
        for record in load_audio_records(corpus / "train.jsonl", skip_invalid=True)
    }
    lines = (corpus / "train.jsonl").read_text().splitlines()
    manifest_texts = [json.loads(line)["text"] for line in lines if line.endswith("}")]
    cuts = _pass(corpus)
    assert sorted(cut.id for cut in cuts) == sorted(records)
    assert len(cuts) == UTTERANCES
    for cut in cuts:
        record = records[cut.id]
        assert cut.supervisions[0].text in manifest_texts  # as written, not normalised
        assert cut.supervisions[0].text.lower().startswith("utterance number")
        assert cut.sampling_rate == record.sample_rate
        assert torch.equal(load_mono(cut), load_mono(record.to_cut()))  # FLAC is lossless


def test_index_lists_files_counts_and_durations(corpus):
    index = read_shard_index(corpus / "shards")
    records = load_audio_records(corpus / "train.jsonl", skip_invalid=True)
    assert [shard.num_cuts for shard in index.shards] == [3, 3, 3, 3, 3, 3, 2]
    assert index.durations().tolist() == [round(record.duration, 3) for record in records]
    assert all(shard.recording.is_file() and shard.cuts.is_file() for shard in index.shards)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_read_disjoint_shards_whose_union_is_the_set(corpus, world_size):
    sources = [
        ShardSource(corpus / "shards", rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    shards = [set(source.rank_shards()) for source in sources]
    assert set().union(*shards) == set(range(7))
    assert sum(len(s) for s in shards) == 7
    ids = [{cut.id for cut in _pass(corpus, rank, world_size)} for rank in range(world_size)]
    assert sum(len(s) for s in ids) == UTTERANCES
    assert len(set().union(*ids)) == UTTERANCES


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_runs_the_same_number_of_batches(corpus, world_size):
    counts = []
    for rank in range(world_size):
        sampler = _sampler(corpus, rank, world_size)
        sampler.set_epoch(1)
        batches = list(sampler)
        assert len(batches) == sampler.count_batches() == sampler.estimate_num_batches()
        assert all(sum(cut.duration for cut in batch) <= 3.0 for batch in batches)
        counts.append(len(batches))
    assert len(set(counts)) == 1 and counts[0] > 0


def test_an_epoch_is_about_one_pass_over_the_set(corpus):
    sampler = _sampler(corpus)
    drawn = [cut.id for batch in sampler for cut in batch]
    assert 0.7 * UTTERANCES <= len(drawn) <= 1.3 * UTTERANCES


def test_epochs_shuffle_the_shard_order_reproducibly(corpus):
    source = ShardSource(corpus / "shards", seed=5)
    orders = [source.shard_order(epoch) for epoch in range(4)]
    assert len({tuple(order) for order in orders}) > 1
    assert all(sorted(order) == list(range(7)) for order in orders)
    assert ShardSource(corpus / "shards", seed=5).shard_order(2) == orders[2]
    assert [cut.id for cut in _pass(corpus, epoch=3)] != [cut.id for cut in _pass(corpus)]


def test_resume_skips_to_exactly_the_next_batch(corpus):
    full = _sampler(corpus, 1, 2)
    full.set_epoch(2)
    expected = _ids(full)
    resumed = _sampler(corpus, 1, 2)
    resumed.set_epoch(2)
    assert _ids(ResumedSampler(resumed, 3)) == expected[3:]
    assert _ids(resumed) == expected  # the next epoch start (here: again 2) is whole


def test_prepare_epoch_tag_and_speed_reach_the_cuts(corpus):
    speed = RandomSpeed([0.9, 1.1], seed=1)
    cuts = _pass(
        corpus,
        epoch=4,
        speed=speed,
        carry_epoch=True,
        prepare=lambda cut: None if cut.id.endswith(":1") else cut,
    )
    assert len(cuts) == UTTERANCES - 1
    assert all(cut_epoch(cut) == 4 for cut in cuts)
    durations = dict(zip(*_durations(corpus), strict=True))
    for cut in cuts:
        assert cut.duration == pytest.approx(durations[cut.id] / speed.factor_for(cut.id), abs=1e-3)


def _durations(corpus: Path) -> tuple[list[str], list[float]]:
    records = load_audio_records(corpus / "train.jsonl", skip_invalid=True)
    return [record.id for record in records], [record.duration for record in records]


def test_workers_load_speed_perturbed_shard_audio(corpus):
    speed = RandomSpeed([0.9, 1.1], seed=2)
    sampler = _sampler(corpus, speed=speed)
    tokenizer = Tokenizer.load(corpus / "tokenizer.model")
    loader = DataLoader(
        TransducerDataset(tokenizer), sampler=sampler, batch_size=None, num_workers=1
    )
    records = {
        record.id: record
        for record in load_audio_records(corpus / "train.jsonl", skip_invalid=True)
    }
    batches = list(loader)  # the cuts travel to the worker process with their audio bytes
    assert len(batches) == sampler.num_batches
    for batch in batches:
        for row, cut_id in enumerate(batch["ids"]):
            perturbed = records[cut_id].to_cut().perturb_speed(speed.factor_for(cut_id))
            expected = load_mono(perturbed)
            assert batch["host_audio_lengths"][row] == expected.numel()
            # (the worker runs torch on one thread: float sums in another order than here)
            torch.testing.assert_close(batch["audio"][row, : expected.numel()], expected)


@pytest.fixture
def damaged(corpus, tmp_path) -> Path:
    """A copy of the shard set, to damage."""
    return Path(shutil.copytree(corpus / "shards", tmp_path / "shards"))


def test_a_missing_shard_file_is_named_at_setup(damaged):
    (damaged / "recording.000002.tar").unlink()
    with pytest.raises(FileNotFoundError, match=r"recording\.000002\.tar.*missing"):
        ShardSource(damaged)


def test_a_shard_cut_short_is_named_at_setup(damaged):
    path = damaged / "recording.000004.tar"
    path.write_bytes(path.read_bytes()[:-1024])
    with pytest.raises(ValueError, match=r"recording\.000004\.tar is \d+ bytes where the index"):
        ShardSource(damaged)


def test_no_index_says_the_run_did_not_finish(damaged):
    (damaged / SHAR_INDEX_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="not a shard set"):
        ShardSource(damaged)
    (damaged / "shards.partial.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="did not finish"):
        ShardSource(damaged)


def test_corrupt_audio_in_a_shard_is_skipped_and_counted_by_the_workers(damaged, corpus):
    path = damaged / "recording.000000.tar"
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".flac"))
    data = bytearray(path.read_bytes())
    data[member.offset_data : member.offset_data + member.size] = b"\x00" * member.size
    path.write_bytes(bytes(data))
    dataset = TransducerDataset(Tokenizer.load(corpus / "tokenizer.model"))
    cuts = [cut for cut in ShardSource(damaged, endless=False)]
    assert len(cuts) == UTTERANCES
    batch = dataset[cuts]
    assert dataset.num_skipped == 1
    assert len(batch["ids"]) == UTTERANCES - 1 and member.name[: -len(".flac")] not in batch["ids"]


def test_a_damaged_tar_loses_the_rest_of_its_shard_counted(damaged):
    path = damaged / "recording.000003.tar"
    with tarfile.open(path) as tar:
        third = tar.getmembers()[2]  # the second cut's audio
    data = bytearray(path.read_bytes())
    data[third.offset : third.offset + 512] = b"\xff" * 512  # its header
    path.write_bytes(bytes(data))
    source = ShardSource(damaged, endless=False)
    cuts = list(source)
    assert len(cuts) == UTTERANCES - 2
    assert source.num_unreadable == 2


def test_an_interrupted_run_is_incomplete_then_resumed(corpus, tmp_path, monkeypatch):
    from rnnt.data import shar_writer

    written = []
    real = shar_writer._write_shard

    def interrupted(task):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(task[0])
        return real(task)

    monkeypatch.setattr(shar_writer, "_write_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_shards(corpus / "train.jsonl", tmp_path / "set", shard_size=SHARD_SIZE)
    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_shard_index(tmp_path / "set")
    monkeypatch.setattr(shar_writer, "_write_shard", real)
    result = write_shards(corpus / "train.jsonl", tmp_path / "set", shard_size=SHARD_SIZE)
    assert result.resumed_shards == 2 and result.num_shards == 7
    assert read_shard_index(tmp_path / "set").durations().tolist() == (
        read_shard_index(corpus / "shards").durations().tolist()
    )


def test_cli_writes_the_index_and_refuses_bad_input_in_one_line(corpus, tmp_path, capsys):
    from rnnt.cli import main

    out = tmp_path / "set"
    main(["shard", "--manifest", str(corpus / "train.jsonl"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"shards: {out / SHAR_INDEX_FILE}" in printed and "1 shards, 20 utterances" in printed
    assert "invalid 1" in printed  # the bad line, counted
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"audio_filepath": "nowhere.flac", "duration": 1.0, "text": "x"}\n')
    for arguments, named in [
        (["--manifest", str(corpus / "train.jsonl"), "--out", str(out)], "--out"),
        (["--manifest", str(empty), "--out", str(tmp_path / "new")], str(empty)),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["shard", *arguments])
        printed = capsys.readouterr().err.strip().splitlines()
        lines = [line for line in printed if not line.startswith(("WARNING ", "INFO "))]
        assert exit_info.value.code == 2 and len(lines) == 1, printed  # no traceback
        assert lines[0].startswith("rnnt shard: error: ") and named in lines[0], lines


def test_shard_files_no_unfinished_run_left_are_replaced_only_when_asked(corpus, tmp_path):
    out = Path(shutil.copytree(corpus / "shards", tmp_path / "set"))
    (out / SHAR_INDEX_FILE).unlink()  # another tool's shards, say: no index, no partial run
    with pytest.raises(ValueError, match=r"already holds shard files .* --overwrite"):
        write_shards(corpus / "train.jsonl", out, shard_size=10)
    result = write_shards(corpus / "train.jsonl", out, shard_size=10, overwrite=True)
    assert result.num_shards == 2
    assert sorted(path.name for path in out.iterdir()) == [
        "cuts.000000.jsonl.gz",
        "cuts.000001.jsonl.gz",
        "recording.000000.tar",
        "recording.000001.tar",
        SHAR_INDEX_FILE,
    ]
