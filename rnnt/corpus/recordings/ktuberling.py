"""The English object names of KTuberling, KDE's potato-man game (Debian main: ``ktuberling-data``).

Licence: GPL-2+ (``/usr/share/doc/ktuberling-data/copyright``, ``Files: *``: Albert Astals Cid,
KDE Team, Meni Livne, Rosetta Contributors and Canonical Ltd, Eric Bischoff).

Layout: ``/usr/share/ktuberling/sounds/en.soundtheme`` (XML) lists ``<sound name="egypt_camel"
file="en/egypt_camel.ogg"/>``, one per object; the files are Ogg Vorbis, 44.1 kHz. 72 words
("ball", "camel", "pepperoni", ...), about one minute of one voice, named "en" here (we have not
told voices apart by listening). Training data.

Label check: the sound's name and its file name must agree; the transcript is the name without
its theme prefix ("egypt_", "moon_", "pizzeria_", "tv_"). Names that are not how the word is
written or read are rewritten only where ``READINGS`` says so, and refused where it says None
("ufo": "you eff oh" or "yoofoe"?). The text must normalise and fit the speech's length.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path, PurePosixPath

from rnnt.corpus.recordings import audio
from rnnt.corpus.recordings.labels import check_rate, normalise
from rnnt.corpus.recordings.record import Found, LabelError, Recording

NAME = "ktuberling"
PACKAGE = "ktuberling-data"
LICENCE = "GPL-2+ (KDE: Albert Astals Cid, Eric Bischoff and others)"
SPEAKER = "en"
DEFAULT_ROOT = Path("/usr/share/ktuberling/sounds")
THEME = "en.soundtheme"
THEME_PREFIXES = ("egypt_", "moon_", "pizzeria_", "tv_")
# Names written as one word or misspelled, and how they are read; None: unknown, refused.
READINGS: dict[str, str | None] = {
    "palmtree": "palm tree",
    "fallingstar": "falling star",
    "sphynx": "sphinx",
    "ufo": None,
}


def missing(root: str | Path = DEFAULT_ROOT) -> str | None:
    """Why this source cannot be used at ``root`` (None: it can)."""
    theme = Path(root) / THEME
    if not theme.is_file():
        return f"{PACKAGE} is not installed (no {theme}): make voices, or apt install {PACKAGE}"
    return None


def find(root: str | Path = DEFAULT_ROOT) -> Found:
    """Every English object name whose label passes the check (see the module docstring)."""
    root = Path(root)
    found = Found()
    reason = missing(root)
    if reason is not None:
        found.skip(str(root / THEME), "missing", reason)
        return found
    try:
        sounds = ElementTree.parse(root / THEME).getroot().iter("sound")
    except ElementTree.ParseError as error:
        found.skip(str(root / THEME), "unreadable", f"{root / THEME}: {error}")
        return found
    for sound in sounds:
        name, file = sound.get("name", ""), sound.get("file", "")
        path = root / file
        try:
            if PurePosixPath(file).stem != name:
                raise LabelError("label_mismatch", f"name {name!r} but file {file!r}")
            text = normalise(reading(name))
            samples, rate = audio.read(str(path))
            check_rate(text, audio.speech_seconds(samples, rate))
        except LabelError as error:
            found.skip(str(path), error.reason, f"{THEME}: {error.detail}")
            continue
        except (OSError, RuntimeError) as error:
            found.skip(str(path), "unreadable", f"{THEME}: {file}: {error}")
            continue
        found.append(Recording(str(path), None, text, SPEAKER, NAME, LICENCE, "word"))
    return found


def reading(name: str) -> str:
    """The words of a sound name: "egypt_palmtree" -> "palm tree" (LabelError if unknown)."""
    for prefix in THEME_PREFIXES:
        name = name.removeprefix(prefix)
    words = name.replace("_", " ").split()
    for index, word in enumerate(words):
        if word in READINGS:
            if READINGS[word] is None:
                raise LabelError("reading", f"how {word!r} is read is unknown")
            words[index] = READINGS[word]
    return " ".join(words)
