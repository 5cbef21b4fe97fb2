"""``rnnt transcribe``: audio files or a manifest to text, timed words or subtitles.

Kept apart from ``rnnt/cli.py`` like the demo's subcommands; ``rnnt.cli`` adds it to its parser.
Audio files print ``path<TAB>text`` (``--timestamps``: one JSON line per file with its
``words``; ``--format srt|vtt``: a subtitle file per audio file as well); a manifest is written
to ``--output`` with ``pred_text`` (and ``words``) added (``rnnt/transcribe.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rnnt import cli_args as check
from rnnt import constants as C
from rnnt.arguments import refuse_existing


def _transcribe(options: argparse.Namespace) -> None:
    import torch

    from rnnt.checkpoint import load_checkpoint
    from rnnt.hotwords import load_hotwords, read_hotwords
    from rnnt.transcribe import check_output, format_result, transcribe_manifest

    _check_options(options)
    if options.beam is None:  # greedy, or a beam wide enough for hotwords
        options.beam = C.HOTWORD_BEAM_SIZE if options.hotwords else 1
    if options.manifest:  # before the checkpoint loads: a refused output costs nothing
        check_output(options.manifest, options.output, options.overwrite)
    if options.hotwords:  # the file's own errors (FILE:LINE) before the checkpoint loads
        read_hotwords(options.hotwords, options.hotword_boost)
    subtitles = _subtitle_paths(options) if options.format else {}
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_checkpoint(options.checkpoint, device, weights=options.weights)
    if options.attention_context:
        model.encoder.use_context(options.attention_context)
    hotwords = None
    if options.hotwords:
        hotwords = load_hotwords(options.hotwords, tokenizer, options.hotword_boost).to(device)
    if options.streaming:
        _transcribe_streaming(model, tokenizer, options, hotwords, subtitles)
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
            hotwords=hotwords,
            timestamps=options.timestamps,
        )
        print(f"wrote {options.output}: {format_result(result)}")
        return
    _transcribe_files(model, tokenizer, options, hotwords, subtitles)


def _check_options(options: argparse.Namespace) -> None:
    if bool(options.audio) == bool(options.manifest):
        raise SystemExit("rnnt transcribe: give audio files or --manifest IN.jsonl, not both")
    if options.streaming and options.attention_context:
        raise SystemExit(
            "rnnt transcribe: --streaming picks the attention context that matches --chunk-ms; "
            "--attention-context is for decoding whole files"
        )
    if options.streaming and options.manifest:
        raise SystemExit(
            "rnnt transcribe: --streaming decodes audio files chunk by chunk; it takes no "
            "--manifest"
        )
    if options.subtitle_dir and not options.format:
        raise SystemExit(
            "rnnt transcribe: --subtitle-dir is where --format srt|vtt writes; give both"
        )
    if options.format and options.manifest:
        raise SystemExit(
            "rnnt transcribe: --format srt|vtt writes a subtitle file per audio file; for a "
            "manifest, --timestamps adds each line's timed words to --output"
        )
    if options.manifest and not options.output:
        raise ValueError("--manifest needs --output OUT.jsonl (the manifest with pred_text added)")
    if options.output and not options.manifest:
        raise ValueError("--output is for --manifest; audio files print path<TAB>text on stdout")


def _subtitle_paths(options: argparse.Namespace) -> dict[str, Path]:
    # Each audio file's subtitle file: --subtitle-dir/STEM.srt (default: beside the audio).
    # Two files with one stem in one folder, or (without --overwrite) an existing subtitle file,
    # are refused before anything is decoded.
    pairs = [
        (
            audio,
            (options.subtitle_dir or Path(audio).parent) / f"{Path(audio).stem}.{options.format}",
        )
        for audio in options.audio
    ]
    seen: dict[Path, str] = {}
    for audio, path in pairs:
        if path in seen:
            raise ValueError(
                f"--format {options.format}: {seen[path]} and {audio} would both write {path}; "
                "give the files different names or transcribe them separately"
            )
        seen[path] = audio
    paths = dict(pairs)
    if not options.overwrite:
        refuse_existing(list(paths.values()), "--format")
    return paths


def _emit(path: str, transcript, options: argparse.Namespace, subtitles: dict[str, Path]) -> None:
    # One decoded file: path<TAB>text, or its JSON line with timed words; its subtitle file.
    from rnnt.subtitles import write_subtitles

    if options.timestamps:
        words = [word.to_dict() for word in transcript.words]
        line = {"audio": path, "text": transcript.text, "words": words}
        print(json.dumps(line, ensure_ascii=False), flush=True)
    else:
        print(f"{path}\t{transcript.text}", flush=True)
    if path in subtitles:
        subtitles[path].parent.mkdir(parents=True, exist_ok=True)
        write_subtitles(transcript.words, subtitles[path], options.format)


def _transcribe_files(model, tokenizer, options, hotwords, subtitles) -> None:
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
        hotwords=hotwords,
        timestamps=options.timestamps or bool(options.format),
    ):
        for transcript in window:
            path = options.audio[transcript.index]
            if transcript.error is None:
                _emit(path, transcript, options, subtitles)
            elif options.strict:
                raise transcript.error
            else:
                failed += 1
                print(f"{path}\tERROR: {transcript.error}", file=sys.stderr, flush=True)
    _exit_if_failed(failed, len(options.audio))


def _transcribe_streaming(model, tokenizer, options, hotwords, subtitles) -> None:
    from rnnt.streaming import StreamingSession, chunk_context, feed, latency_stats
    from rnnt.transcribe import LOAD_ERRORS, AudioItem, Transcript, load_audio

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
        session = StreamingSession(
            model, options.chunk_ms, beam_size=options.beam, hotwords=hotwords
        )
        text = tokenizer.decode(feed(session, audio))
        _emit(path, Transcript(0, text, words=session.words(tokenizer)), options, subtitles)
        print(f"{path}\tlatency: {_format_latency(latency_stats(session, audio))}", file=sys.stderr)
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


def add_transcribe_command(commands: argparse._SubParsersAction) -> None:
    """Add ``rnnt transcribe`` to the ``rnnt`` parser's subcommands."""
    transcribe = commands.add_parser(
        "transcribe", help="transcribe audio files or a manifest (text, timed words, subtitles)"
    )
    transcribe.add_argument("--checkpoint", required=True, type=check.existing_file)
    check.add_weights_flag(transcribe)
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
        default=None,
        help=f"beam size; 1 = greedy, the default (try {C.BEAM_SIZE}; with --hotwords the "
        f"default is {C.HOTWORD_BEAM_SIZE})",
    )
    transcribe.add_argument(
        "--hotwords",
        type=check.existing_file,
        help="phrases to favour, one a line, each with an optional per-token boost "
        f"'PHRASE :2.0' (decodes with beam search: --beam {C.HOTWORD_BEAM_SIZE} unless given)",
    )
    transcribe.add_argument(
        "--hotword-boost",
        type=check.positive_float,
        default=C.HOTWORD_BOOST,
        help="per-token boost of a --hotwords phrase that gives none",
    )
    transcribe.add_argument(
        "--timestamps",
        action="store_true",
        help="word start/end (seconds) and confidence: audio files print one JSON line each "
        "{audio, text, words: [{word, start, end, confidence}]}; a manifest's lines get words",
    )
    transcribe.add_argument(
        "--format",
        choices=C.SUBTITLE_FORMATS,
        help="also write each audio file's subtitles: STEM.srt or STEM.vtt",
    )
    transcribe.add_argument(
        "--subtitle-dir",
        type=check.output_folder,
        help="where --format writes (default: beside each audio file)",
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
        "--overwrite", action="store_true", help="replace an existing --output or subtitle file"
    )
    transcribe.set_defaults(run=_transcribe)
