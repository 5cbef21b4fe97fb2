"""Feature normaliser: global statistics learned from valid frames in training only, frozen
in eval, and untouched by a batch with non-finite features."""

from __future__ import annotations

import torch

from rnnt.models.normalizer import FeatureNormalizer


def test_feature_normalizer_learns_global_statistics_from_valid_frames_only():
    torch.manual_seed(0)
    normalizer = FeatureNormalizer(n_mels=4, momentum=0.05)
    lengths = torch.tensor([50, 30])
    for _ in range(40):
        features = torch.randn(2, 50, 4) * torch.tensor([1.0, 2.0, 4.0, 8.0]) - 8.0
        features[1, 30:] = 1e6  # garbage padding must not leak into the statistics
        normalizer.train()(features, lengths)
    assert torch.allclose(normalizer.mean, torch.full((4,), -8.0), atol=0.3)
    assert torch.allclose(normalizer.var.sqrt(), torch.tensor([1.0, 2.0, 4.0, 8.0]), rtol=0.1)

    frozen = normalizer.mean.clone()
    features = torch.randn(2, 50, 4) * 3.0 + 5.0
    output = normalizer.eval()(features, lengths)
    assert torch.equal(normalizer.mean, frozen)  # eval mode never updates
    assert torch.all(output[1, 30:] == 0)
    alone = normalizer(features[1:, :30], lengths[1:])
    assert torch.allclose(alone[0], output[1, :30])


def test_feature_normalizer_ignores_a_batch_with_non_finite_features():
    normalizer = FeatureNormalizer(n_mels=3).train()
    lengths = torch.tensor([20])
    normalizer(torch.randn(1, 20, 3), lengths)
    mean, var, seen = normalizer.mean.clone(), normalizer.var.clone(), int(normalizer.batches_seen)
    for bad in (float("nan"), float("inf")):
        features = torch.randn(1, 20, 3)
        features[0, 5, 1] = bad
        normalizer(features, lengths)
        assert torch.equal(normalizer.mean, mean) and torch.equal(normalizer.var, var)
        assert int(normalizer.batches_seen) == seen
    normalizer(torch.randn(1, 20, 3), lengths)  # a good batch updates again
    assert not torch.equal(normalizer.mean, mean) and int(normalizer.batches_seen) == seen + 1
