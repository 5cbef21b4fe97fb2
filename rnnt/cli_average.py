"""``rnnt average``: one checkpoint whose weights are the mean of several (``rnnt/average.py``).

Kept apart from ``rnnt/cli.py`` like the demo's subcommands; ``rnnt.cli`` adds it to its parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rnnt import cli_args as check
from rnnt.arguments import refuse_existing


def _run_folder(text: str) -> Path:
    # A folder that exists: a run (runs/NAME) or its checkpoints/ folder.
    path = Path(text)
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise argparse.ArgumentTypeError(f"{text}: {what}; give a run folder, e.g. runs/NAME")
    return path


def _average(options: argparse.Namespace) -> None:
    from rnnt.average import select_checkpoints, write_average

    if options.run_dir is None and (options.last or options.best):
        raise ValueError(f"--{'last' if options.last else 'best'} picks files of a --run DIR")
    if not options.overwrite:
        refuse_existing([options.out], "--out")
    if options.run_dir is not None:
        chosen = select_checkpoints(options.run_dir, last=options.last, best=options.best)
        for found in chosen:
            score = "" if found.score is None else f", {found.monitor} {found.score:.4g}"
            print(f"{found.path} (epoch {found.epoch}, step {found.global_step}{score})")
        paths = [found.path for found in chosen]
    else:
        paths = options.checkpoints
    checkpoint = write_average(paths, options.out)
    kind = checkpoint.get("weights", "raw")
    print(f"{options.out}: the average of {len(paths)} checkpoints ({kind} weights)")


def add_average_command(commands: Any) -> None:
    """``rnnt average``: its arguments, on ``commands`` (an argparse subparsers action)."""
    average = commands.add_parser(
        "average",
        help="average the weights of several checkpoints of one run (for transcribe and export)",
    )
    source = average.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoints", nargs="+", type=check.existing_file, help="checkpoint files to average"
    )
    source.add_argument(
        "--run",
        dest="run_dir",  # (`run` is the command's function, see rnnt.cli.main)
        metavar="DIR",
        type=_run_folder,
        help="a run folder (runs/NAME, or its checkpoints/): pick files with --last or --best",
    )
    pick = average.add_mutually_exclusive_group()
    pick.add_argument(
        "--last",
        type=check.positive_int,
        help="the N newest distinct checkpoints of --run, by the global step stored in them",
    )
    pick.add_argument(
        "--best",
        type=check.positive_int,
        help="the N best checkpoints of --run by the run's record of val_loss",
    )
    average.add_argument(
        "--out", required=True, type=check.output_file, help="the averaged checkpoint, X.ckpt"
    )
    average.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    average.set_defaults(run=_average)
