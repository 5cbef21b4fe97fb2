"""What ``--data.train_manifest`` (and the val/test ones) name, opened for the DataModule.

A split's manifest is given as one path or as a list of manifests, each a path or a
``{path: ..., weight: ...}`` mapping (weights all given or none; see
``rnnt.data.lazy_source`` for what they mean). A path is a NeMo-style JSON-lines manifest
(``rnnt.data.manifest``) or a lhotse cut manifest (``cuts_*.jsonl.gz``, told apart by its first
line).

``open_split`` reads them in one of two ways:

* **checked at start-up** (``rnnt.data.records``): every line validated and every audio
  file's header read, so unreadable files and wrong durations are named before training
  starts. For one NeMo manifest of up to ``HEADER_READ_MAX_BYTES`` (the demo, a dev or test
  set), or any size with ``read_headers=True``;
* **lazily** (``LazySource``): NeMo manifests are scanned once without opening any audio
  (``ManifestIndex``: seconds for a million lines, 16 bytes a line), lhotse cut manifests are
  streamed; transcripts are checked as the sampler reads them, and audio files when a
  data-loader worker opens them; what fails then is skipped and counted like at start-up.
  For larger manifests, lhotse cuts, lists, or ``read_headers=False``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rnnt.constants import HEADER_READ_MAX_BYTES, SEED
from rnnt.data.augment import RandomSpeed
from rnnt.data.cuts import CutSource
from rnnt.data.lazy_cuts import LhotseCutFile, is_lhotse_manifest
from rnnt.data.lazy_source import CutChecks, LazyPart, LazySource
from rnnt.data.manifest import ManifestError
from rnnt.data.manifest_index import ManifestIndex
from rnnt.data.manifest_stats import ManifestStats, log_stats
from rnnt.data.records import AudioRecord, Unusable, load_audio_records_with_stats
from rnnt.data.shar import ShardSampler, ShardSource, make_shard_sampler
from rnnt.data.shar_index import read_shard_index
from rnnt.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)
ManifestSpec = str | list[str | dict[str, Any]]


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest of a split and its weight (None: unweighted)."""

    path: str
    weight: float | None = None


def parse_manifests(value: ManifestSpec) -> list[ManifestEntry]:
    """The manifests a ``--data.*_manifest`` value names.

    Raises:
        ValueError: naming the entry (``item N: ...``): not a path or ``{path, weight}``,
            unknown keys, a weight that is not a positive number; weights on some entries
            only; an empty list. (``rnnt.arguments`` reports it after the setting's name.)
    """
    items = [value] if isinstance(value, str | os.PathLike) else list(value or [])
    if not items:
        raise ValueError("must name at least one manifest")
    entries = []
    for position, item in enumerate(items):
        if isinstance(item, str | os.PathLike):
            entries.append(ManifestEntry(os.fspath(item)))
            continue
        if not isinstance(item, dict) or "path" not in item or set(item) - {"path", "weight"}:
            raise ValueError(
                f"item {position}: {item!r} is neither a path nor a {{path: ..., weight: ...}}"
            )
        weight = item.get("weight")
        if weight is not None and not (
            isinstance(weight, int | float) and math.isfinite(weight) and weight > 0
        ):
            raise ValueError(f"item {position}: weight {weight!r} must be a positive number")
        entries.append(ManifestEntry(os.fspath(item["path"]), weight))
    if len({entry.weight is None for entry in entries}) > 1:
        raise ValueError("give a weight to every manifest or to none")
    return entries


@dataclass
class SplitData:
    """A split's data as ``open_split`` opened it (eager ``records`` or lazy ``parts``), or
    ``open_shards`` (``shar_dir``)."""

    records: list[AudioRecord] | None
    parts: list[LazyPart] | None
    checks: CutChecks | None
    stats: ManifestStats
    longest_bound: float | None = None
    shar_dir: str | None = None  # a shard set: ``shard_sampler`` makes its sampler

    def source(
        self, *, shuffle: bool, speed: RandomSpeed | None, seed: int = SEED, carry_epoch: bool
    ) -> CutSource | LazySource:
        """The cuts of this split for a sampler (``CutSource`` or ``LazySource``)."""
        if self.records is not None:
            return CutSource(
                self.records, shuffle=shuffle, speed=speed, seed=seed, carry_epoch=carry_epoch
            )
        return LazySource(
            self.parts,
            self.checks,
            shuffle=shuffle,
            speed=speed,
            seed=seed,
            carry_epoch=carry_epoch,
            longest_bound=self.longest_bound,
        )


def open_split(
    value: ManifestSpec,
    *,
    field: str,
    min_duration: float | None,
    max_duration: float | None,
    skip_invalid: bool,
    count_tokens: Callable[[str], int] | None,
    speed_factors: Sequence[float] = (),
    progress: bool = False,
    read_headers: bool | None = None,
) -> SplitData:
    """Open the manifests of one split (see the module docstring for eager or lazy).

    Raises:
        ManifestError: a manifest is missing or (``skip_invalid=False``) has a bad line,
            naming ``file:line``; or the split has no usable utterance at all.
        ValueError: ``value`` is malformed (``parse_manifests``), after ``--data.FIELD``.
    """
    try:
        entries = parse_manifests(value)
    except ValueError as error:
        raise ValueError(f"--data.{field} {value!r}: {error}") from None
    lhotse = [is_lhotse_manifest(entry.path) for entry in entries]
    single = len(entries) == 1 and not lhotse[0] and entries[0].weight is None
    if single and _read_headers(entries[0].path, read_headers):
        records, stats = load_audio_records_with_stats(
            entries[0].path,
            min_duration=min_duration,
            max_duration=max_duration,
            skip_invalid=skip_invalid,
            count_tokens=count_tokens,
            speed_factors=speed_factors,
            progress=progress,
        )
        _check_not_empty(stats, len(records), min_duration, max_duration)
        return SplitData(records, None, None, stats)
    checks = CutChecks(count_tokens, speed_factors, min_duration, max_duration, skip_invalid)
    names = Counter(os.path.basename(entry.path) for entry in entries)
    parts = []
    for entry, is_lhotse in zip(entries, lhotse, strict=True):
        if is_lhotse:
            part = LazyPart(LhotseCutFile(entry.path), ManifestStats(path=entry.path), "")
            part.stats.kept = len(part)  # lines; what they hold is checked as they are read
            logger.info("%s: lhotse cuts, %d lines, read as a stream", entry.path, len(part))
        else:
            index = ManifestIndex(
                entry.path,
                min_duration=min_duration,
                max_duration=max_duration,
                skip_invalid=skip_invalid,
                progress=progress,
            )
            log_stats(index.stats, logger)
            name = os.path.basename(entry.path)
            part = LazyPart(index, index.stats, name if names[name] == 1 else entry.path)
        part.weight = entry.weight
        parts.append(part)
    stats = parts[0].stats if len(parts) == 1 else _merged([part.stats for part in parts])
    _check_not_empty(stats, sum(len(part) for part in parts), min_duration, max_duration)
    return SplitData(None, parts, checks, stats, longest_bound=max_duration)


def shard_sampler(
    shar_dir: str,
    checks: CutChecks,
    stats: ManifestStats,
    *,
    speed: RandomSpeed | None,
    seed: int,
    carry_epoch: bool,
    rank: int,
    world_size: int,
    **batching: Any,
) -> ShardSampler:
    """The training sampler of a shard set (``rnnt.data.shar``): each cut checked like a
    lhotse cut of a manifest (``CutChecks.checked_cut``), what fails counted in ``stats``
    once per cut id; ``batching``: ``ShardSampler``'s bounds."""

    def prepare(cut):
        try:
            return checks.checked_cut(cut)
        except Unusable as unusable:
            checks.skip(stats, cut.id, unusable.reason, unusable.why)
            return None

    source = ShardSource(
        shar_dir,
        rank=rank,
        world_size=world_size,
        seed=seed,
        speed=speed,
        carry_epoch=carry_epoch,
        prepare=prepare,
    )
    return make_shard_sampler(source, seed=seed, **batching)


def open_shards(
    shar_dir: str,
    *,
    min_duration: float | None,
    max_duration: float | None,
    skip_invalid: bool,
    count_tokens: Callable[[str], int] | None,
    speed_factors: Sequence[float] = (),
) -> SplitData:
    """A shard set as training data: its index checked against the files (a missing or
    cut-short file is a ``ManifestError`` naming it), cuts and seconds counted; each cut is
    checked as it is read (``shard_sampler``)."""
    try:
        index = read_shard_index(shar_dir)
    except (OSError, ValueError) as error:
        raise ManifestError(shar_dir, 0, str(error)) from None
    stats = ManifestStats(path=str(shar_dir))
    stats.kept = index.num_cuts
    stats.kept_duration = float(index.durations().sum())
    logger.info("%s: %d shards, %s", shar_dir, len(index.shards), stats.summary())
    checks = CutChecks(count_tokens, speed_factors, min_duration, max_duration, skip_invalid)
    return SplitData(None, None, checks, stats, shar_dir=str(shar_dir))


def log_unknown_characters(manifest: str, records: list[AudioRecord], tokenizer: Tokenizer):
    """Warn about transcripts with characters ``tokenizer`` never saw (the unknown piece)."""
    known = tokenizer.known_characters
    unknown: Counter[str] = Counter()
    affected = 0
    for record in records:
        missing = set(record.text) - known
        if missing:
            affected += 1
            unknown.update(missing)
    if affected:
        logger.warning(
            "%s: %d of %d transcripts have characters the tokenizer never saw (they train as "
            "the unknown piece): %s; retrain the tokenizer on this text if they matter",
            manifest,
            affected,
            len(records),
            ", ".join(f"{char!r} ({count})" for char, count in unknown.most_common(10)),
        )


def _read_headers(path: str, read_headers: bool | None) -> bool:
    if read_headers is not None:
        return read_headers
    try:
        return os.path.getsize(path) <= HEADER_READ_MAX_BYTES
    except OSError:
        return True  # the eager reader names the problem


def _merged(stats: list[ManifestStats]) -> ManifestStats:
    total = ManifestStats(path=" + ".join(item.path for item in stats))
    for item in stats:
        total.kept += item.kept
        total.kept_duration += item.kept_duration
        total.skipped.update(item.skipped)
        total.examples.extend(item.examples)
    return total


def _check_not_empty(
    stats: ManifestStats, kept: int, min_duration: float | None, max_duration: float | None
) -> None:
    if kept:
        return
    bounds = ""
    if min_duration is not None and max_duration is not None:
        bounds = f" between {min_duration:g} and {max_duration:g} s"
    raise ManifestError(
        stats.path, 0, f"no usable utterance{bounds}; check the manifest and the warnings above"
    )
