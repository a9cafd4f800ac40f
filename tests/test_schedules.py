"""sdlab.schedules against diffusers' own schedulers (the formulas every trainer here uses)."""
from __future__ import annotations

import pytest
import torch

from sdlab.schedules import cosine, lr_factor, warmup


@pytest.mark.parametrize("warm, steps", [(0, 40), (10, 40), (7, 23)])
def test_warmup_then_cosine_is_diffusers_schedule(warm, steps):
    from diffusers.optimization import get_cosine_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warm, num_training_steps=steps)
    theirs = []
    for _ in range(steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # diffusers' warm-up starts at 0 (step / warm); sdlab's trainers take (step + 1) / warm, so the first step learns
    ours = [warmup(s - 1, warm) if s < warm else cosine(s - warm, steps - warm) for s in range(steps)]
    assert ours[warm:] == pytest.approx(theirs[warm:], abs=1e-12)
    assert ours[:warm] == pytest.approx(theirs[:warm], abs=1e-12)


def test_cosine_ends_at_final_and_holds():
    assert cosine(0, 10, 0.1) == 1.0
    assert cosine(5, 10, 0.1) == pytest.approx(0.55)
    assert cosine(10, 10, 0.1) == pytest.approx(0.1) == cosine(25, 10, 0.1)


def test_warmup_caps_at_one_and_zero_steps_means_none():
    assert [warmup(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup(0, 0) == 1.0


@pytest.mark.parametrize("scheduler", ["constant", "cosine"])
def test_lr_factor_is_the_warmup_then_diffusers_schedule(scheduler):
    from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    warm, steps = 5, 30
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    make = get_cosine_schedule_with_warmup if scheduler == "cosine" else get_constant_schedule_with_warmup
    sched = make(opt, num_warmup_steps=warm, **({"num_training_steps": steps} if scheduler == "cosine" else {}))
    theirs = []
    for _ in range(steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [lr_factor(s, steps, warm, scheduler) for s in range(steps)]
    assert ours[:warm] == [(s + 1) / warm for s in range(warm)]  # one step ahead of diffusers' ramp: the first step learns
    assert ours[warm:] == pytest.approx(theirs[warm:], abs=1e-12)
    assert (ours[-1] < 0.01) == (scheduler == "cosine")
