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
from typing import Any

from rnnt import cli_args as check
from rnnt import constants as C
from rnnt.arguments import refuse_existing
from rnnt.cli_average import add_average_command
from rnnt.cli_demo import add_demo_command, add_demo_data_command
from rnnt.cli_prepare import add_prepare_command
from rnnt.cli_shard import add_shard_command
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


def _transcribe(options: argparse.Namespace) -> None:
    import torch

    from rnnt.checkpoint import load_checkpoint
    from rnnt.transcribe import check_output, format_result, transcribe_manifest

    if bool(options.audio) == bool(options.manifest):
        raise SystemExit("rnnt transcribe: give audio files or --manifest IN.jsonl, not both")
    if options.beam < 1:
        raise SystemExit(f"rnnt transcribe: --beam {options.beam} must be >= 1 (1 = greedy)")
    if options.streaming and options.attention_context:
        raise SystemExit(
            "rnnt transcribe: --streaming picks the attention context that matches --chunk-ms; "
            "--attention-context is for decoding whole files"
        )
    if options.streaming and (options.manifest or options.beam != 1):
        raise SystemExit(
            "rnnt transcribe: --streaming decodes audio files greedily, chunk by chunk; "
            "it takes neither --manifest nor --beam"
        )
    if options.manifest and not options.output:
        raise ValueError("--manifest needs --output OUT.jsonl (the manifest with pred_text added)")
    if options.output and not options.manifest:
        raise ValueError("--output is for --manifest; audio files print path<TAB>text on stdout")
    if options.manifest:  # before the checkpoint loads: a refused output costs nothing
        check_output(options.manifest, options.output, options.overwrite)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_checkpoint(options.checkpoint, device, weights=options.weights)
    if options.attention_context:
        model.encoder.use_context(options.attention_context)
    if options.streaming:
        _transcribe_streaming(model, tokenizer, options)
        return
    if options.manifest:
        result = transcribe_manifest(
            model,
            tokenizer,
            options.manifest,
            options.output,
            options.batch_seconds,
            beam_size=options.beam,
            strict=options.strict,
            overwrite=options.overwrite,
        )
        print(f"wrote {options.output}: {format_result(result)}")
        return
    _transcribe_files(model, tokenizer, options)


def _transcribe_files(model, tokenizer, options: argparse.Namespace) -> None:
    # path<TAB>text on stdout as each window is decoded; a file that does not load is
    # path<TAB>ERROR: why on stderr, the others still print, and the exit status is 1.
    from rnnt.transcribe import AudioItem, transcribe_windows

    failed = 0
    for window in transcribe_windows(
        model,
        tokenizer,
        [AudioItem(path) for path in options.audio],
        batch_seconds=options.batch_seconds,
        beam_size=options.beam,
        stop_at_error=options.strict,
    ):
        for transcript in window:
            path = options.audio[transcript.index]
            if transcript.error is None:
                print(f"{path}\t{transcript.text}", flush=True)
            elif options.strict:
                raise transcript.error
            else:
                failed += 1
                print(f"{path}\tERROR: {transcript.error}", file=sys.stderr, flush=True)
    _exit_if_failed(failed, len(options.audio))


def _transcribe_streaming(model, tokenizer, options: argparse.Namespace) -> None:
    from rnnt.streaming import chunk_context, streaming_transcribe
    from rnnt.transcribe import LOAD_ERRORS, AudioItem, load_audio

    chunk_context(model, options.chunk_ms)  # a chunk this model cannot stream: one error first
    failed = 0
    for path in options.audio:
        try:
            audio = load_audio(AudioItem(path), max_duration=None)
        except LOAD_ERRORS as error:
            if options.strict:
                raise
            failed += 1
            print(f"{path}\tERROR: {error}", file=sys.stderr, flush=True)
            continue
        text, stats = streaming_transcribe(model, tokenizer, audio, options.chunk_ms)
        print(f"{path}\t{text}", flush=True)
        print(f"{path}\tlatency: {_format_latency(stats)}", file=sys.stderr)
    _exit_if_failed(failed, len(options.audio))


def _exit_if_failed(failed: int, total: int) -> None:
    if failed:
        print(
            f"rnnt transcribe: {failed} of {total} audio files failed (ERROR lines above; "
            "--strict stops at the first)",
            file=sys.stderr,
        )
        raise SystemExit(1)


def _format_latency(stats: dict[str, Any]) -> str:
    return ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in stats.items()
    )


def _export(options: argparse.Namespace) -> None:
    from rnnt.export import export_onnx

    if not options.overwrite:
        names = [C.EXPORT_ENCODER_FILE, C.EXPORT_DECODER_FILE, C.EXPORT_JOINER_FILE]
        names.append(C.EXPORT_TOKENS_FILE)
        refuse_existing([options.out / name for name in names], "--out")
    paths = export_onnx(options.checkpoint, options.out, options.opset, weights=options.weights)
    for name, path in paths.items():
        print(f"{name}: {path}")


def _add_weights_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        choices=[C.EMA_WEIGHTS, C.RAW_WEIGHTS],
        default=None,
        help="the checkpoint's EMA weights (a run with --model.ema_decay) or its raw trained "
        "ones (default: those its state_dict holds, the EMA ones where there are some)",
    )


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

    transcribe = commands.add_parser("transcribe", help="transcribe audio files or a manifest")
    transcribe.add_argument("--checkpoint", required=True, type=check.existing_file)
    _add_weights_flag(transcribe)
    transcribe.add_argument("audio", nargs="*", help="audio files; prints path<TAB>text")
    transcribe.add_argument(
        "--manifest", type=check.existing_file, help="input manifest (JSON lines)"
    )
    transcribe.add_argument(
        "--output", type=check.output_file, help="output manifest with pred_text added"
    )
    transcribe.add_argument(
        "--batch-seconds",
        type=check.positive_float,
        default=None,
        help=f"padded audio per batch (default {C.TRANSCRIBE_BATCH_SECONDS_CPU:g} s on the CPU, "
        f"{C.TRANSCRIBE_BATCH_SECONDS:g} s on a GPU)",
    )
    transcribe.add_argument("--device", type=check.device, help="cpu, cuda, cuda:1 (default: best)")
    transcribe.add_argument(
        "--beam",
        type=check.positive_int,
        default=1,
        help=f"beam size; 1 = greedy (try {C.BEAM_SIZE})",
    )
    transcribe.add_argument(
        "--streaming",
        action="store_true",
        help="decode chunk by chunk with encoder caches (a model trained with causal_conv and "
        "an attention context [left, 0] or chunked ones; of several, the one that matches "
        "--chunk-ms) and print the latency measured",
    )
    transcribe.add_argument(
        "--chunk-ms",
        type=check.positive_int,
        default=C.STREAMING_CHUNK_MS,
        help="streaming chunk, ms",
    )
    transcribe.add_argument(
        "--attention-context",
        nargs=2,
        type=int,
        metavar=("LEFT", "RIGHT"),
        help="decode whole files at this one of the model's attention contexts, e.g. -1 -1 "
        "(full) for a model trained at several (default: the first listed)",
    )
    transcribe.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable audio file or bad manifest line (exit 2) instead of "
        "skipping it (manifest: counted by reason; audio files: ERROR line, exit 1)",
    )
    transcribe.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file"
    )
    transcribe.set_defaults(run=_transcribe)

    export = commands.add_parser(
        "export", help="ONNX encoder, decoder, joiner and tokens.txt for sherpa-onnx"
    )
    export.add_argument("--checkpoint", required=True, type=check.existing_file)
    _add_weights_flag(export)
    export.add_argument("--out", required=True, type=check.output_folder, help="output folder")
    export.add_argument("--opset", type=check.opset, default=C.ONNX_OPSET)
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
    from rnnt.prepare.writer import PrepareError

    if isinstance(error, (ManifestError, CheckpointError, PrepareError)):
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
