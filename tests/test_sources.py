"""Tests for rnnt/data/sources.py and the lazy path it opens (rnnt/data/lazy_source.py,
manifest_index.py, lazy_cuts.py): the same utterances as the checked path, lhotse cut
manifests, weighted lists, skips counted once, DDP and resume."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet

from rnnt.data.audio import load_mono
from rnnt.data.lazy_cuts import is_deferred, resolve_cut
from rnnt.data.loader import ResumedSampler
from rnnt.data.manifest import ManifestError
from rnnt.data.records import load_audio_records
from rnnt.data.sources import ManifestEntry, open_split, parse_manifests
from tests.test_cuts import make_corpus
from tests.test_dataset import datamodule

NO_BOUNDS = dict(min_duration=None, max_duration=None, skip_invalid=True, count_tokens=None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _lines(corpus: Path) -> list[dict]:
    lines = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    for line in lines:
        line["audio_filepath"] = str(corpus / line["audio_filepath"])
    return lines


def _write(path: Path, lines: list[dict | str]) -> str:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text)
    return str(path)


def _epoch(module, epoch: int = 0) -> list[dict]:
    loader = module.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def _ids(batches) -> list[str]:
    return [cut_id for batch in batches for cut_id in batch["ids"]]


def test_lazy_epoch_delivers_the_same_utterances_audio_and_text_as_the_checked_path(corpus):
    quiet = dict(speed_perturb=[1.0], noise_path=None)  # no random noise: comparable audio
    checked = datamodule(corpus, read_headers=True, **quiet)
    lazy = datamodule(corpus, read_headers=False, **quiet)
    assert lazy._splits["train"].records is None and checked._splits["train"].records
    one = {i: (b, k) for b in _epoch(checked) for k, i in enumerate(b["ids"])}
    two = {i: (b, k) for b in _epoch(lazy) for k, i in enumerate(b["ids"])}
    assert sorted(one) == sorted(two) and len(one) == 24
    for cut_id, (batch, k) in one.items():
        other, j = two[cut_id]
        assert batch["texts"][k] == other["texts"][j]
        n = int(batch["audio_lengths"][k])
        assert n == int(other["audio_lengths"][j])
        assert torch.equal(batch["audio"][k, :n], other["audio"][j, :n])


def test_a_deferred_cut_resolves_to_the_checked_cut_with_speed(corpus):
    module = datamodule(corpus, read_headers=False, speed_perturb=[0.9])
    cut = next(iter(module.make_sampler("train").source))
    assert is_deferred(cut)
    record = {r.id: r for r in load_audio_records(corpus / "train.jsonl")}[cut.id]
    reference = record.to_cut().perturb_speed(0.9, affix_id=False)
    resolved = resolve_cut(cut)
    assert abs(cut.duration - reference.duration) < 1e-3  # what the sampler budgeted
    assert resolved.duration == reference.duration
    assert torch.equal(load_mono(resolved), load_mono(reference))


def test_lazy_start_up_opens_no_audio_and_missing_files_are_skipped_at_load(corpus, tmp_path):
    lines = _lines(corpus)
    lines[3]["audio_filepath"] = str(tmp_path / "gone.wav")
    lines[5]["audio_filepath"] = _write(tmp_path / "not_audio.wav", ["RIFF? no"])
    manifest = _write(tmp_path / "m.jsonl", lines)
    module = datamodule(corpus, train_manifest=manifest, read_headers=False)
    assert module.setup_stats["train"].kept == 24  # nothing was opened: both still listed
    ids = _ids(_epoch(module))
    assert sorted(ids) == sorted(f"m.jsonl:{n}" for n in range(1, 25) if n not in (4, 6))
    assert module.num_skipped_utterances == 2
    with pytest.raises(ManifestError, match="m.jsonl:4: audio file not found"):
        datamodule(corpus, train_manifest=manifest, read_headers=True, skip_invalid=False)


def test_bad_lines_name_file_and_line_at_start_up_and_transcripts_are_counted_once(
    corpus, tmp_path
):
    lines: list = _lines(corpus)
    lines[2] = "{not json"
    manifest = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ManifestError, match=r"bad\.jsonl:3: "):
        datamodule(corpus, train_manifest=manifest, read_headers=False, skip_invalid=False)
    lines[2] = {**lines[0], "text": "?!"}  # nothing left after normalisation
    lines[7] = {**lines[0], "text": "word " * 400}  # more tokens than its frames can emit
    manifest = _write(tmp_path / "text.jsonl", lines)
    module = datamodule(corpus, train_manifest=manifest, read_headers=False)
    for epoch in (0, 1):  # a second epoch meets them again: still counted once
        assert len(_ids(_epoch(module, epoch))) == 22
    assert dict(module.setup_stats["train"].skipped) == {
        "empty_text": 1,
        "text_too_long_for_audio": 1,
    }
    strict = datamodule(corpus, train_manifest=manifest, read_headers=False, skip_invalid=False)
    with pytest.raises(ManifestError, match=r"text\.jsonl:(3|8): "):
        _epoch(strict)


def _lhotse_cuts(corpus: Path, path: Path, *, bad_line: bool = False) -> str:
    cuts = [record.to_cut() for record in load_audio_records(corpus / "train.jsonl")]
    for cut in cuts:  # as lhotse's recipes write them: original text, ids of their own
        cut.supervisions[0].text = cut.supervisions[0].text.upper() + "."
    CutSet.from_cuts(cuts).to_file(path)
    if bad_line:
        import gzip

        with gzip.open(path, "at") as handle:
            handle.write('{"id": "broken", "type": "MonoCut"}\n')
    return str(path)


def test_lhotse_cut_manifest_trains_lazily_with_the_same_audio(corpus, tmp_path):
    cuts = _lhotse_cuts(corpus, tmp_path / "cuts_train.jsonl.gz")
    module = datamodule(corpus, train_manifest=cuts, speed_perturb=[0.9, 1.0, 1.1])
    batches = _epoch(module)
    checked = {r.id: r.text for r in load_audio_records(corpus / "train.jsonl")}
    texts = {i: t for b in batches for i, t in zip(b["ids"], b["texts"], strict=True)}
    assert texts == checked  # every cut once, its text normalised like a NeMo manifest's


def test_a_broken_lhotse_line_is_named_or_counted(corpus, tmp_path):
    cuts = _lhotse_cuts(corpus, tmp_path / "cuts.jsonl.gz", bad_line=True)
    module = datamodule(corpus, train_manifest=cuts)
    assert len(_ids(_epoch(module))) == 24
    assert dict(module.setup_stats["train"].skipped) == {"invalid": 1}
    assert module.setup_stats["train"].examples[0].startswith(f"{cuts}:25: not a lhotse cut")
    strict = datamodule(corpus, train_manifest=cuts, skip_invalid=False)
    with pytest.raises(ManifestError, match=r"cuts\.jsonl\.gz:25: not a lhotse cut"):
        _epoch(strict)


def _two_manifests(corpus: Path, tmp_path: Path) -> tuple[str, str]:
    lines = _lines(corpus)
    return _write(tmp_path / "a.jsonl", lines[:12]), _write(tmp_path / "b.jsonl", lines[12:])


def test_an_unweighted_list_is_one_pass_over_each_manifest(corpus, tmp_path):
    a, b = _two_manifests(corpus, tmp_path)
    module = datamodule(corpus, train_manifest=[a, b])
    ids = _ids(_epoch(module, 3))
    assert sorted(ids) == sorted(
        [f"a.jsonl:{n}" for n in range(1, 13)] + [f"b.jsonl:{n}" for n in range(1, 13)]
    )


def test_weights_set_each_manifests_share_of_the_epoch(corpus, tmp_path):
    a, b = _two_manifests(corpus, tmp_path)
    spec = [{"path": a, "weight": 0.8}, {"path": b, "weight": 0.2}]
    module = datamodule(corpus, train_manifest=spec, max_batch_duration=200.0)
    counts = collections.Counter()
    for epoch in range(10):
        ids = _ids(_epoch(module, epoch))
        assert len(ids) == 24  # an epoch: as many cuts as both hold
        counts.update(cut_id.split(":")[0] for cut_id in ids)
    share = counts["a.jsonl"] / 240
    assert 0.72 < share < 0.88  # 0.8 drawn 240 times: 3 standard deviations is 0.077


def test_ddp_ranks_get_disjoint_lazy_batches_and_resume_lands_on_the_next_batch(corpus):
    ranks = [
        datamodule(corpus, read_headers=False, world_size=2, rank=rank, max_batch_duration=6.0)
        for rank in (0, 1)
    ]
    per_rank = []
    for module in ranks:
        sampler = module.make_sampler("train")
        sampler.set_epoch(2)
        per_rank.append([sorted(cut.id for cut in batch) for batch in sampler])
    assert len(per_rank[0]) == len(per_rank[1])
    flat = [set(cut_id for batch in batches for cut_id in batch) for batches in per_rank]
    assert not flat[0] & flat[1] and len(flat[0] | flat[1]) == 24
    resumed = ResumedSampler(ranks[0].make_sampler("train"), skip=2)
    resumed.set_epoch(2)
    assert [sorted(cut.id for cut in batch) for batch in resumed] == per_rank[0][2:]


def test_parse_manifests_forms_and_errors():
    assert parse_manifests("a.jsonl") == [ManifestEntry("a.jsonl")]
    assert parse_manifests([{"path": "b", "weight": 2}, {"path": "c", "weight": 1.5}]) == [
        ManifestEntry("b", 2),
        ManifestEntry("c", 1.5),
    ]
    with pytest.raises(ValueError, match=r"^give a weight to every manifest or to none$"):
        parse_manifests(["a", {"path": "b", "weight": 2}])
    with pytest.raises(ValueError, match=r"^item 0: weight -1 must be a positive number$"):
        parse_manifests([{"path": "b", "weight": -1}])
    with pytest.raises(ValueError, match=r"^item 0: \{'file': 'b'\} is neither a path"):
        parse_manifests([{"file": "b"}])
    with pytest.raises(ValueError, match=r"^--data.train_manifest \[\]: must name at least one"):
        open_split([], field="train_manifest", **NO_BOUNDS)


def test_manifest_index_holds_16_bytes_a_line_and_reads_lines_back(corpus, tmp_path):
    from rnnt.data.manifest_index import ManifestIndex

    lines = _lines(corpus)
    manifest = _write(tmp_path / "m.jsonl", ["", *lines[:5]])  # a blank line: numbers shift
    index = ManifestIndex(manifest)
    assert list(index.lines) == [2, 3, 4, 5, 6]
    assert index.offsets.nbytes + index.lines.nbytes + index.durations.nbytes == 5 * 16
    got = list(index.utterances([4, 0]))
    assert [line for line, _ in got] == [6, 2]
    assert got[0][1].text == lines[4]["text"] and got[1][1].duration == lines[0]["duration"]
    assert os.path.getsize(manifest) > 0 and np.isclose(
        index.durations.sum(), sum(line["duration"] for line in lines[:5])
    )


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory):
    from rnnt.data.shar_writer import write_shards

    folder = tmp_path_factory.mktemp("shards") / "set"
    write_shards(corpus / "train.jsonl", folder, shard_size=4)
    return folder


def test_shards_train_with_checked_texts_token_counts_and_an_exact_length(corpus, shards):
    module = datamodule(corpus, shar_dir=str(shards), speed_perturb=[1.0], max_duration=3.5)
    assert module.setup_stats["train"].kept == 24
    loader = module.train_dataloader()
    assert len(loader) == loader.sampler.count_batches()  # a fixed number of batches
    batches = list(loader)
    assert len(batches) == len(loader)
    checked = {r.id: r for r in load_audio_records(corpus / "train.jsonl")}
    for batch in batches:
        for cut_id, text in zip(batch["ids"], batch["texts"], strict=True):
            assert text == checked[cut_id].text  # normalised, like a manifest's
            assert checked[cut_id].duration <= 3.5  # the training bounds apply to shards too
    sampler = module.make_sampler("train")
    cut = next(cut for batch in sampler for cut in batch)
    assert cut.custom["num_tokens"] == len(module.tokenizer.encode(cut.supervisions[0].text))
    assert dict(module.setup_stats["train"].skipped) == {
        "too_long": sum(r.duration > 3.5 for r in checked.values())
    }


def test_shard_ranks_run_the_same_number_of_batches_on_disjoint_shards(corpus, shards):
    ranks = [datamodule(corpus, shar_dir=str(shards), world_size=2, rank=r) for r in (0, 1)]
    samplers = [module.make_sampler("train") for module in ranks]
    assert samplers[0].count_batches() == samplers[1].count_batches()
    shards_read = [set(s.source.rank_shards(0)) for s in samplers]
    assert not shards_read[0] & shards_read[1]


def test_a_missing_shard_set_is_named_at_setup(corpus, tmp_path):
    with pytest.raises(ManifestError, match=f"{tmp_path / 'none'}: shard folder not found"):
        datamodule(corpus, shar_dir=str(tmp_path / "none"))


@pytest.mark.parametrize("kind", ["weighted_list", "shards"])
def test_a_few_training_steps(corpus, shards, tmp_path, kind):
    from rnnt.lightning_cli import make_cli
    from tests.tiny import tiny_fit_config

    a, b = _two_manifests(corpus, tmp_path)
    config = tiny_fit_config(corpus, tmp_path / "runs", max_steps=3, limit_val_batches=0)
    config["data"].update(
        val_manifest=a, test_manifest=a, tokenizer_path=str(corpus / "tokenizer.model")
    )
    if kind == "shards":
        config["data"]["shar_dir"] = str(shards)
    else:
        config["data"]["train_manifest"] = [{"path": a, "weight": 1}, {"path": b, "weight": 2}]
    cli = make_cli(config, run=False, root_dir=str(tmp_path / "runs"))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 3
    assert float(cli.trainer.callback_metrics["train_audio_seconds"]) > 0


def test_a_shard_cut_with_an_unusable_transcript_is_counted_or_named(corpus, tmp_path):
    from rnnt.data.shar_writer import write_shards

    lines = _lines(corpus)[:8]
    lines[2]["text"] = "word " * 400  # more tokens than its frames can emit (sharded as is)
    write_shards(_write(tmp_path / "m.jsonl", lines), tmp_path / "set", shard_size=4)
    module = datamodule(corpus, shar_dir=str(tmp_path / "set"), speed_perturb=[1.0])
    for _ in range(2):  # an endless stream meets it again: still counted once
        _epoch(module)
    assert dict(module.setup_stats["train"].skipped) == {"text_too_long_for_audio": 1}
    assert module.setup_stats["train"].examples[0].startswith(f"{tmp_path / 'set'}:m.jsonl:3: ")
    strict = datamodule(corpus, shar_dir=str(tmp_path / "set"), skip_invalid=False)
    with pytest.raises(ManifestError, match=r"set: cut m\.jsonl:3: 400 words in [\d.]+ s"):
        _epoch(strict)


def test_a_shard_cut_is_named_by_its_shard_file_in_messages(shards):
    from rnnt.data.lazy_cuts import audio_path
    from rnnt.data.shar import ShardSource

    cut = next(iter(ShardSource(shards, endless=False)))
    shard = cut.custom["shard_origin"]  # the shard order is shuffled
    assert shard.startswith(f"{shards}/cuts.") and shard.endswith(".jsonl.gz")
    assert audio_path(cut) == f"{shard} ({cut.id})"  # not the audio bytes
