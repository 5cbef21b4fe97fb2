import math

import pytest
import torch

from rnnt.scheduler import build_scheduler, cosine_factor, noam_factor


def _learning_rates(name: str, steps: int, **kwargs) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = build_scheduler(optimizer, name, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_noam_warms_up_to_peak_then_decays_as_inverse_sqrt():
    rates = _learning_rates("noam", 400, warmup_steps=100)
    assert rates[0] == pytest.approx(2.0 / 100)
    assert max(rates) == pytest.approx(2.0)
    assert rates.index(max(rates)) == 99
    assert all(a < b for a, b in zip(rates[:99], rates[1:100], strict=True))
    assert rates[399] == pytest.approx(2.0 * math.sqrt(100 / 400))


def test_cosine_reaches_floor_at_total_steps():
    rates = _learning_rates("cosine", 300, warmup_steps=50, total_steps=250, min_lr_ratio=0.1)
    assert max(rates) == pytest.approx(2.0)
    assert rates.index(max(rates)) == 49
    assert rates[249] == pytest.approx(0.2)
    assert rates[299] == pytest.approx(0.2)
    assert cosine_factor(149, 250, 50, 0.1) == pytest.approx(0.55)


def test_noam_factor_is_one_exactly_at_the_end_of_warmup():
    assert noam_factor(9, warmup_steps=10) == pytest.approx(1.0)


def test_unknown_scheduler_and_cosine_without_length_are_clear_errors():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="unknown scheduler 'linear'"):
        build_scheduler(optimizer, "linear")
    with pytest.raises(ValueError, match="total number of optimizer steps"):
        build_scheduler(optimizer, "cosine", total_steps=None)
