"""Files that appear whole or not at all: manifests, subtitles.

:func:`atomic_text_file` hands out a UTF-8 text file (``\\n`` line ends) that is written to a
temporary file in the target's folder, flushed to disk, and renamed over the target only when
the ``with`` block ends without an error; after an error (a full disk, Ctrl-C) the temporary
file is removed and the target, if it existed, is as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from rnnt.constants import OUTPUT_FILE_MODE


@contextlib.contextmanager
def atomic_text_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file to write at ``path``, which appears (mode ``OUTPUT_FILE_MODE``) only when
    the block completes; the folder must exist."""
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        os.chmod(temporary, OUTPUT_FILE_MODE)  # mkstemp makes it owner-only
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
