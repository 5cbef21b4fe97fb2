"""The demo's promise, end to end: from nothing to a tested model within its time budget, and
what the trained model gives at inference (beam search, sherpa-onnx export)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnt.constants import BEAM_SIZE, DEMO_MAX_TRAIN_MINUTES
from rnnt.demo import HELDOUT_SPLITS, run_demo

# The test split now holds Piper and Flite speech besides eSpeak's: README, "The demo corpus".
DEMO_WER_TARGET = 0.30
DEMO_WALL_MINUTES = 20  # issue: `make demo` within 20 minutes on 2 CPU cores
# sherpa-onnx computes the same log-mel features as training (frontend_style "sherpa"), in
# its own float32 code: rounding may flip a near-tie argmax now and then; measured 0.0.
SHERPA_WER_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    """(demo folder, summary) of a whole `rnnt demo` run."""
    folder = tmp_path_factory.mktemp("demo") / "demo"
    return folder, run_demo(folder)


@pytest.mark.slow
def test_demo_reaches_target_wer_within_time_budget(demo):
    folder, summary = demo
    assert summary == json.loads((folder / "summary.json").read_text())
    assert summary["test_wer"] <= DEMO_WER_TARGET
    assert summary["train_seconds"] <= DEMO_MAX_TRAIN_MINUTES * 60 + 60
    assert summary["total_seconds"] <= DEMO_WALL_MINUTES * 60
    assert Path(summary["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_demo_scores_every_heldout_split_it_made(demo):
    folder, summary = demo
    made = {split for split in HELDOUT_SPLITS if (folder / "data" / f"{split}.jsonl").is_file()}
    # One of the two unseen splits always; test_human where recordings are installed.
    assert len(made & {"test_unseen_engine", "test_unseen_voice"}) == 1
    for split, key in HELDOUT_SPLITS.items():
        if split in made:
            assert 0.0 <= summary[key] < 2.0, key
        else:
            assert key not in summary
    assert summary["engines"]["training_engines"][0] == "espeak"
    assert summary["corpus"]["train"]["utterances"] > 0


def check_beam_no_worse_than_greedy(folder: Path, checkpoint: Path, output: Path) -> None:
    from rnnt.checkpoint import load_checkpoint
    from rnnt.transcribe import transcribe_manifest

    model, tokenizer = load_checkpoint(checkpoint)
    manifest = folder / "data" / "test.jsonl"
    greedy = transcribe_manifest(model, tokenizer, manifest, output / "greedy.jsonl")
    beam = transcribe_manifest(
        model, tokenizer, manifest, output / "beam.jsonl", beam_size=BEAM_SIZE
    )
    assert beam.wer <= greedy.wer, (beam.wer, greedy.wer)


def check_sherpa_onnx_matches_pytorch(folder: Path, checkpoint: Path) -> None:
    pytest.importorskip(
        "sherpa_onnx", reason="sherpa-onnx is not installed (pip install .[export])"
    )
    from benchmarks.sherpa import main as compare

    report = compare(
        ["--checkpoint", str(checkpoint), "--manifest", str(folder / "data" / "test.jsonl")]
    )
    assert report["utterances"] > 0
    assert report["wer_sherpa_vs_pytorch"] <= SHERPA_WER_TOLERANCE, report


@pytest.mark.slow
def test_beam_search_is_no_worse_than_greedy_on_the_demo_test_split(demo, tmp_path):
    folder, summary = demo
    check_beam_no_worse_than_greedy(folder, Path(summary["last_checkpoint"]), tmp_path)


@pytest.mark.slow
def test_sherpa_onnx_transcribes_the_demo_test_split_like_rnnt(demo):
    folder, summary = demo
    check_sherpa_onnx_matches_pytorch(folder, Path(summary["last_checkpoint"]))


def test_a_stopped_demo_resumes_from_its_last_checkpoint_when_run_again(
    tiny_corpus, tmp_path, capsys
):
    import shutil

    import torch

    out = tmp_path / "demo"
    shutil.copytree(tiny_corpus, out / "data")  # a corpus already there is not synthesized again
    first = run_demo(out, max_epochs=1, max_minutes=None, num_workers=0)
    assert "a stopped run resumes when run again" in capsys.readouterr().out
    last = Path(first["last_checkpoint"])
    steps = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert steps == first["global_step"] > 0

    # As after a SIGTERM (which saves last.ckpt) or a SIGKILL: the same command goes on.
    second = run_demo(out, max_epochs=2, max_minutes=None, num_workers=0)
    assert f"resuming from {last}" in capsys.readouterr().out
    assert second["epochs"] == 2 and second["global_step"] == 2 * steps
