"""``rnnt shard``: a NeMo manifest's audio written as lhotse Shar shards, with ``shards.json``.

``write_shards`` validates the manifest and reads each audio file's header as training does
(``rnnt.data.records``: the same checks and counted skips), then writes the utterances in
manifest order, ``shard_size`` per shard, with lhotse's ``SharWriter``: per shard a
``cuts.NNNNNN.jsonl.gz`` (each cut with the manifest's transcript as written: normalisation
happens when training reads it) and a ``recording.NNNNNN.tar`` holding each utterance's stretch
of audio at its file's own sample rate and channels, as 16-bit FLAC (or WAV). 16-bit sources
come back sample for sample; deeper ones (24-bit, float) are rounded to 16 bits.

Shards are written into a staging folder and moved into place when complete; each finished
shard is recorded in ``shards.partial.json``, and ``shards.json`` (the index that
``rnnt.data.shar`` reads: files, sizes, durations) is written last, atomically. An interrupted
run so never leaves a set that looks complete, and running the same command again keeps the
shards already written and writes the rest. Shards are independent: ``workers`` processes
write several at once.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lhotse.shar import SharWriter
from lhotse.utils import fastcopy

from rnnt.constants import (
    SHAR_AUDIO_FORMAT,
    SHAR_AUDIO_FORMATS,
    SHAR_INDEX_FILE,
    SHAR_PARTIAL_INDEX_FILE,
    SHAR_SHARD_SIZE,
)
from rnnt.data.audio import describe_error
from rnnt.data.manifest import read_manifest_with_stats
from rnnt.data.manifest_stats import ManifestStats, ScanProgress
from rnnt.data.records import AudioRecord, load_audio_records_with_stats
from rnnt.data.shar_index import INDEX_FORMAT, INDEX_VERSION, shard_entry

logger = logging.getLogger(__name__)
STAGING_FOLDER = ".rnnt-shard-staging"  # shards being written, moved into place when complete
_SHARD_FILE = re.compile(r"^(cuts\.\d{6}\.jsonl\.gz|recording\.\d{6}\.tar)$")
_REPORTED_FAILURES = 5  # per shard, utterances whose audio failed named in the log


@dataclass
class ShardingResult:
    """What ``write_shards`` wrote: ``num_cuts`` utterances of ``duration`` seconds in
    ``num_shards`` shards of ``shard_bytes`` bytes (the source audio files: ``source_bytes``);
    ``resumed_shards`` of them were already there from an unfinished run. ``stats`` counts the
    manifest's skips; ``failures`` names the utterances whose audio failed to load while
    writing (left out)."""

    index_path: Path
    num_shards: int
    num_cuts: int
    duration: float
    shard_bytes: int
    source_bytes: int
    resumed_shards: int
    stats: ManifestStats
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the user: the index, counts, hours, bytes, skips."""
        counts = (
            f"{self.num_shards} shards, {self.num_cuts} utterances, "
            f"{self.duration / 3600:.3f} h of audio, {self.shard_bytes / 1e6:.1f} MB "
            f"(source audio files {self.source_bytes / 1e6:.1f} MB)"
        )
        if self.resumed_shards:
            counts += f"; {self.resumed_shards} shards kept from the unfinished run"
        lines = [f"shards: {self.index_path}", counts]
        skipped = dict(self.stats.skipped)
        if self.failures:
            skipped["audio_failed_to_load"] = len(self.failures)
        if any(skipped.values()):
            reasons = ", ".join(f"{reason} {count}" for reason, count in skipped.items() if count)
            lines.append(f"skipped: {reasons} (see the warnings above)")
        return "\n".join(lines)


def write_shards(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    shard_size: int = SHAR_SHARD_SIZE,
    audio_format: str = SHAR_AUDIO_FORMAT,
    skip_invalid: bool = True,
    workers: int = 1,
    overwrite: bool = False,
) -> ShardingResult:
    """Write ``manifest``'s utterances as Shar shards of ``shard_size`` into ``out``.

    Args:
        manifest: a NeMo JSON-lines manifest (checked as for training; ``skip_invalid``: bad
            lines and unreadable audio are skipped and counted, else the first is an error
            naming ``file:line``).
        out: the shard folder, made if missing.
        audio_format: ``flac`` (lossless, about half the bytes) or ``wav``.
        workers: processes writing shards at once.
        overwrite: replace a complete set (``shards.json``) or shard files already in ``out``.

    Raises:
        ManifestError: a bad manifest line (without ``skip_invalid``), or no usable utterance.
        ValueError: a set or shard files already in ``out`` and not ``overwrite``; a bad
            argument.
    """
    out = Path(out)
    if audio_format not in SHAR_AUDIO_FORMATS:
        raise ValueError(f"audio format {audio_format!r} must be one of {SHAR_AUDIO_FORMATS}")
    if shard_size < 1 or workers < 1:
        raise ValueError(f"shard_size {shard_size} and workers {workers} must be >= 1")
    records, stats = load_audio_records_with_stats(manifest, skip_invalid=skip_invalid)
    if not records:
        raise ValueError(f"{manifest}: no usable utterance to shard; see the warnings above")
    texts = _manifest_texts(manifest)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(manifest, shard_size, audio_format, skip_invalid)
    done = _prepare_folder(out, fingerprint, overwrite)
    chunks = [records[start : start + shard_size] for start in range(0, len(records), shard_size)]
    resumed = len(done)
    if resumed:
        logger.info("%s: resuming, %d of %d shards already written", out, resumed, len(chunks))
    staging = out / STAGING_FOLDER
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    tasks = [
        (
            number,
            [(record, texts[_line_of(record)]) for record in chunk],
            str(staging),
            audio_format,
        )
        for number, chunk in enumerate(chunks)
        if number not in done
    ]
    failures: list[str] = []
    progress = ScanProgress(str(out), "shards written:", logger, total=len(chunks), enabled=True)
    for number, files, durations, failed in _run(tasks, workers):
        failures.extend(failed)
        for message in failed[:_REPORTED_FAILURES]:
            logger.warning("left out of the shards: %s", message)
        if files:  # a shard whose every utterance failed has no files
            for name in files.values():
                os.replace(staging / name, out / name)
            done[number] = shard_entry(out, files, durations)
        _write_json(out / SHAR_PARTIAL_INDEX_FILE, {"fingerprint": fingerprint, "done": done})
        progress.update(len(done))
    entries = [done[number] for number in sorted(done)]
    if not entries:
        raise ValueError(f"{manifest}: no utterance's audio could be loaded; nothing to shard")
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "manifest": str(manifest),
        "audio_format": audio_format,
        "shard_size": shard_size,
        "num_cuts": sum(entry["num_cuts"] for entry in entries),
        "duration": round(sum(sum(entry["durations"]) for entry in entries), 3),
        "skipped": {**stats.skipped, "audio_failed_to_load": len(failures)},
        "shards": entries,
    }
    _write_json(out / SHAR_INDEX_FILE, index)  # last: from here on the set is complete
    (out / SHAR_PARTIAL_INDEX_FILE).unlink()
    shutil.rmtree(staging, ignore_errors=True)
    return ShardingResult(
        index_path=out / SHAR_INDEX_FILE,
        num_shards=len(entries),
        num_cuts=index["num_cuts"],
        duration=index["duration"],
        shard_bytes=sum(sum(entry["bytes"].values()) for entry in entries),
        source_bytes=sum(os.path.getsize(path) for path in {r.path for r in records}),
        resumed_shards=resumed,
        stats=stats,
        failures=failures,
    )


def _manifest_texts(manifest: str | os.PathLike) -> dict[int, str]:
    # line -> transcript as the manifest has it (the records hold it normalised)
    utterances, _ = read_manifest_with_stats(
        manifest, skip_invalid=True, check_audio=False, log_skips=False
    )
    return {utterance.line: utterance.text for utterance in utterances}


def _line_of(record: AudioRecord) -> int:
    return int(record.id.rsplit(":", 1)[1])  # records are named "{manifest name}:{line}"


def _fingerprint(manifest, shard_size: int, audio_format: str, skip_invalid: bool) -> dict:
    # What must be the same for a rerun to keep the shards an unfinished run wrote.
    info = os.stat(manifest)
    return {
        "manifest": os.path.abspath(manifest),
        "manifest_bytes": info.st_size,
        "manifest_mtime_ns": info.st_mtime_ns,
        "shard_size": shard_size,
        "audio_format": audio_format,
        "skip_invalid": skip_invalid,
    }


def _prepare_folder(out: Path, fingerprint: dict, overwrite: bool) -> dict[int, dict]:
    """The shards an unfinished run of the same command left (number -> index entry); every
    other shard file, and a complete set when ``overwrite``, removed."""
    index = out / SHAR_INDEX_FILE
    if index.exists():
        if not overwrite:
            raise ValueError(f"{index} already there (a complete shard set); pass --overwrite")
        index.unlink()  # first: the set no longer looks complete while its files go
    done: dict[int, dict] = {}
    partial = out / SHAR_PARTIAL_INDEX_FILE
    if partial.is_file():
        try:
            state = json.loads(partial.read_text(encoding="utf-8"))
            if state["fingerprint"] == fingerprint:
                done = {int(number): entry for number, entry in state["done"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            done = {}
        done = {number: entry for number, entry in done.items() if _intact(out, entry)}
    kept = {entry[name] for entry in done.values() for name in ("cuts", "recording")}
    stray = [path for path in out.iterdir() if _SHARD_FILE.match(path.name)]
    stray = [path for path in stray if path.name not in kept]
    if stray and not (overwrite or partial.is_file()):
        raise ValueError(
            f"{out} already holds shard files ({stray[0].name}, {len(stray)} in all) that no "
            "unfinished rnnt shard run left; pass --overwrite to replace them, or choose "
            "another folder"
        )
    for path in stray:
        path.unlink()
    return done


def _intact(out: Path, entry: dict) -> bool:
    return all(
        (out / entry[name]).is_file() and (out / entry[name]).stat().st_size == entry["bytes"][name]
        for name in ("cuts", "recording")
    )


def _write_json(path: Path, content: dict) -> None:
    # Atomic: a reader sees the old file or the new one, never half of one.
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _run(tasks: list, workers: int) -> Iterator[tuple[int, dict[str, str], list[float], list[str]]]:
    if workers == 1 or len(tasks) < 2:
        yield from map(_write_shard, tasks)
        return
    context = multiprocessing.get_context("spawn")  # no forked copy of a threaded parent
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(_write_shard, tasks)


def _write_shard(task) -> tuple[int, dict[str, str], list[float], list[str]]:
    """Write one shard into the staging folder: (number, field -> file name, durations of the
    cuts written, "id (path): why" of those whose audio failed to load)."""
    number, items, staging, audio_format = task
    durations: list[float] = []
    failed: list[str] = []
    writer = SharWriter(
        staging, fields={"recording": audio_format}, shard_size=len(items), shard_offset=number
    )
    with writer:
        for record, text in items:
            cut = record.to_cut()
            supervision = fastcopy(cut.supervisions[0], text=text)
            cut = fastcopy(cut, supervisions=[supervision])
            try:
                writer.write(cut)
            except Exception as error:  # any decoder failure: the shard goes on without it
                failed.append(f"{record.id} ({record.path}): {describe_error(error)}")
                continue
            durations.append(cut.duration)
    files = {name: Path(paths[0]).name for name, paths in writer.output_paths.items() if paths}
    return number, files if len(files) == 2 else {}, durations, failed
