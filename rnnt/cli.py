"""The ``rnnt`` command.

``rnnt fit | validate | test`` are LightningCLI subcommands (YAML configs, ``--print_config``,
``--ckpt_path``); the others are small tools around them:

    rnnt demo-data --out DIR        synthesize the demo corpus
    rnnt tokenizer --manifest M ... train a SentencePiece model
    rnnt demo --out DIR             the whole demo: corpus, tokenizer, training, test WER
    rnnt transcribe --checkpoint C  transcribe audio files or a manifest (greedy, beam, streaming)
    rnnt export --checkpoint C      ONNX encoder, decoder and joiner for sherpa-onnx
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnt import constants as C
from rnnt.lightning_cli import make_cli

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


# --- the other subcommands ---------------------------------------------------------------------
def _demo_data(options: argparse.Namespace) -> None:
    from rnnt.corpus.synth import synthesize_demo_corpus

    paths = synthesize_demo_corpus(
        options.out,
        train_hours=options.train_hours,
        val_utterances=options.val_utterances,
        test_utterances=options.test_utterances,
        seed=options.seed,
        num_workers=options.workers,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")


def _tokenizer(options: argparse.Namespace) -> None:
    from rnnt.data.tokenizer import train_tokenizer

    path = train_tokenizer(options.manifest, options.out, options.vocab_size, options.model_type)
    print(f"tokenizer: {path}")


def _transcribe(options: argparse.Namespace) -> None:
    import torch

    from rnnt.checkpoint import load_checkpoint
    from rnnt.transcribe import AudioItem, format_result, transcribe, transcribe_manifest

    if bool(options.audio) == bool(options.manifest):
        raise SystemExit("rnnt transcribe: give audio files or --manifest IN.jsonl, not both")
    if options.beam < 1:
        raise SystemExit(f"rnnt transcribe: --beam {options.beam} must be >= 1 (1 = greedy)")
    if options.streaming and (options.manifest or options.beam != 1):
        raise SystemExit(
            "rnnt transcribe: --streaming decodes audio files greedily, chunk by chunk; "
            "it takes neither --manifest nor --beam"
        )
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_checkpoint(options.checkpoint, map_location=device)
    if options.streaming:
        _transcribe_streaming(model, tokenizer, options)
        return
    if options.manifest:
        if not options.output:
            raise SystemExit("rnnt transcribe: --manifest needs --output OUT.jsonl")
        result = transcribe_manifest(
            model,
            tokenizer,
            options.manifest,
            options.output,
            options.batch_seconds,
            beam_size=options.beam,
        )
        print(f"wrote {options.output}: {format_result(result)}")
        return
    texts, _ = transcribe(
        model,
        tokenizer,
        [AudioItem(p) for p in options.audio],
        options.batch_seconds,
        beam_size=options.beam,
    )
    for path, text in zip(options.audio, texts, strict=True):
        print(f"{path}\t{text}")


def _transcribe_streaming(model, tokenizer, options: argparse.Namespace) -> None:
    from rnnt.streaming import streaming_transcribe
    from rnnt.transcribe import AudioItem, load_audio

    for path in options.audio:
        text, stats = streaming_transcribe(
            model, tokenizer, load_audio(AudioItem(path), max_duration=None), options.chunk_ms
        )
        print(f"{path}\t{text}")
        print(f"{path}\tlatency: {_format_latency(stats)}", file=sys.stderr)


def _format_latency(stats: dict[str, Any]) -> str:
    return ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in stats.items()
    )


def _export(options: argparse.Namespace) -> None:
    from rnnt.export import export_onnx

    paths = export_onnx(options.checkpoint, options.out, opset=options.opset)
    for name, path in paths.items():
        print(f"{name}: {path}")


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnt",
        description="RNN-Transducer speech recognition on PyTorch Lightning. "
        "Training subcommands: rnnt fit|validate|test --help (LightningCLI).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo_data = commands.add_parser("demo-data", help="synthesize the demo corpus with eSpeak NG")
    demo_data.add_argument("--out", required=True, type=Path, help="output folder")
    demo_data.add_argument("--train-hours", type=float, default=C.DEMO_TRAIN_HOURS)
    demo_data.add_argument("--val-utterances", type=int, default=C.DEMO_VAL_UTTERANCES)
    demo_data.add_argument("--test-utterances", type=int, default=C.DEMO_TEST_UTTERANCES)
    demo_data.add_argument("--seed", type=int, default=C.SEED)
    demo_data.add_argument(
        "--workers", type=int, default=None, help="processes (default: all cores)"
    )
    demo_data.set_defaults(run=_demo_data)

    tokenizer = commands.add_parser("tokenizer", help="train a SentencePiece tokenizer")
    tokenizer.add_argument(
        "--manifest", required=True, action="append", help="training manifest (repeatable)"
    )
    tokenizer.add_argument(
        "--out", required=True, type=Path, help="model file, e.g. tokenizer.model"
    )
    tokenizer.add_argument("--vocab-size", type=int, default=C.VOCAB_SIZE)
    tokenizer.add_argument("--model-type", choices=["unigram", "bpe"], default=C.TOKENIZER_TYPE)
    tokenizer.set_defaults(run=_tokenizer)

    demo = commands.add_parser(
        "demo", help="synthesize the demo corpus, train a tokenizer and a tiny model, test it"
    )
    demo.add_argument("--out", required=True, type=Path, help="folder for corpus, runs, summary")
    demo.add_argument("--train-hours", type=float, default=C.DEMO_TRAIN_HOURS)
    demo.add_argument("--max-epochs", type=int, default=C.DEMO_MAX_EPOCHS)
    demo.add_argument(
        "--max-minutes", type=float, default=C.DEMO_MAX_TRAIN_MINUTES, help="training time cap"
    )
    demo.add_argument("--preset", default=C.DEMO_PRESET)
    demo.add_argument("--workers", type=int, default=C.DEMO_NUM_WORKERS, help="data-loader workers")
    demo.add_argument("--seed", type=int, default=C.SEED)
    demo.set_defaults(run=_demo)

    transcribe = commands.add_parser("transcribe", help="transcribe audio files or a manifest")
    transcribe.add_argument("--checkpoint", required=True, type=Path)
    transcribe.add_argument("audio", nargs="*", help="audio files; prints path<TAB>text")
    transcribe.add_argument("--manifest", type=Path, help="input manifest (JSON lines)")
    transcribe.add_argument("--output", type=Path, help="output manifest with pred_text added")
    transcribe.add_argument(
        "--batch-seconds",
        type=float,
        default=None,
        help=f"padded audio per batch (default {C.TRANSCRIBE_BATCH_SECONDS_CPU:g} s on the CPU, "
        f"{C.TRANSCRIBE_BATCH_SECONDS:g} s on a GPU)",
    )
    transcribe.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best)")
    transcribe.add_argument(
        "--beam", type=int, default=1, help=f"beam size; 1 = greedy (try {C.BEAM_SIZE})"
    )
    transcribe.add_argument(
        "--streaming",
        action="store_true",
        help="decode chunk by chunk with encoder caches (a model trained with "
        "attention_context_size [left, 0] and causal_conv) and print the latency measured",
    )
    transcribe.add_argument(
        "--chunk-ms", type=int, default=C.STREAMING_CHUNK_MS, help="streaming chunk, ms"
    )
    transcribe.set_defaults(run=_transcribe)

    export = commands.add_parser(
        "export", help="ONNX encoder, decoder, joiner and tokens.txt for sherpa-onnx"
    )
    export.add_argument("--checkpoint", required=True, type=Path)
    export.add_argument("--out", required=True, type=Path, help="output folder")
    export.add_argument("--opset", type=int, default=C.ONNX_OPSET)
    export.set_defaults(run=_export)
    return parser


def _log_to_stderr() -> None:
    # Our own loggers only: Lightning configures its own, and a root handler would print
    # each of its lines twice.
    logger = logging.getLogger("rnnt")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``rnnt`` command.

    Errors in the user's input (a manifest line, a checkpoint file, an option) are printed as
    one line naming what is wrong, with exit status 2, not as a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _log_to_stderr()
    command = argv[0] if argv else "rnnt"
    try:
        if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
            make_cli(argv)
            return
        options = _parser().parse_args(argv)
        options.run(options)
    except (ValueError, FileNotFoundError, IsADirectoryError, RuntimeError) as error:
        if not _is_user_error(error):
            raise
        print(f"rnnt {command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_user_error(error: BaseException) -> bool:
    # Our own error types, and the plain ValueError/FileNotFoundError raised by our modules;
    # anything from deep inside a library keeps its traceback for a bug report.
    from rnnt.checkpoint import CheckpointError
    from rnnt.data.manifest import ManifestError

    if isinstance(error, (ManifestError, CheckpointError, FileNotFoundError, IsADirectoryError)):
        return True
    if type(error).__name__ == "NonFiniteLossError":
        return True
    # A plain ValueError counts when it was raised by our own code (its innermost frame).
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    origin = traceback.tb_frame.f_globals.get("__name__", "") if traceback else ""
    return type(error) is ValueError and origin.startswith("rnnt.")


if __name__ == "__main__":
    main()
