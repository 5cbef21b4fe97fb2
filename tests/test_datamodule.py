"""Tests for rnnt/data/datamodule.py: transcripts checked at setup, bounded memory, batch counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.fabric.utilities.data import has_len

from rnnt.data.manifest import ManifestError
from tests.test_cuts import make_corpus
from tests.test_dataset import all_batches, datamodule
from tests.tiny import tiny_fit_config

REPO = Path(__file__).resolve().parents[1]
ONE_MB_TEXT = ("the cat sat on the mat " * 50_000)[:1_000_000]  # 1 MB, under the line limit
# The fit below runs in a child whose address space is capped: without the lattice bound the
# 1 MB transcript's loss asks for tens of GB, and must fail there, not take the machine down.
CHILD_ADDRESS_SPACE = 12 << 30
CHILD_PEAK_RSS = 3 << 30  # bytes; the tiny fit needs about 1 GB
CHILD_TIMEOUT_S = 150  # ~25 s alone on 2 cores; unfixed, it is still in its first epoch at 300 s


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _with_huge_transcript(corpus: Path, folder: Path) -> Path:
    """The corpus's manifest (absolute paths) plus a 1 MB transcript on a 2-4 s clip."""
    lines = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    for line in lines:
        line["audio_filepath"] = str(corpus / line["audio_filepath"])
    lines.append({**lines[0], "text": ONE_MB_TEXT})
    manifest = folder / "huge.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def test_setup_skips_an_oversized_transcript_in_every_split(corpus, tmp_path):
    manifest = str(_with_huge_transcript(corpus, tmp_path))
    module = datamodule(corpus, train_manifest=manifest, val_manifest=manifest)
    module.setup(None)
    for split in ("train", "val"):
        stats = module.setup_stats[split]
        assert dict(stats.skipped) == {"text_too_long_for_audio": 1}, split
        assert stats.examples[0].startswith(f"{manifest}:25: ")
        records = module._splits[split].records
        assert len(records) == 24  # realistic transcripts are all kept
        assert all(r.num_tokens == len(module.tokenizer.encode(r.text)) for r in records)
    with pytest.raises(ManifestError, match=r"huge\.jsonl:25: \d+ words in [\d.]+ s of audio"):
        datamodule(corpus, train_manifest=manifest, skip_invalid=False)


def test_val_loader_has_its_exact_length_and_training_an_estimate(corpus):
    module = datamodule(corpus, speed_perturb=[0.9, 1.0, 1.1])
    val = module.val_dataloader()
    first = [batch["ids"] for batch in all_batches(val)]
    assert has_len(val) and len(val) == len(first) > 1
    val.sampler.set_epoch(3)  # as Lightning does before each validation
    assert [batch["ids"] for batch in all_batches(val)] == first
    train = module.train_dataloader()
    assert not has_len(train)  # Lightning would end each epoch at a stale count
    actual = len(all_batches(train))
    assert abs(train.estimated_length - actual) <= max(2, 0.2 * actual)


_CHILD = """
import json, resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from rnnt.lightning_cli import make_cli
config = json.loads(open(sys.argv[1]).read())
cli = make_cli(config, run=False, root_dir=config["trainer"]["default_root_dir"])
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
print("RESULT", json.dumps({
    "steps": cli.trainer.global_step,
    "skipped": dict(cli.datamodule.setup_stats["train"].skipped),
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
"""


def test_fit_with_a_one_megabyte_transcript_trains_in_bounded_memory(corpus, tmp_path):
    config = tiny_fit_config(corpus, tmp_path, max_epochs=1, limit_val_batches=0)
    manifest = str(_with_huge_transcript(corpus, tmp_path))
    config["data"].update(
        train_manifest=manifest,
        val_manifest=str(corpus / "train.jsonl"),
        max_batch_duration=24.0,
        speed_perturb=[],
        noise_path=None,
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "config.json"), str(CHILD_ADDRESS_SPACE)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("RESULT", 1)[1])
    assert report["steps"] >= 3  # a whole epoch: every batch of the manifest
    assert report["skipped"] == {"text_too_long_for_audio": 1}
    assert report["peak_rss"] < CHILD_PEAK_RSS


def test_use_test_manifest_scores_another_test_set(corpus, tmp_path):
    lines = (corpus / "train.jsonl").read_text().splitlines()
    other = corpus / "few.jsonl"  # beside the audio: relative paths resolve
    other.write_text("\n".join(lines[:5]) + "\n")
    module = datamodule(corpus)
    module.setup("test")
    assert len(module._splits["test"].records) == 24
    module.use_test_manifest(str(other))
    module.setup("test")
    assert len(module._splits["test"].records) == 5
    assert module.setup_stats["test"] is not None
    assert sum(len(batch["texts"]) for batch in module.test_dataloader()) == 5
