"""Prediction network: the step API equals the training forward."""

from __future__ import annotations

import torch

from rnnt.models.decoder import PredictionNetwork


def _network(num_layers: int = 2) -> PredictionNetwork:
    torch.manual_seed(0)
    return PredictionNetwork(
        num_classes=11, embed_dim=8, hidden_dim=12, num_layers=num_layers, dropout=0.1, blank_id=0
    ).eval()


def test_forward_prepends_blank_and_gives_u_plus_one_outputs():
    network = _network()
    targets = torch.randint(1, 11, (3, 5))
    output = network(targets, torch.tensor([5, 2, 0]))
    assert output.shape == (3, 6, 12)
    # Output 0 has seen only the start symbol, so it is the same for every utterance.
    torch.testing.assert_close(output[0, 0], output[1, 0])
    torch.testing.assert_close(output[0, 0], output[2, 0])


def test_step_equals_forward_on_the_same_tokens():
    for num_layers in (1, 2):
        network = _network(num_layers)
        targets = torch.randint(1, 11, (4, 7))
        with torch.no_grad():
            full = network(targets, torch.full((4,), 7))
            state = network.initial_state(4, targets.device)
            assert state[0].shape == state[1].shape == (num_layers, 4, 12)
            tokens = torch.zeros(4, dtype=torch.long)
            for position in range(8):
                output, state = network.step(tokens, state)
                torch.testing.assert_close(output, full[:, position], atol=1e-6, rtol=1e-5)
                if position < 7:
                    tokens = targets[:, position]


def test_outputs_do_not_depend_on_target_padding():
    network = _network()
    targets = torch.randint(1, 11, (1, 4))
    padded = torch.cat((targets, torch.randint(0, 11, (1, 6))), dim=1)
    with torch.no_grad():
        short = network(targets, torch.tensor([4]))
        long = network(padded, torch.tensor([4]))
    torch.testing.assert_close(long[:, :5], short)
