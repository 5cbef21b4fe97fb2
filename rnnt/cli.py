"""The ``rnnt`` command.

``rnnt fit | validate | test`` are LightningCLI subcommands (YAML configs, ``--print_config``,
``--ckpt_path``); the others are small tools around them:

    rnnt demo-data --out DIR        synthesize the demo corpus
    rnnt prepare CORPUS ...         manifests of LibriSpeech, Common Voice, MLS or an audio folder
    rnnt tokenizer --manifest M ... train a SentencePiece model
    rnnt demo --out DIR             the whole demo: corpus, tokenizer, training, test WER
    rnnt transcribe --checkpoint C  transcribe audio files or a manifest (greedy, beam, streaming)
    rnnt export --checkpoint C      ONNX encoder, decoder and joiner for sherpa-onnx
    rnnt shard --manifest M --out D lhotse Shar shards of a manifest's audio, to train from
    rnnt average --run R --best N   one checkpoint with the mean weights of several of a run
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rnnt import cli_args as check
from rnnt import constants as C
from rnnt.arguments import refuse_existing
from rnnt.cli_average import add_average_command
from rnnt.cli_demo import add_demo_command, add_demo_data_command
from rnnt.cli_prepare import add_prepare_command
from rnnt.cli_shard import add_shard_command
from rnnt.cli_transcribe import add_transcribe_command
from rnnt.lightning_cli import log_to_stderr, make_cli

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


# --- the other subcommands ---------------------------------------------------------------------
def _tokenizer(options: argparse.Namespace) -> None:
    from rnnt.data.tokenizer import train_tokenizer

    if not options.overwrite:
        refuse_existing([options.out, options.out.with_suffix(".vocab")], "--out")
    path = train_tokenizer(
        options.manifest,
        options.out,
        options.vocab_size,
        options.model_type,
        skip_invalid=options.skip_invalid,
    )
    print(f"tokenizer: {path}")


def _export(options: argparse.Namespace) -> None:
    from rnnt.export import export_onnx

    if not options.overwrite:
        names = [C.EXPORT_ENCODER_FILE, C.EXPORT_DECODER_FILE, C.EXPORT_JOINER_FILE]
        names.append(C.EXPORT_TOKENS_FILE)
        refuse_existing([options.out / name for name in names], "--out")
    if options.streaming:
        from rnnt.export_streaming import export_streaming_onnx

        paths = export_streaming_onnx(
            options.checkpoint, options.out, options.chunk_ms, options.opset, options.weights
        )
    else:
        paths = export_onnx(options.checkpoint, options.out, options.opset, weights=options.weights)
    for name, path in paths.items():
        print(f"{name}: {path}")


def _parser() -> argparse.ArgumentParser:
    parser = check.OneLineArgumentParser(
        prog="rnnt",
        description="RNN-Transducer speech recognition on PyTorch Lightning. "
        "Training subcommands: rnnt fit|validate|test --help (LightningCLI).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_data_command(commands)
    add_prepare_command(commands)

    tokenizer = commands.add_parser("tokenizer", help="train a SentencePiece tokenizer")
    tokenizer.add_argument(
        "--manifest",
        required=True,
        action="append",
        type=check.existing_file,
        help="training manifest (repeatable)",
    )
    tokenizer.add_argument(
        "--out", required=True, type=check.output_file, help="model file, e.g. tokenizer.model"
    )
    tokenizer.add_argument("--vocab-size", type=check.positive_int, default=C.VOCAB_SIZE)
    tokenizer.add_argument("--model-type", choices=["unigram", "bpe"], default=C.TOKENIZER_TYPE)
    tokenizer.add_argument(
        "--skip-invalid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip bad manifest lines and empty transcripts, counted by reason in one warning "
        "(--no-skip-invalid: stop at the first, naming file:line)",
    )
    tokenizer.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out model"
    )
    tokenizer.set_defaults(run=_tokenizer)
    add_demo_command(commands)
    add_shard_command(commands)
    add_average_command(commands)

    add_transcribe_command(commands)

    export = commands.add_parser(
        "export", help="ONNX encoder, decoder, joiner and tokens.txt for sherpa-onnx"
    )
    export.add_argument("--checkpoint", required=True, type=check.existing_file)
    check.add_weights_flag(export)
    export.add_argument("--out", required=True, type=check.output_folder, help="output folder")
    export.add_argument("--opset", type=check.opset, default=C.ONNX_OPSET)
    export.add_argument(
        "--streaming",
        action="store_true",
        help="an encoder with explicit caches for sherpa-onnx's OnlineRecognizer, run chunk by "
        "chunk (a model trained with causal_conv and a limited attention context [left, 0] or "
        "chunked ones; of several, the one that matches --chunk-ms)",
    )
    export.add_argument(
        "--chunk-ms",
        type=check.positive_int,
        default=C.STREAMING_CHUNK_MS,
        help="streaming chunk, ms (with --streaming)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace model files already in --out"
    )
    export.set_defaults(run=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``rnnt`` command.

    Errors in the user's input (a manifest line, a checkpoint file, an option) are printed as
    one line naming what is wrong, with exit status 2, not as a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    log_to_stderr(own_process=True)
    command = argv[0] if argv else "rnnt"
    try:
        if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
            make_cli(argv)
            return
        options = _parser().parse_args(argv)
        options.run(options)
    except KeyboardInterrupt:
        # Training saves on Ctrl-C itself (StopOnSignal); elsewhere a second Ctrl-C or one
        # outside training ends here, with what was written kept (e.g. OUT.jsonl.partial).
        print(f"rnnt {command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except argparse.ArgumentError as error:  # jsonargparse's (fit/validate/test), multi-line
        print(f"rnnt {command}: error: {check.one_line_parse_error(str(error))}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:
        if not _is_user_error(error):
            raise
        message = " ".join(str(error).split())
        if type(error).__name__ == "MisconfigurationException":
            message += " (a --trainer.* or --checkpoint.* setting that Lightning refused)"
        print(f"rnnt {command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_user_error(error: BaseException) -> bool:
    # Our own error types, and the plain ValueError/FileNotFoundError raised by our modules;
    # anything from deep inside a library keeps its traceback for a bug report.
    from rnnt.checkpoint import CheckpointError
    from rnnt.data.manifest import ManifestError
    from rnnt.hotwords import HotwordError
    from rnnt.prepare.writer import PrepareError

    if isinstance(error, (ManifestError, CheckpointError, PrepareError, HotwordError)):
        return True
    if isinstance(error, (FileNotFoundError, IsADirectoryError)):
        return True
    if type(error).__name__ in ("NonFiniteLossError", "MisconfigurationException"):
        return True  # (Lightning's exception for a setting it cannot run with)
    # A plain ValueError counts when it was raised by our own code (its innermost frame).
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    origin = traceback.tb_frame.f_globals.get("__name__", "") if traceback else ""
    return type(error) is ValueError and origin.startswith("rnnt.")


if __name__ == "__main__":
    main()
