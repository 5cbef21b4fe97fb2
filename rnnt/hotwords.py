"""Hotwords for beam-search biasing: the phrase file, and its Aho-Corasick graph as dense tables.

A hotwords file holds one phrase a line, with an optional boost per token at the end, set off
from the phrase by whitespace (the format of sherpa-onnx's hotwords files)::

    # comments and blank lines are ignored
    Louis Fourteen :2.5
    zipformer

Phrases are normalised with :func:`rnnt.data.tokenizer.normalize_text` (what the tokenizer and
the references see) and encoded with the model's tokenizer; a phrase without a boost gets the
default ``HOTWORD_BOOST`` (per token, as sherpa-onnx's ``hotwords_score``).

The graph is a trie over the phrases' token ids with Aho-Corasick failure links, compiled to
tables that batched beam search indexes on the device (no host reads while decoding). States
are trie nodes, the root is state 0. For a node ``n``:

- ``score(n)``: sum over the tokens of ``n``'s path of their boost; a node that several
  phrases share takes the largest boost of those phrases;
- ``goto(s, v)``: the child of ``s`` on token ``v`` if any, else that of the first node on
  ``s``'s failure chain with a child on ``v``, else the root;
- ``e(n)``: the deepest node on ``n``'s root path (``n`` included) where a phrase ends, or the
  root; ``pending(n) = score(n) - score(e(n))`` is the bonus given to a match not yet complete;
- ``out(n)``: sum of ``score(m)`` over the phrases ending at ``m = n`` or at a node on ``n``'s
  failure chain (every phrase that ends with the token just taken).

Tables, with S states and V classes (blank included):

- ``next_state (S, V) int64``: ``goto(s, v)``;
- ``bonus (S, V) float32``: ``out(t) + pending(t) - pending(s)`` with ``t = goto(s, v)``,
  the score a hypothesis in state ``s`` earns by taking token ``v``;
- ``take_back (S,) float32``: ``-pending(s)``, added when an utterance ends in state ``s``.

So a hypothesis's running bonus is the score of the phrases it has completed so far plus
``pending`` of its state: a partial match earns its bonus token by token and loses all of it
when abandoned or when the utterance ends, so a partial match never wins on bonus alone.
Blank (``BLANK_ID``) neither moves the state nor earns anything: ``next_state[s, blank] = s``,
``bonus[s, blank] = 0``.

Example: phrase ``a b c`` with boost 1 per token. Taking ``a, b, c`` earns +1, +1, +1 (3 in
all); ``a, b, x`` earns +1, +1, -2 (0 in all); ``a, b`` and then the end of the utterance earns
+1, +1 and a take-back of -2.

Memory: ``S * (V * 12 + 4)`` bytes, S at most 1 + the phrases' tokens in all. Measured: 1000
phrases of 3 rare words (11.8 pieces each) with a 500-piece vocabulary make 9,878 states, 59 MB,
built in 0.5 s on one CPU core; the tables grow with phrases x vocabulary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnt.constants import BLANK_ID, HOTWORD_BOOST
from rnnt.data.tokenizer import Tokenizer, normalize_text

__all__ = ["Hotword", "HotwordError", "HotwordGraph", "load_hotwords", "read_hotwords"]


class HotwordError(ValueError):
    """A hotwords line (or the whole file, ``line == 0``) is unusable.

    ``str(error)`` is ``"{path}:{line}: {message}"``, or ``"{path}: {message}"`` for the file.
    """

    def __init__(self, path: str | os.PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.message = message
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # picklable, as ManifestError
        return (type(self), (self.path, self.line, self.message))


@dataclass(frozen=True)
class Hotword:
    """One phrase of a hotwords file: normalised text, boost per token, 1-based line (0: none)."""

    phrase: str
    boost: float
    line: int = 0


def read_hotwords(path: str | os.PathLike, boost: float = HOTWORD_BOOST) -> list[Hotword]:
    """Read a hotwords file: one phrase a line, ``phrase :BOOST`` for a boost of its own.

    Blank lines and lines starting with ``#`` are ignored; a UTF-8 byte order mark is allowed.
    A phrase that appears more than once (after normalisation) is kept once, at its first
    line, with the largest of its boosts.

    Args:
        path: the file (UTF-8 text).
        boost: the boost per token of phrases without one (> 0).

    Returns:
        The phrases in file order, normalised.

    Raises:
        HotwordError: naming ``FILE:LINE``: the file is missing or not UTF-8 text, a boost is
            not a positive finite number, or a phrase is empty after normalisation.
    """
    _check_boost(boost, "boost")
    source = Path(path)
    if source.is_dir():
        raise HotwordError(source, 0, "is a folder; give the hotwords file (one phrase a line)")
    try:
        data = source.read_bytes()
    except OSError as error:
        raise HotwordError(source, 0, f"cannot read the hotwords file ({error.strerror})") from None
    kept: dict[str, Hotword] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise HotwordError(source, number, "is not UTF-8 text; re-encode the file") from None
        parsed = _parse_line(text, boost, source, number)
        if parsed is None:
            continue
        earlier = kept.get(parsed.phrase)
        if earlier is None or parsed.boost > earlier.boost:
            line = parsed.line if earlier is None else earlier.line
            kept[parsed.phrase] = Hotword(parsed.phrase, parsed.boost, line)
    return list(kept.values())


def _parse_line(text: str, default: float, source: Path, number: int) -> Hotword | None:
    words = text.split()
    if not words or words[0].startswith("#"):
        return None
    boost = default
    if words[-1].startswith(":"):
        if len(words) == 1:
            raise HotwordError(source, number, f"{text.strip()!r} is a boost without a phrase")
        boost = _parse_boost(words[-1][1:], source, number)
        words = words[:-1]
    elif len(words) > 1 and words[-2] == ":":
        raise HotwordError(
            source, number, f"write the boost as ':{words[-1]}', with no space after the colon"
        )
    elif ":" in words[-1] and _is_number(words[-1].rpartition(":")[2]):
        phrase, _, value = words[-1].rpartition(":")
        raise HotwordError(
            source, number, f"put a space before the boost: '{phrase} :{value}', not {words[-1]!r}"
        )
    phrase = normalize_text(" ".join(words))
    if not phrase:
        raise HotwordError(
            source,
            number,
            f"the phrase {' '.join(words)!r} is empty after normalisation (no letter or digit); "
            "remove the line or write the phrase in words",
        )
    return Hotword(phrase, boost, number)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_boost(text: str, source: Path, number: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise HotwordError(
            source, number, f"the boost {text!r} after ':' must be a positive finite number"
        )
    return value


def _check_boost(boost: float, name: str) -> None:
    number = isinstance(boost, (int, float)) and not isinstance(boost, bool)
    if not (number and math.isfinite(boost) and boost > 0):
        raise ValueError(f"{name}={boost!r} must be a positive finite number")


class HotwordGraph:
    """Aho-Corasick graph of hotword phrases as dense tables; see the module docstring.

    Attributes:
        next_state: ``(S, V) int64``, the state after taking class ``v`` in state ``s``.
        bonus: ``(S, V) float32``, the score added for taking class ``v`` in state ``s``.
        take_back: ``(S,) float32``, the score added when an utterance ends in state ``s``
            (``-pending(s)``, <= 0).
    """

    def __init__(
        self, next_state: torch.Tensor, bonus: torch.Tensor, take_back: torch.Tensor
    ) -> None:
        states, classes = next_state.shape
        if bonus.shape != (states, classes) or take_back.shape != (states,):
            raise ValueError(
                f"tables disagree: next_state {tuple(next_state.shape)}, bonus "
                f"{tuple(bonus.shape)}, take_back {tuple(take_back.shape)}"
            )
        self.next_state, self.bonus, self.take_back = next_state, bonus, take_back

    @property
    def num_states(self) -> int:
        """S: trie nodes, the root included."""
        return self.next_state.size(0)

    @property
    def num_classes(self) -> int:
        """V: the model's output classes, blank included."""
        return self.next_state.size(1)

    @property
    def nbytes(self) -> int:
        """Bytes the three tables take."""
        return sum(
            t.numel() * t.element_size() for t in (self.next_state, self.bonus, self.take_back)
        )

    def to(self, device: torch.device | str) -> HotwordGraph:
        """A copy of the tables on ``device``."""
        return HotwordGraph(
            self.next_state.to(device), self.bonus.to(device), self.take_back.to(device)
        )

    def __repr__(self) -> str:
        return (
            f"HotwordGraph(num_states={self.num_states}, num_classes={self.num_classes}, "
            f"device={self.next_state.device})"
        )

    @classmethod
    def from_phrases(
        cls,
        tokenizer: Tokenizer,
        hotwords: Iterable[Hotword | str],
        *,
        boost: float = HOTWORD_BOOST,
        path: str | os.PathLike | None = None,
    ) -> HotwordGraph:
        """The graph of phrases, encoded with ``tokenizer``.

        Args:
            tokenizer: the model's tokenizer (V = ``tokenizer.num_classes``).
            hotwords: :class:`Hotword` items (as :func:`read_hotwords` gives) or plain phrases,
                which are normalised here and get ``boost``.
            boost: boost per token of plain phrases (> 0).
            path: the file the hotwords came from, named in errors as ``FILE:LINE``.

        Raises:
            HotwordError: a phrase is empty after normalisation, or has characters the
                tokenizer never saw (they would encode to the unknown piece).
        """
        _check_boost(boost, "boost")
        known = tokenizer.known_characters
        phrases = []
        for index, item in enumerate(hotwords, start=1):
            hotword = item if isinstance(item, Hotword) else Hotword(normalize_text(item), boost)
            _check_boost(hotword.boost, f"the boost of {hotword.phrase!r}")
            # "FILE:LINE: ..." for a file's phrases, "hotword 3: ..." for a list's
            where, line = (path, hotword.line) if path is not None else (f"hotword {index}", 0)
            if not hotword.phrase:
                raise HotwordError(where, line, f"{item!r} is empty after normalisation")
            ids = tokenizer.encode_normalized(hotword.phrase)
            if tokenizer.decode(ids) != hotword.phrase:  # the unknown piece decodes to " ⁇ "
                unknown = "".join(sorted(set(hotword.phrase) - known))
                unseen = repr(unknown) if unknown else "some of its characters"
                raise HotwordError(
                    where,
                    line,
                    f"the tokenizer cannot spell {hotword.phrase!r}: it never saw {unseen} "
                    "(that becomes the unknown piece); spell the phrase with characters of the "
                    "training text, or retrain the tokenizer",
                )
            phrases.append((ids, hotword.boost))
        return cls.from_ids(phrases, tokenizer.num_classes)

    @classmethod
    def from_ids(
        cls, phrases: Sequence[tuple[Sequence[int], float]], num_classes: int
    ) -> HotwordGraph:
        """The graph of phrases given as ``(token ids (U,), boost per token)`` pairs.

        Ids are model ids in ``[1, num_classes)`` (blank excluded). A phrase given twice keeps
        the larger boost. Building is a breadth-first pass in Python plus one ``(S, V)`` row
        copy per state: about 1 s for 18,000 states of a 501-class model on one CPU core.

        Raises:
            ValueError: a phrase is empty, has an id out of range, or a boost is not > 0.
        """
        tokens, parents, node_boost, is_end = _build_trie(phrases, num_classes)
        return cls(*_compile(tokens, parents, node_boost, is_end, num_classes))


def load_hotwords(
    path: str | os.PathLike, tokenizer: Tokenizer, boost: float = HOTWORD_BOOST
) -> HotwordGraph:
    """:func:`read_hotwords` then :meth:`HotwordGraph.from_phrases`; errors name ``FILE:LINE``."""
    return HotwordGraph.from_phrases(tokenizer, read_hotwords(path, boost), path=path)


def _build_trie(
    phrases: Sequence[tuple[Sequence[int], float]], num_classes: int
) -> tuple[list[int], list[int], list[float], list[bool]]:
    # Returned in breadth-first order (root first), so that every node's parent and failure
    # target come before it: per node, its token, parent (-1 for the root), boost, phrase end.
    children: list[dict[int, int]] = [{}]
    node_boost, is_end = [0.0], [False]
    for number, (ids, boost) in enumerate(phrases, start=1):
        _check_boost(boost, f"the boost of phrase {number}")
        if len(ids) == 0:
            raise ValueError(f"phrase {number} has no token")
        node = 0
        for token in ids:
            token = int(token)
            if not (0 < token < num_classes) or token == BLANK_ID:
                raise ValueError(
                    f"phrase {number}: token id {token} is not in [1, {num_classes}) "
                    "(blank is never part of a phrase)"
                )
            child = children[node].get(token)
            if child is None:
                child = len(children)
                children[node][token] = child
                children.append({})
                node_boost.append(0.0)
                is_end.append(False)
            node_boost[child] = max(node_boost[child], float(boost))
            node = child
        is_end[node] = True
    order, parent_of, token_of = [0], {0: -1}, {0: -1}
    for node in order:
        for token, child in children[node].items():
            order.append(child)
            parent_of[child], token_of[child] = node, token
    new_index = {old: new for new, old in enumerate(order)}
    parents = [new_index[parent_of[old]] if old else -1 for old in order]
    return (
        [token_of[old] for old in order],
        parents,
        [node_boost[old] for old in order],
        [is_end[old] for old in order],
    )


def _compile(
    tokens: list[int],
    parents: list[int],
    node_boost: list[float],
    is_end: list[bool],
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    states = len(tokens)
    next_state = np.zeros((states, num_classes), dtype=np.int64)
    fail = np.zeros(states, dtype=np.int64)
    score = np.zeros(states, dtype=np.float64)
    pending = np.zeros(states, dtype=np.float64)
    out = np.zeros(states, dtype=np.float64)
    kids: list[list[int]] = [[] for _ in range(states)]
    for node in range(1, states):
        kids[parents[node]].append(node)
    for node in range(states):  # breadth-first: parent and failure target are done already
        parent = parents[node]
        if node:
            fail[node] = next_state[fail[parent], tokens[node]] if parent else 0
            score[node] = score[parent] + node_boost[node]
            # pending: what was given since the deepest complete phrase on the root path
            pending[node] = 0.0 if is_end[node] else pending[parent] + node_boost[node]
            out[node] = (score[node] if is_end[node] else 0.0) + out[fail[node]]
            next_state[node] = next_state[fail[node]]
        for child in kids[node]:
            next_state[node, tokens[child]] = child
    total = out + pending  # the running bonus of a hypothesis just arrived in a state
    bonus = total[next_state] - pending[:, None]
    next_state[:, BLANK_ID] = np.arange(states)
    bonus[:, BLANK_ID] = 0.0
    return (
        torch.from_numpy(next_state),
        torch.from_numpy(bonus.astype(np.float32)),
        torch.from_numpy((-pending).astype(np.float32)),
    )
