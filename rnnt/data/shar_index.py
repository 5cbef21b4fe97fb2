"""A shard set's index, ``shards.json``: what ``rnnt shard`` wrote, checked against the files.

Per shard the index lists its two files (lhotse Shar's fields: ``cuts``, a
``cuts.NNNNNN.jsonl.gz``, and ``recording``, a ``recording.NNNNNN.tar``), their sizes in bytes,
its number of cuts and each cut's duration in seconds, rounded to 1 ms. File names are relative
to the set's folder, so a set can be moved or copied as a whole. ``read_shard_index`` checks
the files' presence and sizes (no tar is opened), so that a missing or changed file is an error
at setup, naming it; ``shard_entry`` makes an entry (``rnnt.data.shar_writer``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnt.constants import SHAR_INDEX_FILE, SHAR_PARTIAL_INDEX_FILE

INDEX_FORMAT = "rnnt-shar"  # shards.json "format"
INDEX_VERSION = 1
SHARD_FIELDS = ("cuts", "recording")  # the files of a shard, as lhotse Shar names its fields
DURATION_DECIMALS = 3  # the index's durations are rounded to 1 ms


@dataclass(frozen=True)
class Shard:
    """One shard: its cuts and recording files and each cut's duration (seconds, to 1 ms)."""

    cuts: Path
    recording: Path
    durations: tuple[float, ...]

    @property
    def num_cuts(self) -> int:
        return len(self.durations)


@dataclass(frozen=True)
class ShardIndex:
    """A checked ``shards.json``: the set's ``folder``, its shards in written order, and the
    ``audio_format`` of its recordings."""

    folder: Path
    shards: tuple[Shard, ...]
    audio_format: str

    @property
    def path(self) -> Path:
        return self.folder / SHAR_INDEX_FILE

    @property
    def num_cuts(self) -> int:
        return sum(shard.num_cuts for shard in self.shards)

    def durations(self) -> np.ndarray:
        """(num_cuts,) float64 seconds: every cut's duration, shard after shard."""
        return np.fromiter(
            (d for shard in self.shards for d in shard.durations), np.float64, self.num_cuts
        )


def shard_entry(folder: Path, files: dict[str, str], durations: Sequence[float]) -> dict:
    """The ``shards.json`` entry of a shard whose ``files`` (field -> name in ``folder``) exist."""
    return {
        **{field: files[field] for field in SHARD_FIELDS},
        "bytes": {field: (folder / files[field]).stat().st_size for field in SHARD_FIELDS},
        "num_cuts": len(durations),
        "durations": [round(float(d), DURATION_DECIMALS) for d in durations],
    }


def read_shard_index(shar_dir: str | Path) -> ShardIndex:
    """Read ``shar_dir/shards.json`` and check it against the files (sizes only, no tar read).

    Raises:
        FileNotFoundError: no such folder, no index (an unfinished ``rnnt shard`` says so), or
            a shard file the index lists is missing; naming the path.
        ValueError: the index is not one ``rnnt shard`` wrote, or a file's size differs from
            the index's (changed, or cut short by a copy); naming the file.
    """
    folder = Path(shar_dir)
    path = folder / SHAR_INDEX_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"shard folder not found: {folder} (rnnt shard writes one)")
    if not path.is_file():
        unfinished = (folder / SHAR_PARTIAL_INDEX_FILE).is_file()
        raise FileNotFoundError(
            f"{path} not found: "
            + (
                "an `rnnt shard` run into this folder did not finish; run it again to complete it"
                if unfinished
                else "not a shard set written by `rnnt shard`"
            )
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != INDEX_FORMAT or index.get("version") != INDEX_VERSION:
            raise ValueError(f"format {index.get('format')!r} version {index.get('version')!r}")
        shards = tuple(_parse_shard(folder, entry) for entry in index["shards"])
        audio_format = str(index["audio_format"])
    except FileNotFoundError as missing:
        raise FileNotFoundError(
            f"{path} lists {missing.filename}, which is missing: the set is incomplete; copy it "
            "again or re-run rnnt shard"
        ) from None
    except _SizeMismatch as mismatch:
        raise ValueError(f"{mismatch} ({path}); copy it again or re-run rnnt shard") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a valid shard index ({type(error).__name__}: {error}); "
            "re-run rnnt shard"
        ) from None
    if not shards:
        raise ValueError(f"{path} lists no shard; re-run rnnt shard on a manifest with audio")
    return ShardIndex(folder, shards, audio_format)


class _SizeMismatch(Exception):
    pass


def _parse_shard(folder: Path, entry: dict) -> Shard:
    paths = {}
    for field in SHARD_FIELDS:
        name = entry[field]
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"shard file name {name!r} must be a file name in the folder")
        paths[field] = folder / name
        size = paths[field].stat().st_size  # FileNotFoundError names the file
        if size != entry["bytes"][field]:
            raise _SizeMismatch(
                f"{paths[field]} is {size} bytes where the index says {entry['bytes'][field]}: "
                "it changed since rnnt shard wrote it, or a copy cut it short"
            )
    durations = tuple(float(d) for d in entry["durations"])
    if len(durations) != entry["num_cuts"] or not all(0 < d < math.inf for d in durations):
        raise ValueError(f"shard {paths['cuts'].name}: num_cuts and durations disagree")
    return Shard(paths["cuts"], paths["recording"], durations)
