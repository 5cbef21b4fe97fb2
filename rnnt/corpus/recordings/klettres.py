"""Short English words of KLettres, KDE's alphabet game (Debian main: ``klettres-data``).

Licence: GPL-2+ (``/usr/share/doc/klettres-data/copyright``, ``Files: *``: Anne-Marie Mahfouf,
Eric Bischoff, Mark Kretschmann, Michael Goettsche, Pino Toscano).

Layout: ``/usr/share/klettres/<language>/sounds.xml`` lists ``<sound name="DOG"
file="en_GB/syllab/dog.ogg"/>`` under ``<alphabet>`` (letters) and ``<syllables>``; Ogg Vorbis,
44.1 kHz. Two English voices, ``en`` and ``en_GB`` (one each, told apart by pitch): 39 words
("arm", "dog", "the", "sky", ...), about half a minute. Training data.

Label check: only ``<syllables>`` entries are used, and only those that are words: the letters
are read either as names or as sounds, which the labels do not say, and ``SOUNDS`` ("ch", "th",
"aw") are speech sounds, not words. The name (written in capitals) must equal the file name, and
the text must fit the speech's length.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path, PurePosixPath

from rnnt.corpus.recordings import audio
from rnnt.corpus.recordings.labels import check_rate, normalise
from rnnt.corpus.recordings.record import Found, LabelError, Recording

NAME = "klettres"
PACKAGE = "klettres-data"
LICENCE = "GPL-2+ (KDE: Anne-Marie Mahfouf, Eric Bischoff and others)"
DEFAULT_ROOT = Path("/usr/share/klettres")
LANGUAGES = ("en", "en_GB")  # folders, and the speaker of each
SOUNDS = frozenset({"aw", "ch", "th"})  # "syllables" that are speech sounds, not words


def missing(root: str | Path = DEFAULT_ROOT) -> str | None:
    """Why this source cannot be used at ``root`` (None: it can)."""
    files = [Path(root) / language / "sounds.xml" for language in LANGUAGES]
    if not any(file.is_file() for file in files):
        return (
            f"{PACKAGE} is not installed (no {' or '.join(map(str, files))}): make voices, or "
            f"apt install {PACKAGE}"
        )
    return None


def find(root: str | Path = DEFAULT_ROOT) -> Found:
    """Every English word of KLettres whose label passes the check (see the module docstring)."""
    root = Path(root)
    found = Found()
    reason = missing(root)
    if reason is not None:
        found.skip(str(root), "missing", reason)
        return found
    for language in LANGUAGES:
        listing = root / language / "sounds.xml"
        if not listing.is_file():
            continue
        try:
            tree = ElementTree.parse(listing).getroot()
        except ElementTree.ParseError as error:
            found.skip(str(listing), "unreadable", f"{listing}: {error}")
            continue
        for letter in tree.iter("alphabet"):
            for sound in letter.iter("sound"):
                detail = f"{listing.name}: letter {sound.get('name')!r}: name or sound, unknown"
                found.skip(str(root / sound.get("file", "")), "not_words", detail)
        for syllables in tree.iter("syllables"):
            for sound in syllables.iter("sound"):
                _add(found, root, language, sound.get("name", ""), sound.get("file", ""))
    return found


def _add(found: Found, root: Path, language: str, name: str, file: str) -> None:
    path = root / file
    word = name.lower()
    try:
        if PurePosixPath(file).stem.lower() != word:
            raise LabelError("label_mismatch", f"name {name!r} but file {file!r}")
        if word in SOUNDS:
            raise LabelError("not_words", f"{name!r} is a speech sound, not a word")
        text = normalise(word)
        samples, rate = audio.read(str(path))
        check_rate(text, audio.speech_seconds(samples, rate))
    except LabelError as error:
        found.skip(str(path), error.reason, f"{language}/sounds.xml: {error.detail}")
        return
    except (OSError, RuntimeError) as error:
        found.skip(str(path), "unreadable", f"{language}/sounds.xml: {file}: {error}")
        return
    found.append(Recording(str(path), None, text, language, NAME, LICENCE, "word"))
