"""Shared fixtures: a tiny synthesized corpus with its tokenizer, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import TINY_VOCAB_SIZE


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A folder with train/val/test manifests, audio, noise/ and tokenizer.model."""
    from rnnt.corpus.synth import synthesize_demo_corpus
    from rnnt.data.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("tiny_corpus")
    synthesize_demo_corpus(
        folder,
        train_hours=0.02,
        val_utterances=6,
        test_utterances=6,
        seed=7,
        num_workers=1,
        progress=False,
    )
    train_tokenizer([folder / "train.jsonl"], folder / "tokenizer.model", TINY_VOCAB_SIZE)
    return folder
