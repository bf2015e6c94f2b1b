"""retina.training.schedules: learning-rate factors at hand-computed steps."""

import math

import pytest
import torch

from retina.training.schedules import warmup_cosine, warmup_multistep


def lrs(make, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_values():
    got = lrs(lambda o: warmup_cosine(o, total_steps=12, warmup_steps=2, warmup_factor=0.5), 13)
    # warm-up: 0.5 at step 0, 0.5 + 0.5 * 1/2 = 0.75 at step 1; then cosine over 10 steps
    expected = [0.05, 0.075] + [0.1 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(11)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got[-1] == pytest.approx(0.0, abs=1e-12)  # min_factor 0: the end of the run


def test_warmup_cosine_floor():
    got = lrs(lambda o: warmup_cosine(o, total_steps=4, warmup_steps=0, min_factor=0.1), 6)
    assert got[4] == pytest.approx(0.01) and got[5] == pytest.approx(0.01)  # stays at the floor


def test_warmup_multistep_values():
    # 12 steps, milestones at 8/12 and 11/12 -> steps 8 and 11; warm-up over 4 steps from 0.001
    got = lrs(lambda o: warmup_multistep(o, total_steps=12, warmup_steps=4), 12)
    warm = [0.1 * (0.001 + 0.999 * s / 4) for s in range(4)]
    assert got == pytest.approx(warm + [0.1] * 4 + [0.01] * 3 + [0.001], rel=1e-9)
