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


@pytest.fixture
def log_lines_aside(monkeypatch):
    """Send Lightning's and our log handlers' lines to a buffer for the test.

    An error after the Trainer is built comes after Lightning's info lines ("GPU available:
    False"), which are no error; and a handler made while an earlier test captured stderr
    would write to that test's closed stream. The tests look at what ``main`` prints.
    """
    import io
    import logging

    import lightning.pytorch  # noqa: F401  (its handlers exist from its first import on)

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is logging.StreamHandler:  # (not torch's, which follow sys.stderr)
                monkeypatch.setattr(handler, "stream", io.StringIO())
