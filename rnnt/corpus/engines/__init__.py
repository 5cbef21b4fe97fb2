"""Speech synthesis engines for the demo corpus, one module per engine; a new engine is one file.

Every engine module (``rnnt/corpus/engines/<name>.py``, listed in ``ENGINES``) exposes:

- ``NAME: str``, its name here ("espeak");
- ``missing() -> str | None``: why the engine cannot run on this machine ("flite is not
  installed: apt install flite"), or ``None`` when it can;
- ``voice_names() -> list[str]``: the voices (speakers) it has here;
- ``Voice``: a frozen dataclass with at least ``name`` (one of ``voice_names()``) and the
  engine's speaking settings for one utterance; its ``engine`` class attribute is ``NAME``;
- ``draw_voice(rng, name) -> Voice``: voice ``name`` with settings drawn from ``rng``
  (ranges in ``rnnt/constants.py``);
- ``synthesize(text, voice, seed) -> (samples (S,) int16, rate Hz)``, whose output depends only
  on its arguments (``seed`` feeds the engine's own randomness where it has any);
- ``check_voices(names)``, which raises ``ValueError`` naming the voices it lacks.

``engine(name)`` imports one engine module; ``survey()`` says which engines this machine has.
``program`` is not an engine: it runs an engine's program (Flite, Festival) for one utterance.
Nothing here imports an engine until asked, so loading one engine's library never loads
another's.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ENGINES = ("espeak", "piper", "flite", "festival")


def engine(name: str) -> ModuleType:
    """The engine module called ``name`` (one of ``ENGINES``).

    Raises:
        ValueError: no such engine.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown speech engine {name!r}; known: {', '.join(ENGINES)}")
    return importlib.import_module(f"{__name__}.{name}")


def survey(names: tuple[str, ...] | list[str] = ENGINES) -> dict[str, str | None]:
    """Per engine in ``names``: ``None`` if it runs here, else why it does not."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            module = engine(name)
        except ImportError as error:  # an engine's Python package is not installed
            found[name] = f"{error.name or error} is not installed"
            continue
        reason = module.missing()
        if reason is None and not module.voice_names():
            reason = "it has no voices installed"
        found[name] = reason
    return found
