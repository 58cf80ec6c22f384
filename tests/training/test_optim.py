"""Optimizers and schedules: parameter groups, schedule shapes, per-optimizer-step stepping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from raypose.training.config import OptimConfig, ScheduleConfig, TrainConfig
from raypose.training.optim import (
    build_optimizer,
    build_scheduler,
    effective_lr,
    effective_max_lr,
    images_per_step,
    milestone_steps,
    parameter_groups,
)


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def lrs(schedule: ScheduleConfig, steps_per_epoch: int, epochs: int, lr: float = 0.1) -> list[float]:
    opt = build_optimizer(model(), OptimConfig(name="sgd", lr=lr))
    sched = build_scheduler(opt, schedule, steps_per_epoch, epochs)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_no_weight_decay_on_norms_and_biases():
    m = model()
    groups = parameter_groups(m, 1e-4, decay_norm_and_bias=False)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(m[0].weight), id(m[3].weight)}
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 4  # conv bias, bn w+b, linear bias
    assert len(parameter_groups(m, 1e-4, decay_norm_and_bias=True)[0]["params"]) == 6


def test_frozen_parameters_are_left_out_and_all_frozen_is_an_error():
    m = model()
    m[0].weight.requires_grad_(False)
    opt = build_optimizer(m, OptimConfig(name="adamw", lr=1e-3))
    assert isinstance(opt, torch.optim.AdamW)
    assert sum(len(g["params"]) for g in opt.param_groups) == 5
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(m, OptimConfig())


def test_onecycle_peaks_at_pct_start_and_ends_far_below():
    values = lrs(ScheduleConfig(name="onecycle", pct_start=0.25, div_factor=10, final_div_factor=100), 10, 4, lr=0.1)
    peak = max(range(len(values)), key=values.__getitem__)
    assert peak == pytest.approx(0.25 * 40 - 1, abs=1)
    assert values[0] == pytest.approx(0.01)
    assert values[peak] == pytest.approx(0.1, rel=1e-3)
    assert values[-1] < 0.001


def test_multistep_drops_at_fractions_or_epochs():
    values = lrs(ScheduleConfig(name="multistep", milestones=[0.5, 0.75], gamma=0.1), 4, 4)
    assert values[7] == pytest.approx(0.1) and values[8] == pytest.approx(0.01) and values[12] == pytest.approx(0.001)
    assert milestone_steps(ScheduleConfig(milestones=[2, 3]), 40, 10) == [20, 30]


def test_warmup_then_constant_and_cosine_endpoints():
    warm = lrs(ScheduleConfig(name="constant", warmup_steps=4, warmup_factor=0.1), 5, 2)
    assert warm[0] == pytest.approx(0.01)
    assert warm[2] == pytest.approx(0.1 * (0.1 * 0.5 + 0.5))
    assert warm[4:] == pytest.approx([0.1] * 6)
    cos = lrs(ScheduleConfig(name="cosine", min_lr_ratio=0.1), 10, 1)
    assert cos[0] == pytest.approx(0.1)
    assert cos[5] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert all(a >= b for a, b in zip(cos, cos[1:]))


def test_empty_run_is_an_error():
    opt = build_optimizer(model(), OptimConfig())
    with pytest.raises(ValueError, match="at least one optimizer step"):
        build_scheduler(opt, ScheduleConfig(), 0, 5)


def momenta(optim: OptimConfig, schedule: ScheduleConfig, steps: int = 10) -> list[float]:
    """SGD momentum / AdamW beta1 of the first group before each of ``steps`` optimizer steps."""
    opt = build_optimizer(model(), optim)
    sched = build_scheduler(opt, schedule, steps, 1)
    key = "momentum" if optim.name == "sgd" else "betas"
    out = []
    for _ in range(steps):
        value = opt.param_groups[0][key]
        out.append(value if key == "momentum" else value[0])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_onecycle_keeps_the_configured_momentum_unless_cycling(name):
    optim = OptimConfig(name=name, lr=0.1, momentum=0.7, betas=(0.6, 0.999))
    kept = momenta(optim, ScheduleConfig(name="onecycle", pct_start=0.5))
    assert kept == pytest.approx([0.7 if name == "sgd" else 0.6] * 10)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_cycled_momentum_follows_the_configured_range(name):
    schedule = ScheduleConfig(name="onecycle", pct_start=0.5, cycle_momentum=True, base_momentum=0.5, max_momentum=0.8)
    values = momenta(OptimConfig(name=name, lr=0.1, momentum=0.7), schedule)
    # max_momentum at steps 0 and 9, base_momentum at the lr peak (step 4 of 0..9), cosine between
    assert values[0] == pytest.approx(0.8) and min(values) == pytest.approx(0.5)
    assert values.index(min(values)) == 4
    assert values[2] == pytest.approx(0.8 - 0.3 * (1 - math.cos(math.pi * 2 / 4)) / 2)
    assert values[-1] == pytest.approx(0.8)


def test_momentum_range_is_validated():
    with pytest.raises(ValueError, match=r"base_momentum \(0.9\) must be <= schedule.max_momentum \(0.8\)"):
        ScheduleConfig(cycle_momentum=True, base_momentum=0.9, max_momentum=0.8)


def train_config(**kwargs) -> TrainConfig:
    optim = {"lr": 0.02, "lr_scaling": kwargs.pop("lr_scaling", "linear"), "reference_batch": 16}
    return TrainConfig.model_validate({"optim": optim, **kwargs})


def test_linear_lr_scaling_follows_images_per_step():
    config = train_config(batch_size=2, accumulate=2, workers=8)
    assert images_per_step(config) == 32 and images_per_step(config, world_size=2) == 8
    assert effective_lr(config) == pytest.approx(0.04)
    assert effective_lr(config, world_size=2) == pytest.approx(0.01)
    local = train_config(batch_size=4, accumulate=1, workers=0)  # one process
    assert images_per_step(local) == 4 and effective_lr(local) == pytest.approx(0.005)
    unscaled = train_config(batch_size=4, workers=0, lr_scaling="none")
    assert effective_lr(unscaled) == pytest.approx(0.02)


def test_scaled_lr_reaches_the_optimizer_and_onecycle_peak():
    config = train_config(batch_size=2, accumulate=1, workers=0, schedule={"name": "onecycle", "max_lr": 0.08})
    assert effective_max_lr(config) == pytest.approx(0.01)
    opt = build_optimizer(model(), config.optim, lr=effective_lr(config, 1))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025)
    sched = build_scheduler(opt, config.schedule, 10, 1, max_lr=effective_max_lr(config, 1))
    peak = 0.0
    for _ in range(10):
        peak = max(peak, opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert peak == pytest.approx(0.01, rel=1e-3)
    no_max = train_config(batch_size=2, workers=0, schedule={"name": "onecycle"})
    assert effective_max_lr(no_max) == pytest.approx(0.0025)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_only_on_cuda_by_default_and_kept_when_a_state_is_loaded(name):
    m = model()
    cpu_opt = build_optimizer(m, OptimConfig(name=name))  # CPU parameters: torch's default kernels
    assert not cpu_opt.param_groups[0]["fused"]
    m(torch.randn(2, 3, 3, 3)).sum().backward()
    cpu_opt.step()
    # a resume on GPU: the optimizer is fused, the saved state is not (CPU fused kernels stand in here)
    fused = build_optimizer(m, OptimConfig(name=name), fused=True)
    fused.load_state_dict(cpu_opt.state_dict())
    assert all(g["fused"] for g in fused.param_groups)
    # GradScaler hands fused optimizers these two; a foreach step would reject them
    fused.grad_scale, fused.found_inf = torch.tensor(1.0), torch.tensor(0.0)
    before = m[0].weight.detach().clone()
    fused.step()
    assert not torch.equal(before, m[0].weight)
