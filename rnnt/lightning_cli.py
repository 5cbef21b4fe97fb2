"""The LightningCLI of ``rnnt fit | validate | test``, and the settings every run shares.

``make_cli`` builds it over ``TransducerModule`` and ``TransducerDataModule`` with the trainer
and checkpoint defaults below (all from ``rnnt/constants.py``): from a command line for the
``rnnt`` command, or from a config dictionary for ``rnnt demo`` and ``run.py``.

``rnnt test`` with several ``--data.test_manifest`` scores each in turn and prints a WER per
set (``rnnt.test_sets``).
"""

from __future__ import annotations

import logging
import sys
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


def use_tensor_cores(device: Any) -> bool:
    """Let float32 matmuls on ``device`` run in TF32 (``FLOAT32_MATMUL_PRECISION``) where it is a
    CUDA GPU that has TF32 (compute capability 8.0 and up); True where they now do.

    The setting is process-wide (``torch.set_float32_matmul_precision``) and left alone where
    the program chose one already. cuDNN's convolutions use TF32 by default.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return False
    if torch.get_float32_matmul_precision() == "highest":  # torch's default: not chosen
        torch.set_float32_matmul_precision(C.FLOAT32_MATMUL_PRECISION)
    return torch.get_float32_matmul_precision() != "highest"


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


# The subcommands that evaluate weights (they must be given some, see `_require_weights`).
EVALUATING_SUBCOMMANDS = ("validate", "test", "predict")
# Loggers whose lines are the same on every DDP rank (every rank reads the same manifests):
# only rank 0 prints them. The lines of other loggers on a rank > 0 are marked with the rank.
SAME_ON_EVERY_RANK = (
    "rnnt.data.records",
    "rnnt.data.manifest",
    "rnnt.data.manifest_stats",
    "rnnt.data.datamodule",
    "rnnt.data.tokenizer",
    "rnnt.test_sets",
)


class RankFilter(logging.Filter):
    """Drops the lines every DDP rank would print alike; marks other lines of a rank > 0."""

    def filter(self, record: logging.LogRecord) -> bool:
        from lightning.pytorch.utilities import rank_zero_only

        rank = getattr(rank_zero_only, "rank", 0)
        if not rank:
            return True
        if record.name.startswith(SAME_ON_EVERY_RANK):
            return False
        if not getattr(record, "rank_marked", False):
            record.msg, record.rank_marked = f"[rank {rank}] {record.msg}", True
        return True


class _CurrentStderrHandler(logging.StreamHandler):
    # Writes to whatever sys.stderr is when a line is logged, not the one of the moment the
    # handler was made: tests and programs that embed us swap sys.stderr.
    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def log_to_stderr(own_process: bool = False) -> None:
    """Our log lines on stderr, once: ``LEVEL name: message``, INFO and up, rank 0's alone
    where every rank would print the same line (``RankFilter``).

    Adds a handler to the ``rnnt`` logger unless it has one, or, when we are a library in
    someone else's program (``own_process`` false), unless the root logger has one: the user
    set logging up, and a root handler next to ours would print each line twice. The ``rnnt``
    command owns its process and always prints its own lines.
    """
    logger = logging.getLogger("rnnt")
    if not logger.handlers and (own_process or not logging.getLogger().handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    for handler in logger.handlers:
        if not any(isinstance(f, RankFilter) for f in handler.filters):
            handler.addFilter(RankFilter())


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
    from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
    from lightning.pytorch.cli import LightningCLI

    from rnnt.average import refuse_resuming
    from rnnt.callbacks import EstimatingProgressBar, StopOnSignal
    from rnnt.checkpoint import read_checkpoint
    from rnnt.data.datamodule import TransducerDataModule
    from rnnt.model_checkpoint import AtomicCheckpointIO, AtomicModelCheckpoint
    from rnnt.run_lock import hold_run_folder
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
            if ckpt_path and "://" not in str(ckpt_path) and Path(ckpt_path).exists():
                checkpoint = read_checkpoint(ckpt_path, mmap=True)  # a folder: one line too
                if subcommand == "fit":  # an average holds weights only: nothing to resume
                    refuse_resuming(checkpoint, ckpt_path)
            if subcommand in EVALUATING_SUBCOMMANDS:
                _require_weights(subcommand, self.config[subcommand])

        def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
            parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
            if subcommand in EVALUATING_SUBCOMMANDS:
                parser.add_argument(
                    "--allow_untrained",
                    type=bool,
                    default=False,
                    help="evaluate even without --ckpt_path or --model.init_from, i.e. the "
                    "randomly initialised model (a baseline); refused otherwise",
                )
            return parser

        def instantiate_trainer(self, **kwargs: Any):
            if self.subcommand not in (None, "fit"):
                # The run's config.yaml is what trained it: an evaluation saves its own beside.
                self.save_config_kwargs = {
                    **self.save_config_kwargs,
                    "config_filename": f"config-{self.subcommand}.yaml",
                }
            trainer = super().instantiate_trainer(**kwargs)
            # Before the processes start (each DDP process runs this CLI), so that Lightning's
            # hint to set the matmul precision finds it set.
            use_tensor_cores(trainer.strategy.root_device)
            # Whole checkpoint files and safe loading, unless the user chose their own IO
            # (`--trainer.plugins` with e.g. a SLURM environment keeps this one).
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
                trainer.strategy.checkpoint_io = AtomicCheckpointIO()
            # Lightning's own bar, unless the user chose another, gains a training total.
            if type(trainer.progress_bar_callback) is TQDMProgressBar:
                trainer.progress_bar_callback.__class__ = EstimatingProgressBar
            return trainer

        def fit(self, model, **kwargs: Any) -> None:
            # One live run per folder: a second `rnnt fit` into it is refused, not interleaved.
            with hold_run_folder(self.trainer):
                self.trainer.fit(model, **kwargs)

        def test(self, model, datamodule, **kwargs: Any) -> None:
            # One test manifest: Lightning's own test and results table, as ever.
            if len(datamodule.test_manifests) == 1:
                self.trainer.test(model, datamodule=datamodule, **kwargs)
                return
            from rnnt.test_sets import format_scores, score_test_sets

            kwargs.pop("verbose", None)  # one table for every set instead, below
            kwargs.pop("dataloaders", None)  # (the sets are the datamodule's)
            scores = score_test_sets(self.trainer, model, datamodule, **kwargs)
            if self.trainer.is_global_zero:
                print(format_scores(scores), flush=True)

        def before_validate(self) -> None:
            _check_ckpt_path(self.trainer, "validate", self.config_init["validate"])

        def before_test(self) -> None:
            _check_ckpt_path(self.trainer, "test", self.config_init["test"])

        def before_predict(self) -> None:
            _check_ckpt_path(self.trainer, "predict", self.config_init["predict"])

    # LightningCLI warns when `args` and sys.argv are both given; here `args` is deliberate.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    # The DataModule saves the sampler's position in the checkpoint (its state_dict), so a
    # mid-epoch resume continues with the next batch; Lightning looks only at the DataLoader
    # and would warn that it cannot.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    log_to_stderr()
    defaults = trainer_defaults(root_dir, run_name)
    # Callbacks of the defaults are always added, on top of any the user configures.
    defaults["callbacks"] = [LearningRateMonitor(logging_interval="step"), StopOnSignal()]
    return TransducerCLI(
        TransducerModule,
        TransducerDataModule,
        trainer_defaults=defaults,
        save_config_kwargs={"overwrite": True},
        # Parse errors raise (rnnt.cli prints them as one line) instead of usage + message.
        parser_kwargs={"exit_on_error": False},
        seed_everything_default=C.SEED,
        args=args if isinstance(args, dict) else list(args),
        run=run,
    )


def _require_weights(subcommand: str, config: Any) -> None:
    """Refuse to evaluate a randomly initialised model unless ``--allow_untrained true``."""
    model = config.get("model") or {}
    if config.get("ckpt_path") or model.get("init_from") or config.get("allow_untrained"):
        return
    raise ValueError(
        f"no weights to {subcommand}: give --ckpt_path last (the run's newest checkpoint) or "
        "--ckpt_path FILE.ckpt (--allow_untrained true scores the untrained model on purpose)"
    )


def _check_ckpt_path(trainer: Any, subcommand: str, config: Any) -> None:
    """``--ckpt_path last|best`` of an evaluation must name a checkpoint that exists.

    (Lightning would only warn that there is no ``last`` and score the untrained model, or
    raise its own error for ``best``, which a new process never knows.)
    """
    ckpt_path = config.get("ckpt_path")
    callback = trainer.checkpoint_callback
    if ckpt_path == "best":
        raise ValueError(
            "--ckpt_path best: only a `fit` knows its best checkpoint; give --ckpt_path last "
            "or the file, e.g. --ckpt_path runs/RUN/checkpoints/rnnt-03-12.34.ckpt"
        )
    if ckpt_path == "last" and callback is not None:
        found = getattr(callback, "_find_last_checkpoints", lambda trainer: {"?"})(trainer)
        if not found:
            folder = trainer.logger.log_dir if trainer.logger else trainer.default_root_dir
            raise ValueError(
                f"--ckpt_path last: no last.ckpt in {folder}/checkpoints: check the run folder "
                "(--trainer.logger.init_args.name, --trainer.default_root_dir) or give "
                "--ckpt_path FILE.ckpt"
            )
