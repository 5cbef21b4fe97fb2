"""The LightningCLI of ``rnnt fit | validate | test``, and the settings every run shares.

``make_cli`` builds it over ``TransducerModule`` and ``TransducerDataModule`` with the trainer
and checkpoint defaults below (all from ``rnnt/constants.py``): from a command line for the
``rnnt`` command, or from a config dictionary for ``rnnt demo`` and ``run.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnt import constants as C


def default_precision() -> str:
    """bf16 mixed precision where the GPU supports it, float32 elsewhere (CPU bf16 is slow)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return C.PRECISION_GPU
    return C.PRECISION_CPU


def trainer_defaults(root_dir: str = C.LOG_DIR, run_name: str = C.RUN_NAME) -> dict[str, Any]:
    """Trainer settings of every run: checkpoints, TensorBoard, clipping, precision.

    A run lives in ``root_dir/run_name``: TensorBoard events there, checkpoints in its
    ``checkpoints/`` folder (see ``checkpoint_defaults``). A resumed run writes to the same
    folder, so ``--ckpt_path last`` finds its checkpoint and TensorBoard continues its curves.
    """
    return {
        "default_root_dir": root_dir,
        "max_epochs": C.MAX_EPOCHS,
        "precision": default_precision(),
        "gradient_clip_val": C.GRADIENT_CLIP_VAL,
        # lhotse's samplers split the data across ranks themselves.
        "use_distributed_sampler": False,
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": root_dir, "name": run_name, "version": ""},
        },
    }


def checkpoint_defaults() -> dict[str, Any]:
    """``ModelCheckpoint`` settings (``--checkpoint.*``): ``rnnt-{epoch:02d}-{val_loss:.2f}.ckpt``
    for the best ``SAVE_TOP_K`` by validation loss, and ``last.ckpt``."""
    return {
        "monitor": "val_loss",
        "mode": "min",
        "filename": C.CHECKPOINT_FILENAME,
        "auto_insert_metric_name": False,
        "save_top_k": C.SAVE_TOP_K,
        "save_last": True,
    }


def make_cli(
    args: Sequence[str] | dict[str, Any],
    run: bool = True,
    root_dir: str = C.LOG_DIR,
    run_name: str = C.RUN_NAME,
):
    """A LightningCLI over ``TransducerModule`` and ``TransducerDataModule``.

    ``args`` is a command line (``["fit", "--config", "x.yaml"]``) when ``run`` is true, or a
    config dictionary (``{"model": {...}, "data": {...}, "trainer": {...}}``) when it is false.
    """
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.cli import LightningCLI

    from rnnt.callbacks import AtomicCheckpointIO, AtomicModelCheckpoint, StopOnSignal
    from rnnt.checkpoint import read_checkpoint
    from rnnt.data.datamodule import TransducerDataModule
    from rnnt.train import TransducerModule

    class TransducerCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # One tokenizer for data and model: set it once, as --data.tokenizer_path.
            parser.link_arguments("data.tokenizer_path", "model.tokenizer_path")
            parser.add_lightning_class_args(AtomicModelCheckpoint, "checkpoint")
            parser.set_defaults({f"checkpoint.{k}": v for k, v in checkpoint_defaults().items()})

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            # LightningCLI reads --ckpt_path's hyper-parameters right after parsing: a
            # truncated or foreign file must be a one-line error naming it, not a torch trace.
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path and "://" not in str(ckpt_path) and Path(ckpt_path).is_file():
                read_checkpoint(ckpt_path, mmap=True)

        def instantiate_trainer(self, **kwargs: Any):
            trainer = super().instantiate_trainer(**kwargs)
            # Whole checkpoint files and safe loading, unless the user chose their own IO
            # (`--trainer.plugins` with e.g. a SLURM environment keeps this one).
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
                trainer.strategy.checkpoint_io = AtomicCheckpointIO()
            return trainer

    # LightningCLI warns when `args` and sys.argv are both given; here `args` is deliberate.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    # The DataModule saves the sampler's position in the checkpoint (its state_dict), so a
    # mid-epoch resume continues with the next batch; Lightning looks only at the DataLoader
    # and would warn that it cannot.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    defaults = trainer_defaults(root_dir, run_name)
    # Callbacks of the defaults are always added, on top of any the user configures.
    defaults["callbacks"] = [LearningRateMonitor(logging_interval="step"), StopOnSignal()]
    return TransducerCLI(
        TransducerModule,
        TransducerDataModule,
        trainer_defaults=defaults,
        save_config_kwargs={"overwrite": True},
        args=args if isinstance(args, dict) else list(args),
        run=run,
    )
