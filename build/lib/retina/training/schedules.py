"""Learning-rate schedules stepped per iteration: linear warm-up, then decay.

Each builder takes the optimizer and the run's total number of optimizer steps
(Lightning's ``estimated_stepping_batches``) and returns a ``LambdaLR``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int, warmup_factor: float) -> float:
    if step >= warmup_steps:
        return 1.0
    return warmup_factor + (1 - warmup_factor) * step / warmup_steps


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 100,
    warmup_factor: float = 0.001,
    min_factor: float = 0.0,
) -> LambdaLR:
    """Linear warm-up from ``warmup_factor``, then cosine decay to ``min_factor`` x lr."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps, warmup_factor)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return LambdaLR(optimizer, factor)


def warmup_multistep(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 500,
    warmup_factor: float = 0.001,
    milestones: tuple[float, ...] = (8 / 12, 11 / 12),
    gamma: float = 0.1,
) -> LambdaLR:
    """Linear warm-up, then lr x ``gamma`` at each milestone (fractions of the run)."""
    steps = [int(m * total_steps) for m in milestones]

    def factor(step: int) -> float:
        return _warmup(step, warmup_steps, warmup_factor) * gamma ** sum(step >= s for s in steps)

    return LambdaLR(optimizer, factor)
