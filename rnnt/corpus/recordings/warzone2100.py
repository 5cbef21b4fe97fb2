"""The spoken messages of the game Warzone 2100 (Debian main: ``warzone2100-data``).

Licence: GPL-2+; "Copyright: 1999-2004, Eidos Interactive; 2005-2013, Warzone 2100 Project"
(``/usr/share/doc/warzone2100-data/copyright``, ``Files: *``, which covers the game data).

Layout: the zip archive ``/usr/share/games/warzone2100/base.wz`` holds the sounds as Ogg Vorbis
(11.025 kHz mono) under ``audio/``, and ``audio/audio.cfg`` lists them one per line,
``audio "pcv343.ogg" oneshot 100 1800 /*Power Low*/``: the comment is the transcript. Speech
lives in ``audio/memressp/`` (the announcer; ``cmndrvoc/`` the commanders), ``audio/extra/``,
``audio/vtoltalk/`` (three pilots, ``v-*1`` to ``v-*3``), ``audio/trnsppil/`` (the transport
pilot) and ``audio/coltive/`` (the Collective, a processed voice). About 180 labelled phrases,
some 4 minutes of speech, several speakers; all of it is training data.

Label check: the comment must sit on the same line as its ``audio`` entry; the file must exist
once in the archive (or as byte-identical copies) inside a speech folder (``audio/sfx/`` carries
comments too, naming sound effects: "Rotary Laser"); a file listed twice must carry the same
comment; the comment must normalise (acronyms such as "LZ", "NEXUS", "VTOLs" are refused: how
they are read is unknown), and its length must fit the trimmed speech
(``RECORDINGS_LETTERS_PER_SECOND``). Speakers are named by folder, not by listening.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath

from rnnt.corpus.recordings import audio
from rnnt.corpus.recordings.labels import check_rate, normalise
from rnnt.corpus.recordings.record import Found, LabelError, Recording

NAME = "warzone2100"
PACKAGE = "warzone2100-data"
LICENCE = "GPL-2+ (Eidos Interactive 1999-2004; Warzone 2100 Project 2005-2013)"
DEFAULT_ROOT = Path("/usr/share/games/warzone2100")
ARCHIVE = "base.wz"
CONFIG = "audio/audio.cfg"
# Speech folders of the archive and their speakers, most specific first.
SPEAKERS = (
    ("audio/memressp/cmndrvoc/", "commander"),
    ("audio/memressp/", "announcer"),
    ("audio/extra/", "announcer"),
    ("audio/vtoltalk/", "vtol-pilot"),  # + the digit that ends the file name
    ("audio/trnsppil/", "transport-pilot"),
    ("audio/coltive/", "collective"),
)

AMBIGUOUS = "\0"  # parse_config's comment for a file listed twice with different comments
_ENTRY = re.compile(r'^\s*audio\s+"(?P<file>[^"]+)"[^/]*(?:/\*(?P<label>.*?)\*/)?\s*$')


def missing(root: str | Path = DEFAULT_ROOT) -> str | None:
    """Why this source cannot be used at ``root`` (None: it can)."""
    archive = Path(root) / ARCHIVE
    if not archive.is_file():
        return f"{PACKAGE} is not installed (no {archive}): make voices, or apt install {PACKAGE}"
    try:
        with zipfile.ZipFile(archive) as opened:
            opened.getinfo(CONFIG)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        return f"{archive} is not the {PACKAGE} layout (a zip with {CONFIG}): {error}"
    return None


def find(root: str | Path = DEFAULT_ROOT) -> Found:
    """Every phrase of ``audio.cfg`` whose comment passes the check (see the module docstring).

    Returns nothing, with one skip saying why, where ``missing`` gives a reason.
    """
    archive = Path(root) / ARCHIVE
    found = Found()
    reason = missing(root)
    if reason is not None:
        found.skip(str(archive), "missing", reason)
        return found
    with zipfile.ZipFile(archive) as opened:
        config = opened.read(CONFIG).decode("utf-8", errors="replace")
        members: dict[str, list[zipfile.ZipInfo]] = {}
        for info in opened.infolist():
            if info.filename.startswith("audio/") and not info.is_dir():
                members.setdefault(PurePosixPath(info.filename).name, []).append(info)
    labels = parse_config(config)
    for file, (line, label) in labels.items():
        where = f"{archive}:{CONFIG}:{line}"
        try:
            member = _speech_member(file, members.get(file, []))
            if label is None:
                raise LabelError("no_label", f"{file} has no comment on its line")
            if label == AMBIGUOUS:
                raise LabelError("ambiguous_label", f"{file} is listed twice, with two comments")
            text = normalise(label)
            samples, rate = audio.read(str(archive), member)
            check_rate(text, audio.speech_seconds(samples, rate))
        except LabelError as error:
            found.skip(where, error.reason, f"{CONFIG}:{line}: {error.detail}")
            continue
        except (OSError, RuntimeError, KeyError) as error:
            found.skip(where, "unreadable", f"{CONFIG}:{line}: {file}: {error}")
            continue
        found.append(
            Recording(str(archive), member, text, _speaker(member), NAME, LICENCE, "prompt")
        )
    return found


def parse_config(config: str) -> dict[str, tuple[int, str | None]]:
    """``{file: (line number, comment or None)}`` of the ``audio`` entries of an audio.cfg.

    A file listed twice with different comments maps to ``AMBIGUOUS``, at its first line.
    """
    entries: dict[str, tuple[int, str | None]] = {}
    for number, line in enumerate(config.splitlines(), start=1):
        match = _ENTRY.match(line)
        if match is None:
            continue
        file = match.group("file")
        label = match.group("label")
        label = label.strip() if label is not None and label.strip() else None
        if file in entries and entries[file][1] != label:
            entries[file] = (entries[file][0], AMBIGUOUS)
        else:
            entries.setdefault(file, (number, label))
    return entries


def _speech_member(file: str, infos: list[zipfile.ZipInfo]) -> str:
    """The archive member of ``file`` in a speech folder, or a LabelError saying why not."""
    if not infos:
        raise LabelError("no_file", f"{file} is listed but not in the archive")
    if len({(info.CRC, info.file_size) for info in infos}) > 1:
        folders = sorted(str(PurePosixPath(info.filename).parent) for info in infos)
        raise LabelError("ambiguous_file", f"{file} is in {folders} with different contents")
    member = min(info.filename for info in infos)
    if not any(member.startswith(folder) for folder, _ in SPEAKERS):
        raise LabelError("not_speech", f"{member} is not in a speech folder")
    return member


def _speaker(member: str) -> str:
    _, speaker = next(pair for pair in SPEAKERS if member.startswith(pair[0]))
    number = PurePosixPath(member).stem[-1]
    if speaker == "vtol-pilot" and number.isdigit():
        return f"{speaker}-{number}"
    return speaker
