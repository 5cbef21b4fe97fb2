"""The demo's subcommands of ``rnnt``: ``demo-data`` (the corpus) and ``demo`` (everything).

Kept apart from ``rnnt/cli.py`` so that the main command stays one screenful per subcommand;
``rnnt.cli`` adds both to its parser.
"""

from __future__ import annotations

import argparse
from typing import Any

from rnnt import cli_args as check
from rnnt import constants as C
from rnnt.arguments import refuse_existing
from rnnt.corpus.engines import ENGINES


def _demo_data(options: argparse.Namespace) -> None:
    from rnnt.corpus.synth import describe_sources, synthesize_demo_corpus

    if not options.overwrite:  # a corpus there (the user's own, or another demo) stays
        corpus = ["train.jsonl", "val.jsonl", "test.jsonl", "corpus.json", "audio", "noise"]
        refuse_existing([options.out / name for name in corpus], "--out")
    paths = synthesize_demo_corpus(
        options.out,
        train_hours=options.train_hours,
        val_utterances=options.val_utterances,
        test_utterances=options.test_utterances,
        unseen_utterances=options.unseen_utterances,
        engines=options.engines,
        recordings=options.recordings,
        human_training=options.human_training,
        seed=options.seed,
        num_workers=options.workers,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(describe_sources(options.out / "corpus.json"))


def _demo(options: argparse.Namespace) -> None:
    from rnnt.demo import run_demo

    run_demo(
        options.out,
        train_hours=options.train_hours,
        max_epochs=options.max_epochs,
        max_minutes=options.max_minutes,
        preset=options.preset,
        num_workers=options.workers,
        seed=options.seed,
    )


def add_demo_data_command(commands: Any) -> None:
    """``rnnt demo-data``: its arguments, on ``commands`` (an argparse subparsers action)."""
    demo_data = commands.add_parser(
        "demo-data", help="synthesize the demo corpus with the speech engines installed"
    )
    demo_data.add_argument("--out", required=True, type=check.output_folder, help="output folder")
    demo_data.add_argument("--train-hours", type=check.positive_float, default=C.DEMO_TRAIN_HOURS)
    demo_data.add_argument(
        "--val-utterances", type=check.positive_int, default=C.DEMO_VAL_UTTERANCES
    )
    demo_data.add_argument(
        "--test-utterances", type=check.positive_int, default=C.DEMO_TEST_UTTERANCES
    )
    demo_data.add_argument(
        "--unseen-utterances",
        type=check.positive_int,
        default=C.DEMO_UNSEEN_UTTERANCES,
        help="utterances of the held-out split (test_unseen_engine or test_unseen_voice)",
    )
    demo_data.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=list(ENGINES),
        help="speech engines to use where installed (default: all; espeak is required)",
    )
    recordings = demo_data.add_mutually_exclusive_group()
    recordings.add_argument(
        "--with-recordings",
        dest="recordings",
        action="store_true",
        default=None,
        help="require the human recordings of `make voices` (default: use them where installed)",
    )
    recordings.add_argument(
        "--without-recordings", dest="recordings", action="store_false", help="no human recordings"
    )
    demo_data.add_argument(
        "--human-training",
        action=argparse.BooleanOptionalAction,
        default=C.DEMO_HUMAN_TRAINING,
        help="train on the recordings' clips too (game phrases and words)",
    )
    demo_data.add_argument("--seed", type=check.seed, default=C.SEED)
    demo_data.add_argument(
        "--workers", type=check.positive_int, default=None, help="processes (default: all cores)"
    )
    demo_data.add_argument(
        "--overwrite", action="store_true", help="replace a corpus already in --out"
    )
    demo_data.set_defaults(run=_demo_data)


def add_demo_command(commands: Any) -> None:
    """``rnnt demo``: its arguments, on ``commands`` (an argparse subparsers action)."""
    demo = commands.add_parser(
        "demo", help="synthesize the demo corpus, train a tokenizer and a tiny model, test it"
    )
    demo.add_argument(
        "--out", required=True, type=check.output_folder, help="folder for corpus, runs, summary"
    )
    demo.add_argument("--train-hours", type=check.positive_float, default=C.DEMO_TRAIN_HOURS)
    demo.add_argument("--max-epochs", type=check.positive_int, default=C.DEMO_MAX_EPOCHS)
    demo.add_argument(
        "--max-minutes",
        type=check.positive_float,
        default=C.DEMO_MAX_TRAIN_MINUTES,
        help="training time cap",
    )
    demo.add_argument("--preset", type=check.preset, default=C.DEMO_PRESET)
    demo.add_argument(
        "--workers",
        type=check.non_negative_int,
        default=C.DEMO_NUM_WORKERS,
        help="data-loader workers",
    )
    demo.add_argument("--seed", type=check.seed, default=C.SEED)
    demo.set_defaults(run=_demo)
