"""Allison Smith's English telephone prompts for the Asterisk PBX (Debian main).

Packages: ``asterisk-core-sounds-en-wav`` (the audio) and ``asterisk-core-sounds-en`` (the
labels, ``core-sounds-en.txt``). Licence: CC-BY-SA-3.0; "Recorded by: Allison Smith
(http://www.theivrvoice.com), Financial Contributions by: Digium, Inc." (the packages'
``/usr/share/doc/*/copyright``). A corpus that includes these clips must credit her and stays
under CC-BY-SA-3.0 as far as it holds them.

Layout: ``/usr/share/asterisk/sounds/en_US_f_Allison/`` (``.../sounds/en`` once the labels
package is installed), 8 kHz 16-bit mono WAV, one prompt per file, 19 minutes in all. Its
``digits/`` folder holds the words the PBX joins to say numbers, dates and times: ``digits/5``
is "five", ``digits/h-5`` "fifth", ``digits/day-0`` "sunday", ``digits/mon-0`` "january",
``digits/a-m`` "a m", ``digits/oclock`` "o'clock", plus "oh", "hundred", "thousand", "today",
"tomorrow" ... The labels file has one ``name: text`` line per prompt ("digits/h-2: second");
Debian ships it as ``/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz``, the upstream
tarball beside the sounds.

Label check: a prompt is used only where two sources agree: its label, normalised, must equal
what its file name stands for (for ``digits/`` by the PBX's own naming, above; for the others the
name's words, with or without its first one: ``vm-and`` "and", ``please-try-again``). So
``digits/h-40`` ("fourtieth" in the labels) is skipped, as are prompts whose name abbreviates
their text (``auth-thankyou``). ``letters/`` (letter names), ``phonetic/`` and ``silence/`` are
not used. One speaker, "allison": every clip goes to test_human (``RECORDINGS_TEST_SOURCES``),
joined into grammar sentences by ``rnnt/corpus/recordings/compose.py``.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from rnnt.corpus.recordings import audio
from rnnt.corpus.recordings.labels import check_rate, normalise
from rnnt.corpus.recordings.record import Found, LabelError, Recording
from rnnt.corpus.spoken_numbers import number_words, ordinal_words
from rnnt.corpus.vocabulary import MONTHS, WEEKDAYS

NAME = "asterisk"
PACKAGE = "asterisk-core-sounds-en-wav"
LABELS_PACKAGE = "asterisk-core-sounds-en"
LICENCE = "CC-BY-SA-3.0 (recorded by Allison Smith; Digium, Inc.)"
SPEAKER = "allison"
DEFAULT_ROOT = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
LABELS_FILE = "core-sounds-en.txt"
LABELS_DOC = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
UNUSED_FOLDERS = ("letters", "phonetic", "silence")

_DAYS = (WEEKDAYS[-1], *WEEKDAYS[:-1])  # Asterisk numbers the days from Sunday: day-0
_INSTALL = "make voices, or apt install"


def missing(root: str | Path = DEFAULT_ROOT, labels: str | Path | None = None) -> str | None:
    """Why this source cannot be used at ``root`` (None: it can)."""
    root = Path(root)
    if not (root / "digits").is_dir():
        return f"{PACKAGE} is not installed (no {root / 'digits'}): {_INSTALL} {PACKAGE}"
    if _labels_path(root, labels) is None:
        return (
            f"the labels of {PACKAGE} ({LABELS_FILE}) are not installed: {_INSTALL} "
            f"{LABELS_PACKAGE}"
        )
    return None


def find(root: str | Path = DEFAULT_ROOT, labels: str | Path | None = None) -> Found:
    """Every prompt under ``root`` whose label passes the check (see the module docstring).

    ``labels`` is the labels file (plain or .gz); None looks beside the sounds, then in
    ``LABELS_DOC``. Returns nothing, with one skip saying why, where ``missing`` gives a reason.
    """
    root = Path(root)
    found = Found()
    reason = missing(root, labels)
    if reason is not None:
        found.skip(str(root), "missing", reason)
        return found
    texts = read_labels(_labels_path(root, labels))
    for path in sorted(root.rglob("*.wav")):
        name = path.relative_to(root).with_suffix("").as_posix()
        if name.split("/")[0] in UNUSED_FOLDERS:
            found.skip(str(path), "not_words", f"{name}: {name.split('/')[0]}/ is not used")
            continue
        if name not in texts:
            found.skip(str(path), "no_label", f"{name} has no line in {LABELS_FILE}")
            continue
        try:
            text = normalise(texts[name])
            expected = name_words(name)
            if _bare(text) not in {_bare(words) for words in expected}:
                raise LabelError(
                    "label_mismatch",
                    f"label {texts[name]!r} is not what the file name says "
                    f"({' or '.join(repr(words) for words in expected)})",
                )
            samples, rate = audio.read(str(path))
            check_rate(text, audio.speech_seconds(samples, rate))
        except LabelError as error:
            found.skip(str(path), error.reason, f"{name}: {error.detail}")
            continue
        except (OSError, RuntimeError) as error:  # soundfile's errors are RuntimeErrors
            found.skip(str(path), "unreadable", f"{name}: {error}")
            continue
        category = "word" if name.startswith("digits/") else "prompt"
        found.append(Recording(str(path), None, text, SPEAKER, NAME, LICENCE, category))
    return found


def read_labels(path: str | Path) -> dict[str, str]:
    """``{name: text}`` from a ``core-sounds-en.txt`` (``name: text`` lines, ``;`` comments)."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    texts: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        name, colon, text = line.partition(":")
        if colon and name.strip() and not line.lstrip().startswith(";"):
            texts[name.strip()] = text.strip()
    return texts


def name_words(name: str) -> list[str]:
    """What the prompt called ``name`` ("digits/h-2", "vm-and") says, by its name alone."""
    folder, _, stem = name.rpartition("/")
    if folder == "digits":
        return [_digit_words(stem)]
    words = stem.replace("-", " ").replace("_", " ").split()
    return [" ".join(words)] + ([" ".join(words[1:])] if len(words) > 1 else [])


def _digit_words(stem: str) -> str:
    if stem.isdigit():
        return number_words(int(stem))
    match = re.fullmatch(r"(h|day|mon)-(\w+)", stem)
    if match is None:
        return stem.replace("-", " ")  # "a-m", "oh", "hundred", "oclock"
    kind, value = match.groups()
    if not value.isdigit():
        return f"{value}th"  # "h-hundred": "hundredth"
    number = int(value)
    if kind == "h":
        return ordinal_words(number)
    names = _DAYS if kind == "day" else MONTHS
    return names[number] if number < len(names) else stem


def _bare(words: str) -> str:
    # The file names cannot hold apostrophes: "oclock" is "o'clock", "im-sorry" "i'm sorry".
    return words.replace("'", "")


def _labels_path(root: Path, labels: str | Path | None) -> Path | None:
    if labels is not None:
        return Path(labels) if Path(labels).is_file() else None
    candidates = (root / LABELS_FILE, root / f"{LABELS_FILE}.gz", LABELS_DOC)
    return next((path for path in candidates if path.is_file()), None)
