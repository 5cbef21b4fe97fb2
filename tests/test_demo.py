"""The demo's promise, end to end: from nothing to a tested model within its time budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnt.constants import DEMO_MAX_TRAIN_MINUTES
from rnnt.demo import run_demo

DEMO_WER_TARGET = 0.15  # issue: at most 15 % WER on the demo test split
DEMO_WALL_MINUTES = 20  # issue: `make demo` within 20 minutes on 2 CPU cores


@pytest.mark.slow
def test_demo_reaches_target_wer_within_time_budget(tmp_path):
    summary = run_demo(tmp_path / "demo")
    assert summary == json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["test_wer"] <= DEMO_WER_TARGET
    assert summary["train_seconds"] <= DEMO_MAX_TRAIN_MINUTES * 60 + 60
    assert summary["total_seconds"] <= DEMO_WALL_MINUTES * 60
    assert Path(summary["best_checkpoint"]).is_file()
