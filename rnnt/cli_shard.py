"""``rnnt shard``: a manifest's audio as lhotse Shar shards, to train from (``--data.shar_dir``).

Kept apart from ``rnnt/cli.py`` like the demo's subcommands; ``rnnt.cli`` adds it to its parser.
"""

from __future__ import annotations

import argparse
from typing import Any

from rnnt import cli_args as check
from rnnt import constants as C
from rnnt.arguments import refuse_existing


def _shard(options: argparse.Namespace) -> None:
    from rnnt.data.shar_writer import write_shards

    if not options.overwrite:  # a complete set there stays
        refuse_existing([options.out / C.SHAR_INDEX_FILE], "--out")
    result = write_shards(
        options.manifest,
        options.out,
        shard_size=options.shard_size,
        audio_format=options.format,
        skip_invalid=options.skip_invalid,
        workers=options.workers,
        overwrite=options.overwrite,
    )
    print(result.summary())


def add_shard_command(commands: Any) -> None:
    """``rnnt shard``: its arguments, on ``commands`` (an argparse subparsers action)."""
    shard = commands.add_parser(
        "shard", help="write a manifest's audio as lhotse Shar shards (--data.shar_dir)"
    )
    shard.add_argument(
        "--manifest", required=True, type=check.existing_file, help="NeMo JSON-lines manifest"
    )
    shard.add_argument(
        "--out",
        required=True,
        type=check.output_folder,
        help=f"shard folder: shards and their index {C.SHAR_INDEX_FILE}",
    )
    shard.add_argument(
        "--shard-size",
        type=check.positive_int,
        default=C.SHAR_SHARD_SIZE,
        help="utterances per shard (several shards per training rank)",
    )
    shard.add_argument(
        "--format",
        choices=C.SHAR_AUDIO_FORMATS,
        default=C.SHAR_AUDIO_FORMAT,
        help="audio encoding in the shards (16-bit, lossless)",
    )
    shard.add_argument(
        "--workers", type=check.positive_int, default=1, help="processes writing shards"
    )
    shard.add_argument(
        "--skip-invalid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip bad manifest lines and unreadable audio, counted by reason "
        "(--no-skip-invalid: stop at the first, naming file:line)",
    )
    shard.add_argument(
        "--overwrite", action="store_true", help="replace a shard set already in --out"
    )
    shard.set_defaults(run=_shard)
