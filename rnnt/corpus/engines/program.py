"""Running an engine's program (Flite, Festival) for one utterance; not an engine itself.

``run(command, title, cwd)`` runs it without a shell, in the C locale (both programs read
"1.25" by the locale's rules), for at most ``SPEECH_ENGINE_TIMEOUT_S`` seconds, and returns its
standard output; every failure is a ``RuntimeError`` that names the command.
"""

from __future__ import annotations

import os
import subprocess

from rnnt.constants import SPEECH_ENGINE_TIMEOUT_S

ENVIRONMENT = {**os.environ, "LC_ALL": "C"}


def run(command: list[str], title: str, cwd: str | None = None) -> str:
    """Standard output of ``command``; ``title`` ("flite") names the program in errors.

    Raises:
        RuntimeError: the program is missing, ran past the time limit or exited non-zero.
    """
    try:
        finished = subprocess.run(
            command,
            cwd=cwd,
            env=ENVIRONMENT,
            capture_output=True,
            text=True,
            timeout=SPEECH_ENGINE_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as error:
        raise RuntimeError(f"{title} is not installed (make voices): {command[0]}") from error
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(
            f"{title} took over {SPEECH_ENGINE_TIMEOUT_S:g} s: {' '.join(command)}"
        ) from error
    if finished.returncode != 0:
        raise RuntimeError(
            f"{title} failed (exit status {finished.returncode}): {' '.join(command)}\n"
            f"{(finished.stderr + finished.stdout).strip()}"
        )
    return finished.stdout
