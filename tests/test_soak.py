"""Soak test: several epochs of demo-like training with data-loader workers, memory kept flat.

Slow (minutes; run with ``pytest -m slow tests/test_soak.py -s`` to see the figures). The
resident memory of the trainer and of its data-loader workers is read from ``/proc`` at the
end of every epoch; after the first epoch (imports done, workers started, allocator pools and
caches filled) it must stay flat.

The bounds, from the end of epoch 1 to the end of the last epoch:

* the summed RSS of the trainer and its workers grows by less than
  ``SOAK_MAX_GROWTH_FRACTION`` (10 %) of its epoch-1 value, about 180 MB. A leak of anything
  per training step (a batch's audio, a loss kept with its graph, decoded files cached
  without a bound) adds at least one batch of audio per step, ``DEMO_MAX_BATCH_DURATION`` s x
  64 KB/s = 3.8 MB, over the ~80 steps after epoch 1 here: about 300 MB, above the bound.
  The trainer's RSS is read after ``gc.collect()`` and glibc's ``malloc_trim(0)``: without
  them, pages that glibc keeps after ``free`` (fragmentation from tensors of changing
  shapes; no live object holds them) made the trainer's RSS creep by 350 MB over 8 epochs,
  slowing down as it went, while its live objects and tensors stayed flat;
* the bytes of live CPU tensors in the trainer grow by less than ``SOAK_MAX_TENSOR_GROWTH_MB``
  (two batches of audio): the exact leak signal for the process that holds the model.

Summed RSS counts the pages that forked workers share with the trainer once per process,
so it bounds the real use (PSS, reported too) from above.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import warnings
from dataclasses import asdict, dataclass

import lightning.pytorch as pl
import pytest
import torch

from rnnt.constants import DEMO_MAX_BATCH_DURATION, DEMO_VOCAB_SIZE
from tests.tiny import tiny_fit_config

SOAK_TRAIN_HOURS = 0.15  # synthesized training speech: ~145 utterances, ~12 steps an epoch
SOAK_VAL_UTTERANCES = 20
SOAK_EPOCHS = 8
SOAK_NUM_WORKERS = 1
SOAK_MAX_GROWTH_FRACTION = 0.10
SOAK_MAX_TENSOR_GROWTH_MB = 8.0


@dataclass
class MemorySample:
    """Resident memory at one epoch's end: KiB, from /proc/<pid>/status and smaps_rollup."""

    epoch: int
    main_rss_kb: int  # after gc.collect() and malloc_trim(0)
    main_rss_untrimmed_kb: int  # before them
    worker_rss_kb: list[int]
    total_pss_kb: int | None  # proportional set size: shared pages counted once
    tensor_mb: float  # live CPU tensor storage in the trainer

    @property
    def total_rss_mb(self) -> float:
        return (self.main_rss_kb + sum(self.worker_rss_kb)) / 1024


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def _pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                # The command name (field 2) may hold spaces: the parent id follows its ")".
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == pid:
            children.append(int(entry))
    return children


def _release_freed_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: free pages stay counted
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _live_tensor_mb() -> float:
    storages = {}
    with warnings.catch_warnings():  # isinstance() touches deprecated module attributes
        warnings.simplefilter("ignore")
        for candidate in gc.get_objects():
            if isinstance(candidate, torch.Tensor) and candidate.device.type == "cpu":
                storage = candidate.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) / 2**20


def measure_memory(epoch: int) -> MemorySample:
    """RSS of this process and of its child processes (the data-loader workers)."""
    main = os.getpid()
    untrimmed = _status_kb(main, "VmRSS")
    _release_freed_memory()
    workers = []
    pss: int | None = _pss_kb(main)
    for child in _children(main):
        try:
            workers.append(_status_kb(child, "VmRSS"))
            child_pss = _pss_kb(child)
        except (OSError, KeyError):
            continue
        pss = None if pss is None or child_pss is None else pss + child_pss
    return MemorySample(
        epoch, _status_kb(main, "VmRSS"), untrimmed, workers, pss, _live_tensor_mb()
    )


class MemoryRecorder(pl.Callback):
    """Measures memory at the end of every training epoch (after its validation)."""

    def __init__(self) -> None:
        self.samples: list[MemorySample] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.samples.append(measure_memory(trainer.current_epoch))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_memory_stays_flat_over_epochs_with_workers(tmp_path):
    from rnnt.corpus.synth import synthesize_demo_corpus
    from rnnt.data.tokenizer import train_tokenizer
    from rnnt.lightning_cli import make_cli

    corpus = tmp_path / "corpus"
    synthesize_demo_corpus(
        corpus,
        train_hours=SOAK_TRAIN_HOURS,
        val_utterances=SOAK_VAL_UTTERANCES,
        test_utterances=2,
        seed=11,
        num_workers=1,
        progress=False,
    )
    train_tokenizer([corpus / "train.jsonl"], corpus / "tokenizer.model", DEMO_VOCAB_SIZE)
    config = tiny_fit_config(corpus, tmp_path, max_epochs=SOAK_EPOCHS, log_every_n_steps=10)
    config["model"] = {"preset": "tiny", "warmup_steps": 100}  # the demo's model
    config["data"].update(
        num_workers=SOAK_NUM_WORKERS,
        max_batch_duration=DEMO_MAX_BATCH_DURATION,
        noise_probability=0.5,  # noise files decoded in the workers, every epoch
    )
    cli = make_cli(config, run=False, root_dir=str(tmp_path))
    recorder = MemoryRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    samples = recorder.samples
    report = [
        {**asdict(sample), "total_rss_mb": round(sample.total_rss_mb, 1)} for sample in samples
    ]
    (tmp_path / "soak_memory.json").write_text(json.dumps(report, indent=1))
    for sample in samples:
        pss = "n/a" if sample.total_pss_kb is None else f"{sample.total_pss_kb / 1024:.1f} MB"
        print(
            f"epoch {sample.epoch}: total RSS {sample.total_rss_mb:.1f} MB (main "
            f"{sample.main_rss_kb / 1024:.1f} MB, untrimmed "
            f"{sample.main_rss_untrimmed_kb / 1024:.1f} MB; workers "
            f"{[round(kb / 1024, 1) for kb in sample.worker_rss_kb]} MB), total PSS {pss}, "
            f"live tensors {sample.tensor_mb:.1f} MB"
        )
    assert len(samples) == SOAK_EPOCHS
    assert all(len(sample.worker_rss_kb) >= SOAK_NUM_WORKERS for sample in samples)
    growth = samples[-1].total_rss_mb - samples[0].total_rss_mb
    bound = SOAK_MAX_GROWTH_FRACTION * samples[0].total_rss_mb
    assert growth < bound, f"memory grew {growth:.1f} MB > {bound:.1f} MB: {report}"
    tensor_growth = samples[-1].tensor_mb - samples[0].tensor_mb
    assert tensor_growth < SOAK_MAX_TENSOR_GROWTH_MB, f"live tensors grew: {report}"
