"""The ``rnnt`` command's argument checks: every wrong value is one line naming its flag.

``OneLineArgumentParser`` prints an argparse error as ``rnnt transcribe: error: argument
--beam: 0 must be >= 1`` (no usage block) with exit status 2. The ``type=`` functions below
check a value when it is parsed, before any model or data loads: numbers in range, files that
exist, outputs that are not folders (or folders that are not files), devices this machine
has. ``one_line_parse_error`` does the same for the multi-line messages of jsonargparse
(``rnnt fit | validate | test``).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import NoReturn

from rnnt import constants as C


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE``, exit 2.

    Its subcommand parsers are of this class too (``add_subparsers`` makes parsers of the
    parent's class). ``--help`` prints the usage as always.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (utterances, epochs, a beam, processes)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (data-loader workers: 0 loads in the main process)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (hours, minutes, seconds)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def seed(text: str) -> int:
    """A random seed, 0 to ``MAX_SEED``."""
    value = _integer(text)
    if not 0 <= value <= C.MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} must be in [0, {C.MAX_SEED}]")
    return value


def opset(text: str) -> int:
    """An ONNX opset ``rnnt export`` can write (``ONNX_OPSET_RANGE``)."""
    value = _integer(text)
    low, high = C.ONNX_OPSET_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"{value} must be in [{low}, {high}] (the model's attention needs opset {low})"
        )
    return value


def preset(text: str) -> str:
    """A model preset name (``tiny``, ``small``, ...)."""
    from rnnt.models.transducer import PRESETS  # here: torch loads only when the flag is used

    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"{text!r} must be one of {', '.join(PRESETS)}")
    return text


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    from rnnt.checkpoint import check_device

    try:
        check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _file_above(path: Path) -> Path | None:
    # An existing file among the path's parents: nothing can be created below it.
    for parent in path.absolute().parents:
        if parent.is_file():
            return parent
    return None


def existing_file(text: str) -> Path:
    """A file that exists (an input: checkpoint, manifest)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def output_file(text: str) -> Path:
    """A file to write: not a folder, not below a file. Existing files are checked by the
    command, which refuses them unless asked to overwrite."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    above = _file_above(path)
    if above:
        raise argparse.ArgumentTypeError(f"{text}: {above} is a file, not a folder")
    return path


def output_folder(text: str) -> Path:
    """A folder to write into (made if missing): not a file, not below a file."""
    path = Path(text)
    if path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    above = _file_above(path)
    if above:
        raise argparse.ArgumentTypeError(f"{text}: {above} is a file, not a folder")
    return path


def add_weights_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights ema|raw``: which of a checkpoint's weights to load."""
    parser.add_argument(
        "--weights",
        choices=[C.EMA_WEIGHTS, C.RAW_WEIGHTS],
        default=None,
        help="the checkpoint's EMA weights (a run with --model.ema_decay) or its raw trained "
        "ones (default: those its state_dict holds, the EMA ones where there are some)",
    )


# jsonargparse: 'Parser key "trainer.max_epochs":\n  ... Given value: x' with a list of
# "- Expected a <class 'int'>" (or "- Expected a typing.Literal['a', 'b']") lines.
_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":\s*')
_GIVEN = re.compile(r"^\s*Given value: (?P<value>.*)$", re.MULTILINE)
_EXPECTED = re.compile(r"^\s*- Expected a (?P<type>.*)$", re.MULTILINE)
_CLASS = re.compile(r"<class '(?:[\w]+\.)*(?P<name>\w+)'>")
_LITERAL = re.compile(r"^typing\.Literal\[(?P<values>.*)\]$")


def _type_name(text: str) -> str:
    # "<class 'int'>" -> "int", "<class 'NoneType'>" -> "None", "typing.Literal[1, 2]" -> "1, 2"
    literal = _LITERAL.match(text)
    if literal:
        return literal["values"]
    name = _CLASS.sub(lambda match: match["name"], text)
    return "None" if name == "NoneType" else name


def one_line_parse_error(message: str) -> str:
    """A jsonargparse error message as one line that starts with the flag.

    >>> one_line_parse_error('Parser key "data.batch_size":\\n  Errors:\\n'
    ...     "    - Expected a <class 'int'>\\n    - Expected a <class 'NoneType'>\\n"
    ...     "  Given value type: <class 'str'>\\n  Given value: x")
    '--data.batch_size x: expected int or None'
    """
    key = _PARSER_KEY.match(message)
    given = _GIVEN.search(message)
    expected = [_type_name(match["type"].strip()) for match in _EXPECTED.finditer(message)]
    if key and given and expected:
        return f"--{key['key']} {given['value']}: expected {' or '.join(dict.fromkeys(expected))}"
    if key:
        message = f"--{key['key']}: {message[key.end() :]}"
    return " ".join(message.split())
