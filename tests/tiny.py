"""The tiny model and training config that the end-to-end tests share."""

from __future__ import annotations

from pathlib import Path

TINY_VOCAB_SIZE = 48
# A model small enough to train a few steps in seconds on one CPU core.
TINY_MODEL = {
    "d_model": 32,
    "num_layers": 1,
    "num_heads": 2,
    "pred_embed_dim": 32,
    "pred_hidden_dim": 32,
    "joiner_dim": 32,
}


def tiny_fit_config(corpus: Path, root: Path, **trainer: object) -> dict:
    """A LightningCLI config that trains the tiny model on ``corpus`` with runs under ``root``."""
    return {
        "seed_everything": 1,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1000,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "default_root_dir": str(root),
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root), "name": "run", "version": ""},
            },
            **trainer,
        },
        "model": {"preset": "tiny", "model_overrides": TINY_MODEL, "warmup_steps": 5},
        "data": {
            "train_manifest": str(corpus / "train.jsonl"),
            "val_manifest": str(corpus / "val.jsonl"),
            "test_manifest": str(corpus / "test.jsonl"),
            "tokenizer_path": str(corpus / "tokenizer.model"),
            "noise_path": str(corpus / "noise"),
            "max_batch_duration": 12.0,
            "num_workers": 0,
        },
    }
