"""Attention contexts: which key frames each query frame of the encoder may attend to.

A context is ``[left, right]`` in encoder frames (after subsampling; -1 = unlimited on that
side), read in one of two styles (``ATTENTION_CONTEXT_STYLES``):

- ``sliding``: frame ``i`` sees frames ``i - left .. i + right``. ``[left, 0]`` (with causal
  convolutions) streams: no frame sees the future, whatever the chunk size.
- ``chunked``: frames are grouped in chunks of ``right + 1``; every frame of a chunk sees the
  whole chunk and the ``left`` frames before the chunk's first frame. It streams chunk by
  chunk, exactly, at ``right + 1`` frames (or a multiple) per chunk: the look-ahead is the
  chunk, not more. ``[left, 0]`` is the same as ``sliding`` ``[left, 0]``; ``right = -1`` is
  unlimited, as in ``sliding``.

A model may list several contexts (multi-lookahead training, NeMo's form): each training batch
draws one with the given probabilities, validation scores each, and streaming picks the one
whose chunk matches the chunk size asked for. The first listed is the model's default (offline
transcription, export).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from rnnt.constants import ATTENTION_CONTEXT_STYLES

Context = list[int]  # [left, right] encoder frames; -1 = unlimited


def contexts_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as ``attention_context_size`` (``[left, right]`` or a
    non-empty list of such pairs, none twice), or ``None``: the rule of :func:`as_contexts` and
    of ``--model.attention_context_size``."""
    listed = isinstance(value, (list, tuple)) and value
    pairs = value if listed and isinstance(value[0], (list, tuple)) else [value]
    seen = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(map(_side, pair)):
            return (
                "must be [left, right] or a list of [left, right] pairs, each side >= 0 "
                "encoder frames or -1 for unlimited"
            )
        if list(pair) in seen:
            return f"lists {[int(side) for side in pair]} twice"
        seen.append(list(pair))
    return None


def as_contexts(value: Any) -> list[Context]:
    """``[left, right]`` or a non-empty list of such pairs, as a list of pairs.

    Raises ``ValueError`` naming the value and what is wrong (``contexts_problem``).
    """
    problem = contexts_problem(value)
    if problem:
        raise ValueError(f"attention_context_size={_shown(value)} {problem}.")
    pairs = value if isinstance(value[0], (list, tuple)) else [value]
    return [[int(side) for side in pair] for pair in pairs]


def probabilities_problem(probabilities: Sequence[float] | None, count: int) -> str | None:
    """What is wrong with ``probabilities`` for ``count`` contexts (one per context, each >= 0,
    summing to 1; None: equal), or ``None``: the rule of :class:`ContextSampler` and of
    ``--model.attention_context_probabilities``."""
    if probabilities is None:
        return None
    weights = list(probabilities)
    if (
        len(weights) != count
        or any(not math.isfinite(weight) or weight < 0 for weight in weights)
        or not math.isclose(sum(weights), 1.0, abs_tol=1e-6)
    ):
        return f"must be {count} numbers >= 0 (one per context) that sum to 1"
    return None


def check_style(style: str) -> None:
    """Raise ``ValueError`` unless ``style`` is one of ``ATTENTION_CONTEXT_STYLES``."""
    if style not in ATTENTION_CONTEXT_STYLES:
        raise ValueError(
            f"attention_context_style={style!r} must be one of {', '.join(ATTENTION_CONTEXT_STYLES)}."
        )


def context_allows(
    queries: torch.Tensor, keys: torch.Tensor, context: Sequence[int], chunked: bool
) -> torch.Tensor:
    """``(Q, K)`` bool: whether the query frame at absolute position ``queries[i]`` may attend
    to the key frame at ``keys[j]`` under ``context`` (``chunked``: the chunked style).

    The one statement of the rule: the full forward's mask and the streaming encoder's both
    come from it. Written for ONNX export (no in-place ops).
    """
    left, right = context
    query, key = queries.view(-1, 1), keys.view(1, -1)
    if chunked and right >= 0:
        start = torch.div(query, right + 1, rounding_mode="floor") * (right + 1)
        first, last = start - left, start + right
    else:
        first, last = query - left, query + right
    allowed = torch.ones(query.size(0), key.size(1), dtype=torch.bool, device=queries.device)
    if left >= 0:
        allowed = allowed & (key >= first)
    if right >= 0:
        allowed = allowed & (key <= last)
    return allowed


def streaming_chunk(context: Sequence[int], chunked: bool) -> int | None:
    """Encoder frames a streamed chunk must be a multiple of under ``context``: 1 for
    ``[left, 0]``, ``right + 1`` for a chunked context; ``None`` where a frame sees past its
    chunk (the context does not stream)."""
    right = context[1]
    if right == 0:
        return 1
    return right + 1 if chunked and right > 0 else None


def context_name(context: Sequence[int]) -> str:
    """The context in a metric's name: ``[64, 7]`` -> ``64_7``, ``[-1, -1]`` -> ``full``."""
    left, right = context
    return "full" if left < 0 and right < 0 else f"{left}_{right}"


class ContextSampler:
    """Draws the context of each training batch from ``contexts`` with ``probabilities``.

    A draw is a function of the step and batch index only (a string-seeded
    :class:`random.Random`): the same on every DDP rank, the same after a resume, and free of
    any global random state.

    Raises ``ValueError`` for probabilities that do not match the contexts one to one, are
    negative, or do not sum to 1.
    """

    def __init__(
        self, contexts: list[Context], probabilities: Sequence[float] | None = None
    ) -> None:
        count = len(contexts)
        problem = probabilities_problem(probabilities, count)
        if problem:
            raise ValueError(
                f"attention_context_probabilities={_shown(probabilities)} {problem}; contexts: "
                f"{contexts}."
            )
        self.contexts = contexts
        self.probabilities = [1.0 / count] * count if probabilities is None else list(probabilities)

    def draw(self, step: int, batch_index: int) -> Context:
        """The context of the batch ``batch_index`` at optimizer step ``step``."""
        if len(self.contexts) == 1:
            return self.contexts[0]
        rng = random.Random(f"attention-context:{step}:{batch_index}")
        return rng.choices(self.contexts, weights=self.probabilities)[0]


def _side(value: Any) -> bool:
    # An int >= -1 (or a float that is one, as YAML may give).
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and int(value) == value and value >= -1


def _shown(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
