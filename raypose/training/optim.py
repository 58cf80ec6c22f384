"""Optimizers and learning-rate schedules (pure torch).

Schedules step once per optimizer step (not per micro-batch, not per epoch), so their shape
does not change with gradient accumulation. With ``optim.lr_scaling: linear`` the configured lr
is per ``optim.reference_batch`` images and the optimizer gets :func:`effective_lr` (Goyal et
al.'s linear scaling rule, as torchvision's reference asks of its users by hand).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from raypose.training.config import OptimConfig, ScheduleConfig, TrainConfig

log = logging.getLogger(__name__)


def images_per_step(config: TrainConfig, world_size: int | None = None) -> int:
    """Training images behind one optimizer step: batch_size x accumulate x processes.

    ``world_size`` is the number of training processes; ``None`` takes ``config.workers``
    (0, a local run, is one process).
    """
    processes = max(config.workers if world_size is None else world_size, 1)
    return config.batch_size * config.accumulate * processes


def lr_scale(config: TrainConfig, world_size: int | None = None) -> float:
    """The factor between the configured and the effective lr: 1 unless ``optim.lr_scaling`` is
    ``linear``, then ``images_per_step / optim.reference_batch``."""
    if config.optim.lr_scaling == "none":
        return 1.0
    return images_per_step(config, world_size) / config.optim.reference_batch


def effective_lr(config: TrainConfig, world_size: int | None = None) -> float:
    """The lr the optimizer gets: ``optim.lr x`` :func:`lr_scale`.

    E.g. lr 0.02, linear scaling, reference 16, batch 2 x accumulate 2 x 1 GPU: 0.02 x 4/16 = 0.005.
    """
    return config.optim.lr * lr_scale(config, world_size)


def effective_max_lr(config: TrainConfig, world_size: int | None = None) -> float:
    """onecycle's peak lr as the scheduler gets it: ``(schedule.max_lr or optim.lr) x`` :func:`lr_scale`."""
    return (config.schedule.max_lr or config.optim.lr) * lr_scale(config, world_size)


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Trainable parameters in two groups: with weight decay, and without for norms and biases.

    Norm scales and biases are 1-d tensors; decaying them pulls activations towards zero for
    no regularising benefit, so by default they get ``weight_decay = 0``.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 and not decay_norm_and_bias else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module, config: OptimConfig, lr: float | None = None, fused: bool | None = None
) -> torch.optim.Optimizer:
    """SGD (Nesterov off, as torchvision's recipe) or AdamW over the trainable parameters.

    ``lr`` is the effective lr (:func:`effective_lr`); ``None`` takes ``config.lr`` unscaled.
    ``fused`` (default: when every trainable parameter is on CUDA) updates all parameters in one
    kernel, and lets GradScaler skip its per-step host sync. Build the optimizer after moving
    the model to its device.

    Raises:
        ValueError: the model has no trainable parameter (everything frozen).
    """
    groups = parameter_groups(model, config.weight_decay, config.decay_norm_and_bias)
    if not any(g["params"] for g in groups):
        raise ValueError("no trainable parameters: the freeze level froze the whole model")
    lr = config.lr if lr is None else lr
    if fused is None:
        fused = all(p.is_cuda and p.is_floating_point() for g in groups for p in g["params"])
    if config.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=config.momentum, fused=fused or None)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=config.betas, fused=fused or None)
    _keep_implementation_on_load(optimizer)
    return optimizer


def _keep_implementation_on_load(optimizer: torch.optim.Optimizer) -> None:
    """Keep ``fused``/``foreach`` as built when a saved state is loaded (a resume).

    ``load_state_dict`` takes them from the checkpoint: a state saved on CPU would turn a fused
    CUDA optimizer back to foreach, whose step then fails under GradScaler (which passes fused-only
    arguments). Which kernel runs is a property of where the run runs, not of its checkpoint.
    """
    built = [{k: group.get(k) for k in ("fused", "foreach")} for group in optimizer.param_groups]

    def restore(opt: torch.optim.Optimizer) -> None:
        for group, flags in zip(opt.param_groups, built):
            group.update(flags)

    optimizer.register_load_state_dict_post_hook(restore)


def _with_warmup(factor: Callable[[int], float], config: ScheduleConfig, warmup: int) -> Callable[[int], float]:
    def lr_factor(step: int) -> float:
        if step < warmup:
            alpha = step / warmup
            return (config.warmup_factor * (1 - alpha) + alpha) * factor(step)
        return factor(step)

    return lr_factor


def _constant(config: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda step: 1.0


def _cosine(config: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def milestone_steps(config: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> list[int]:
    """Milestones in optimizer steps: values < 1 are fractions of the run, values >= 1 epochs."""
    steps = [round(m * total_steps) if m < 1 else round(m * steps_per_epoch) for m in config.milestones]
    return sorted(steps)


def _multistep(config: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    steps = milestone_steps(config, total_steps, steps_per_epoch)
    return lambda step: config.gamma ** bisect.bisect_right(steps, step)


# Lookup table, not a registry: these are all the schedules there are.
LAMBDA_SCHEDULES = {"constant": _constant, "cosine": _cosine, "multistep": _multistep}
SCHEDULE_NAMES = ("onecycle", *LAMBDA_SCHEDULES)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    config: ScheduleConfig,
    steps_per_epoch: int,
    epochs: int,
    max_lr: float | None = None,
) -> LRScheduler:
    """The schedule ``config.name`` over ``steps_per_epoch * epochs`` optimizer steps.

    ``onecycle`` is torch's OneCycleLR (Smith's 1cycle policy: warm up to ``max_lr`` over
    ``pct_start`` of the run, anneal to ``max_lr / (div_factor * final_div_factor)``). ``max_lr``
    is the effective peak (:func:`effective_max_lr`); ``None`` takes ``config.max_lr``, else the
    optimizer's lr. Momentum (SGD) or beta1 (AdamW) cycles inversely between
    ``config.max_momentum`` and ``config.base_momentum`` only with ``config.cycle_momentum``;
    otherwise the optimizer keeps ``optim.momentum`` / ``optim.betas[0]`` (torch cycles by
    default and would overwrite them). The others are a LambdaLR with optional linear warm-up.

    Raises:
        ValueError: unknown schedule name (lists the valid ones) or an empty run.
    """
    total = steps_per_epoch * epochs
    if total <= 0:
        raise ValueError(f"a schedule needs at least one optimizer step (steps_per_epoch={steps_per_epoch})")
    if config.name == "onecycle":
        return OneCycleLR(
            optimizer,
            max_lr=max_lr or config.max_lr or optimizer.param_groups[0]["lr"],
            total_steps=total,
            pct_start=config.pct_start,
            div_factor=config.div_factor,
            final_div_factor=config.final_div_factor,
            cycle_momentum=config.cycle_momentum,
            base_momentum=config.base_momentum,
            max_momentum=config.max_momentum,
        )
    if config.cycle_momentum:
        log.warning("schedule.cycle_momentum is set but only onecycle cycles momentum; schedule %r ignores it", config.name)
    if config.name not in LAMBDA_SCHEDULES:
        raise ValueError(f"unknown schedule {config.name!r}; valid: {', '.join(SCHEDULE_NAMES)}")
    factor = LAMBDA_SCHEDULES[config.name](config, total, steps_per_epoch)
    # As torchvision's reference: warm up over warmup_steps, but never longer than the first epoch.
    warmup = min(config.warmup_steps, steps_per_epoch)
    return LambdaLR(optimizer, _with_warmup(factor, config, warmup))
