"""Learning-rate warmup schedules, as multipliers of the peak learning rate.

Both schedules rise linearly from near zero to the peak over ``warmup_steps`` optimizer steps:
transducers diverge easily when a fresh encoder meets the full learning rate.

- ``noam``: then decays with the inverse square root of the step (Transformer / Conformer
  recipes). Needs no knowledge of the run's length, so it suits open-ended runs and resumes.
- ``cosine``: then follows half a cosine down to ``min_lr_ratio`` of the peak at
  ``total_steps``, and stays there.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from rnnt.constants import MIN_LR_RATIO, SCHEDULER, WARMUP_STEPS

SCHEDULERS = ("noam", "cosine")


def noam_factor(step: int, warmup_steps: int = WARMUP_STEPS) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warmup to 1.0 at ``warmup_steps``, then ``sqrt(warmup_steps / step)``.
    """
    step = step + 1
    warmup_steps = max(1, warmup_steps)
    return min(step / warmup_steps, math.sqrt(warmup_steps / step))


def cosine_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = WARMUP_STEPS,
    min_lr_ratio: float = MIN_LR_RATIO,
) -> float:
    """Multiplier of the peak learning rate: linear warmup, then cosine decay to ``min_lr_ratio``."""
    step = step + 1
    warmup_steps = max(1, min(warmup_steps, total_steps))
    if step <= warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: Optimizer,
    name: str = SCHEDULER,
    warmup_steps: int = WARMUP_STEPS,
    total_steps: int | None = None,
    min_lr_ratio: float = MIN_LR_RATIO,
) -> LambdaLR:
    """A per-step ``LambdaLR`` for ``name`` in ``SCHEDULERS``; ``cosine`` needs ``total_steps``."""
    if name == "noam":
        return LambdaLR(optimizer, lambda step: noam_factor(step, warmup_steps))
    if name == "cosine":
        if not total_steps or total_steps <= 0:
            raise ValueError(
                "scheduler 'cosine' needs the run's total number of optimizer steps; "
                "set trainer.max_steps or trainer.max_epochs"
            )
        return LambdaLR(
            optimizer, lambda step: cosine_factor(step, total_steps, warmup_steps, min_lr_ratio)
        )
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
