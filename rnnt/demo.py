"""``rnnt demo``: from nothing to a tested model on one machine, with no download.

1. synthesize the demo corpus (eSpeak NG, see ``rnnt/data/synth.py``) into ``OUT/data``;
2. train a SentencePiece tokenizer on its training split;
3. train the ``tiny`` Conformer-Transducer with the same LightningCLI configuration machinery
   as ``rnnt fit`` (so ``configs/demo.yaml`` reproduces it), capped in wall time;
4. test the best checkpoint on the test split (unseen sentences, some unseen voices) and on
   each held-out split the corpus has (``HELDOUT_SPLITS``: an engine never heard in training,
   or eSpeak voices never heard where no engine can be held out; human recordings);
5. write ``OUT/summary.json``.

Each step reuses what an earlier, interrupted demo left in ``OUT``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rnnt import constants as C

# Held-out test splits (manifest OUT/data/<split>.jsonl) and the summary key of each one's WER.
HELDOUT_SPLITS = {
    "test_unseen_engine": "test_wer_unseen_engine",
    "test_unseen_voice": "test_wer_unseen_voice",
    "test_human": "test_wer_human",
}


def _days_hours_minutes_seconds(minutes: float) -> str:
    # Lightning's max_time as "DD:HH:MM:SS"
    seconds = round(minutes * 60)
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def demo_config(
    data_dir: str | Path,
    preset: str = C.DEMO_PRESET,
    max_epochs: int = C.DEMO_MAX_EPOCHS,
    max_minutes: float | None = C.DEMO_MAX_TRAIN_MINUTES,
    num_workers: int = C.DEMO_NUM_WORKERS,
    seed: int = C.SEED,
) -> dict[str, Any]:
    """The demo's LightningCLI config: what ``configs/demo.yaml`` spells out for ``rnnt fit``."""
    data_dir = Path(data_dir)
    trainer: dict[str, Any] = {"max_epochs": max_epochs}
    if max_minutes:
        trainer["max_time"] = _days_hours_minutes_seconds(max_minutes)
    return {
        "seed_everything": seed,
        "trainer": trainer,
        "model": {
            "preset": preset,
            "model_overrides": {"spec_augment": C.DEMO_SPEC_AUGMENT, "dropout": C.DEMO_DROPOUT},
            "learning_rate": C.DEMO_LEARNING_RATE,
            "warmup_steps": C.DEMO_WARMUP_STEPS,
        },
        "data": {
            "train_manifest": str(data_dir / "train.jsonl"),
            "val_manifest": str(data_dir / "val.jsonl"),
            "test_manifest": str(data_dir / "test.jsonl"),
            "tokenizer_path": str(data_dir / "tokenizer.model"),
            "noise_path": str(data_dir / "noise"),
            "noise_probability": C.DEMO_NOISE_PROBABILITY,
            "reverb_probability": C.DEMO_REVERB_PROBABILITY,
            "telephone_probability": C.DEMO_TELEPHONE_PROBABILITY,
            "clipping_probability": C.DEMO_CLIPPING_PROBABILITY,
            "channels_start_epoch": C.DEMO_CHANNELS_START_EPOCH,
            "max_batch_duration": C.DEMO_MAX_BATCH_DURATION,
            "num_workers": num_workers,
            "seed": seed,
        },
    }


def prepare_demo_data(data_dir: Path, train_hours: float, seed: int) -> Path:
    """Synthesize the corpus and train the tokenizer unless they are there; the tokenizer path."""
    from rnnt.corpus.synth import synthesize_demo_corpus
    from rnnt.data.tokenizer import train_tokenizer

    if not all((data_dir / f"{split}.jsonl").is_file() for split in ("train", "val", "test")):
        synthesize_demo_corpus(data_dir, train_hours=train_hours, seed=seed)
    tokenizer_path = data_dir / "tokenizer.model"
    if not tokenizer_path.is_file():
        train_tokenizer([data_dir / "train.jsonl"], tokenizer_path, C.DEMO_VOCAB_SIZE)
    return tokenizer_path


def run_demo(
    out: str | Path,
    train_hours: float = C.DEMO_TRAIN_HOURS,
    max_epochs: int = C.DEMO_MAX_EPOCHS,
    max_minutes: float | None = C.DEMO_MAX_TRAIN_MINUTES,
    preset: str = C.DEMO_PRESET,
    num_workers: int = C.DEMO_NUM_WORKERS,
    seed: int = C.SEED,
) -> dict[str, Any]:
    """Run the whole demo in ``out``; returns (and writes to ``out/summary.json``) its figures."""
    from rnnt.lightning_cli import make_cli
    from rnnt.run_lock import hold_run_folder
    from rnnt.test_sets import format_scores, score_test_sets

    out = Path(out)
    data_dir = out / "data"
    started = time.perf_counter()
    print(f"[1/3] demo corpus and tokenizer in {data_dir}", flush=True)
    prepare_demo_data(data_dir, train_hours, seed)
    from rnnt.corpus.synth import describe_sources

    print(describe_sources(data_dir / "corpus.json"), flush=True)
    data_seconds = time.perf_counter() - started

    # A demo stopped by SIGTERM (which saves last.ckpt), SIGKILL or a crash resumes from its
    # last checkpoint when run again: step, optimizer, data position and the time cap go on.
    last = out / "runs" / C.DEMO_RUN_NAME / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    print(
        f"[2/3] training the {preset} model (at most {max_minutes} minutes"
        + (f"; resuming from {last}" if resume else "; a stopped run resumes when run again")
        + ")",
        flush=True,
    )
    config = demo_config(data_dir, preset, max_epochs, max_minutes, num_workers, seed)
    cli = make_cli(config, run=False, root_dir=str(out / "runs"), run_name=C.DEMO_RUN_NAME)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    train_started = time.perf_counter()
    with hold_run_folder(trainer):  # a second demo into the same folder is refused
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    train_seconds = time.perf_counter() - train_started
    best = trainer.checkpoint_callback.best_model_path
    val_wer = trainer.callback_metrics.get("val_wer")

    print(f"[3/3] testing {best} on the test split (unseen sentences and voices)", flush=True)
    heldout = [split for split in HELDOUT_SPLITS if (data_dir / f"{split}.jsonl").is_file()]
    if heldout:
        print(f"      and on {', '.join(heldout)}", flush=True)
    manifests = [data_dir / "test.jsonl", *(data_dir / f"{split}.jsonl" for split in heldout)]
    scores = score_test_sets(trainer, model, datamodule, manifests, ckpt_path=best or "last")
    print(format_scores(scores), flush=True)
    test = scores[0]
    heldout_wers = {
        HELDOUT_SPLITS[split]: score.wer for split, score in zip(heldout, scores[1:], strict=True)
    }
    corpus = json.loads((data_dir / "corpus.json").read_text(encoding="utf-8"))
    summary = {
        "test_wer": test.wer,
        **heldout_wers,
        "test_loss": test.loss,
        "val_wer": None if val_wer is None else float(val_wer),
        "train_seconds": round(train_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "preset": preset,
        "parameters": model.model.num_parameters(),
        "best_checkpoint": best,
        "last_checkpoint": str(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"),
        "tensorboard": trainer.logger.log_dir,
        "corpus": {
            split: {key: info[key] for key in ("utterances", "hours", "engines") if key in info}
            for split, info in corpus["splits"].items()
        },
        "engines": {
            key: corpus["voices"].get(key)
            for key in ("training_engines", "heldout_engine", "skipped_engines")
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    wers = "".join(
        f"\n  {key}: {'n/a' if summary[key] is None else f'{100 * summary[key]:.2f}%'}"
        for key in ("test_wer", *heldout_wers)
    )
    print(
        f"\ndemo done in {summary['total_seconds'] / 60:.1f} min after {summary['epochs']} "
        f"epochs ({summary['train_seconds'] / 60:.1f} min of training):{wers}\n"
        f"  best checkpoint: {best}\n"
        f"  TensorBoard:     tensorboard --logdir {trainer.logger.log_dir}\n"
        f"  transcribe:      rnnt transcribe --checkpoint {best} AUDIO.wav\n"
        f"  summary:         {out / 'summary.json'}",
        flush=True,
    )
    return summary
