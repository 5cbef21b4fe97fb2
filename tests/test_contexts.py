"""Attention contexts: the masks of both styles, the parsing of lists, the per-batch draw."""

from __future__ import annotations

import collections
import math

import pytest
import torch

from rnnt.models.contexts import (
    ContextSampler,
    as_contexts,
    context_name,
    streaming_chunk,
)
from rnnt.models.masks import attention_mask


def _reference(lengths: list[int], frames: int, context, chunked: bool) -> torch.Tensor:
    """(B, T', T') bool from the definitions, one query and key at a time: a valid key within
    the context; a padded query (its output is discarded) also sees itself."""
    left, right = context
    mask = torch.zeros(len(lengths), frames, frames, dtype=torch.bool)
    for b, length in enumerate(lengths):
        for i in range(frames):
            if i >= length:
                mask[b, i, i] = True
            if chunked and right >= 0:
                size = right + 1
                start = (i // size) * size
                lowest, highest = start - left, start + size - 1
            else:
                lowest, highest = i - left, i + right
            for j in range(length):
                if (left < 0 or j >= lowest) and (right < 0 or j <= highest):
                    mask[b, i, j] = True
    return mask


CONTEXTS = [[4, 3], [0, 1], [-1, 3], [6, 7], [5, 0], [2, -1], [3, 2]]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("chunked", [False, True])
def test_mask_of_every_context_is_its_definition(context, chunked):
    lengths = [23, 17, 9]
    additive = attention_mask(torch.tensor(lengths), 23, context, chunked=chunked)
    assert additive.shape == (3, 1, 23, 23)
    assert torch.equal(additive[:, 0] == 0, _reference(lengths, 23, context, chunked))


def test_chunked_frames_see_their_whole_chunk_and_the_left_frames_before_it():
    # Chunks of 4 (right = 3) with 2 frames of left context, on 12 valid frames.
    mask = attention_mask(torch.tensor([12]), 12, [2, 3], chunked=True)[0, 0] == 0
    for query in (4, 5, 6, 7):  # the second chunk: frames 2..7 for each of its frames
        assert mask[query].nonzero().flatten().tolist() == [2, 3, 4, 5, 6, 7]
    # [left, 0] is the same mask in both styles: chunks of one frame.
    sliding = attention_mask(torch.tensor([12, 5]), 12, [3, 0])
    assert torch.equal(attention_mask(torch.tensor([12, 5]), 12, [3, 0], chunked=True), sliding)


def test_a_pair_or_a_list_of_pairs_reads_as_contexts():
    assert as_contexts([8, 0]) == [[8, 0]]
    assert as_contexts([[64, 3], (64, 7), [-1, -1]]) == [[64, 3], [64, 7], [-1, -1]]
    assert as_contexts([2.0, -1]) == [[2, -1]]  # YAML may give floats
    for wrong in ([1], [-2, 0], [[8, 3], [1]], [], 5, [True, 0], [[8, 3], [8, 3]], [0.5, 1]):
        with pytest.raises(ValueError, match="attention_context_size="):
            as_contexts(wrong)


def test_streaming_chunks_and_names():
    assert streaming_chunk([8, 0], chunked=False) == streaming_chunk([8, 0], chunked=True) == 1
    assert streaming_chunk([8, 7], chunked=True) == 8
    assert streaming_chunk([8, 7], chunked=False) is None  # a sliding look-ahead does not stream
    assert streaming_chunk([-1, -1], chunked=True) is None
    assert [context_name(c) for c in ([64, 7], [-1, -1], [-1, 0])] == ["64_7", "full", "-1_0"]


def test_sampling_follows_the_probabilities():
    contexts = [[8, 1], [8, 3], [8, 7], [-1, -1]]
    probabilities = [0.1, 0.2, 0.3, 0.4]
    sampler = ContextSampler(contexts, probabilities)
    draws = 20_000
    counts = collections.Counter(
        tuple(sampler.draw(step, batch)) for step in range(draws // 4) for batch in range(4)
    )
    for context, probability in zip(contexts, probabilities, strict=True):
        sigma = math.sqrt(draws * probability * (1 - probability))
        assert abs(counts[tuple(context)] - draws * probability) < 4 * sigma
    # A draw depends on the step and batch only: another sampler (another rank, a resumed
    # run) draws the same; consecutive batches do not all draw one context.
    again = ContextSampler(contexts, probabilities)
    assert [again.draw(s, 0) for s in range(50)] == [sampler.draw(s, 0) for s in range(50)]
    assert len({tuple(sampler.draw(s, 0)) for s in range(50)}) == 4
    # Without probabilities every context is equally likely; one context is always drawn.
    equal = collections.Counter(tuple(ContextSampler(contexts).draw(s, 1)) for s in range(4000))
    assert all(abs(count - 1000) < 4 * math.sqrt(4000 * 0.25 * 0.75) for count in equal.values())
    assert ContextSampler([[4, 0]]).draw(7, 0) == [4, 0]


def test_a_zero_probability_context_is_never_drawn_and_wrong_probabilities_are_refused():
    sampler = ContextSampler([[8, 1], [8, 3]], [0.0, 1.0])
    assert all(sampler.draw(step, 0) == [8, 3] for step in range(200))
    for wrong in ([0.5], [0.7, 0.7], [-0.5, 1.5], [math.nan, 1.0]):
        with pytest.raises(ValueError, match="attention_context_probabilities"):
            ContextSampler([[8, 1], [8, 3]], wrong)
