"""SpecAugment: masks only in training, within their bounds and widths, filled with the
utterance mean, and as many time masks as the utterance is long."""

from __future__ import annotations

import torch

from rnnt.constants import (
    FREQ_MASK_WIDTH,
    FREQ_MASKS,
    HOP_LENGTH_S,
    N_MELS,
    TIME_MASK_RATIO,
    TIME_MASKS_MAX,
    TIME_MASKS_PER_SECOND,
)
from rnnt.models.features import LogMelFrontend
from rnnt.models.specaugment import SpecAugment
from tests.audio_batches import LENGTHS
from tests.audio_batches import random_audio_batch as _batch


def _spans(row: torch.Tensor) -> list[tuple[int, int]]:
    """Runs of True in a 1-D bool tensor as (start, length)."""
    runs, start = [], None
    for index, value in enumerate(row.tolist() + [False]):
        if value and start is None:
            start = index
        elif not value and start is not None:
            runs.append((start, index - start))
            start = None
    return runs


def test_spec_augment_only_in_training_mode():
    torch.manual_seed(0)
    frontend = LogMelFrontend()
    features, lengths = frontend(*_batch(LENGTHS))
    augment = SpecAugment()
    assert augment.eval()(features, lengths) is features
    augmented = augment.train()(features, lengths)
    assert not torch.equal(augmented, features)
    # Padded frames are never touched.
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(augmented[row, length:] == 0)


def test_spec_augment_masks_stay_within_bounds():
    torch.manual_seed(0)
    frontend = LogMelFrontend()
    features, lengths = frontend(*_batch(LENGTHS))
    augment = SpecAugment().train()
    for _ in range(20):
        masks = augment.masks(features, lengths)
        for row, length in enumerate(lengths.tolist()):
            assert not masks[row, length:].any()
            valid = masks[row, :length]
            # A bin masked on every valid frame is a frequency mask (masks may overlap).
            freq_runs = _spans(valid.all(dim=0))
            assert len(freq_runs) <= FREQ_MASKS
            assert sum(width for _, width in freq_runs) <= FREQ_MASKS * FREQ_MASK_WIDTH
            # A frame masked on every bin is a time mask (frequency masks cover < all bins).
            seconds = length * HOP_LENGTH_S
            count = min(TIME_MASKS_MAX, int(seconds * TIME_MASKS_PER_SECOND))
            max_width = int(length * TIME_MASK_RATIO)
            time_runs = _spans(valid.all(dim=1))
            assert len(time_runs) <= count
            assert sum(width for _, width in time_runs) <= count * max_width


def test_single_masks_are_at_most_their_width():
    torch.manual_seed(0)
    features = torch.randn(4, 1_000, N_MELS)
    lengths = torch.tensor([1_000, 700, 300, 20])
    augment = SpecAugment(freq_masks=1, time_masks_max=1).train()
    widths = []
    for _ in range(100):
        masks = augment.masks(features, lengths)
        for row, length in enumerate(lengths.tolist()):
            freq_runs = _spans(masks[row, :length].all(dim=0))
            time_runs = _spans(masks[row, :length].all(dim=1))
            assert len(freq_runs) <= 1 and len(time_runs) <= 1
            assert all(width <= FREQ_MASK_WIDTH for _, width in freq_runs)
            assert all(width <= int(length * TIME_MASK_RATIO) for _, width in time_runs)
            widths += [width for _, width in freq_runs]
    # Widths are drawn over the whole range, up to the maximum.
    assert max(widths) == FREQ_MASK_WIDTH


def test_spec_augment_fills_with_the_utterance_mean():
    torch.manual_seed(0)
    frontend = LogMelFrontend()
    features, lengths = frontend(*_batch([16_000, 8_000]))
    augment = SpecAugment().train()
    torch.manual_seed(1)
    masks = augment.masks(features, lengths)
    torch.manual_seed(1)
    augmented = augment(features, lengths)
    for row, length in enumerate(lengths.tolist()):
        mean = features[row, :length].mean()
        torch.testing.assert_close(augmented[row][masks[row]], mean.expand(int(masks[row].sum())))
        assert torch.equal(augmented[row][~masks[row]], features[row][~masks[row]])


def test_time_masks_adapt_to_utterance_length():
    torch.manual_seed(0)
    features = torch.randn(2, 3_000, N_MELS)
    lengths = torch.tensor([3_000, 150])  # 30 s and 1.5 s
    augment = SpecAugment(freq_masks=0).train()
    masked = torch.stack(
        [augment.masks(features, lengths).all(dim=2).sum(dim=1) for _ in range(50)]
    )
    long_cap = TIME_MASKS_MAX * int(3_000 * TIME_MASK_RATIO)
    short_cap = int(1.5 * TIME_MASKS_PER_SECOND) * int(150 * TIME_MASK_RATIO)
    assert masked[:, 0].max() <= long_cap and masked[:, 0].float().mean() > 0.2 * long_cap
    assert masked[:, 1].max() <= short_cap
