"""What may change when a run resumes from its checkpoint, and what may not.

A rerun with the same ``name`` resumes. Settings that shape the model, the optimizer's state
or the length of the schedule cannot change then (:func:`frozen_changes`); the run is refused
before anything starts, naming the setting, its old and new values and the choices. Settings
that can change (the learning rate, epochs under a LambdaLR schedule, evaluation and logging)
take effect: :func:`apply_hyperparameters` puts the new config's values into the restored
optimizer and schedule. Pure torch: no Ray, no MLflow.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from raypose.errors import ConfigError
from raypose.training.config import TrainConfig, flatten

log = logging.getLogger(__name__)

RUN_RECORD = "config.yaml"
# Settings a resumed run may not change: the model and its weights, the optimizer kind, the
# schedule kind, and everything that sets the number of optimizer steps per epoch.
FROZEN = ("model.", "optim.name", "schedule.name", "batch_size", "accumulate", "workers", "data.train_limit",
          "data.train_ann")
# Model keys that only matter when a run starts (the weights it starts from): not frozen.
INIT_ONLY = ("model.weights", "model.backbone_weights", "model.weights_min_match")
# Under 1cycle the schedule's length and shape are fixed when it starts.
FROZEN_ONECYCLE = ("epochs", "schedule.pct_start", "schedule.div_factor", "schedule.final_div_factor")


def frozen_changes(saved: dict[str, Any], new: TrainConfig) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for each setting that differs from the saved run's and cannot change."""
    old_flat, new_flat = flatten(saved), flatten(new)
    frozen = FROZEN + (FROZEN_ONECYCLE if new.schedule.name == "onecycle" else ())
    return [(key, old_flat[key], value) for key, value in new_flat.items()
            if key in old_flat and _is_frozen(key, frozen) and _differs(old_flat[key], value)]


def _is_frozen(key: str, frozen: tuple[str, ...]) -> bool:
    """``model.`` names a section (every key under it), ``epochs`` one key."""
    return key not in INIT_ONLY and any(key.startswith(f) if f.endswith(".") else key == f for f in frozen)


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) != list(new)
    return old != new


def check_resume(saved: dict[str, Any], new: TrainConfig, where: str) -> None:
    """Refuse a resume that changes a frozen setting.

    Raises:
        ConfigError: naming each setting, its old and new values, and the two ways out.
    """
    changes = frozen_changes(saved, new)
    if changes:
        listed = "; ".join(f"{k}: {old!r} -> {value!r}" for k, old, value in changes)
        raise ConfigError(
            f"{where} holds checkpoints of run {new.name!r}, and a resumed run cannot change {listed}. "
            f"Rerun without changing {'it' if len(changes) == 1 else 'them'} to resume, or start a new run "
            f"with another name (--set name={new.name}-2)"
        )


def changed_settings(saved: dict[str, Any], new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Settings that differ from the saved run's (and may): ``{key: (old, new)}``, for the log."""
    old_flat = flatten(saved)
    return {k: (old_flat[k], v) for k, v in flatten(new).items()
            if k in old_flat and _differs(old_flat[k], v) and not k.startswith(("mlflow.", "data.root"))}


def apply_hyperparameters(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
    fresh_groups: list[dict[str, Any]], fresh_base_lrs: list[float],
) -> None:
    """After loading a checkpoint's optimizer and schedule state, put back the hyperparameters the
    new config built (lr, weight decay, momentum/betas, 1cycle's peak), then set each group's
    lr to what the schedule gives at the restored step. Momentum buffers, Adam moments and the
    step count stay as restored."""
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        group.update({k: v for k, v in fresh.items() if k != "params"})
    scheduler.base_lrs = list(fresh_base_lrs)
    with warnings.catch_warnings():  # get_lr outside step() is what we want here: the closed form at last_epoch
        warnings.simplefilter("ignore")
        lrs = scheduler.get_lr()
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)


def optimizer_hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """A copy of each param group's settings (without its parameters)."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def has_checkpoints(run_dir: str | Path) -> bool:
    """Whether a local run folder holds checkpoints (``epoch_*``, from Ray Train or a local run)."""
    run_dir = Path(run_dir)
    return any(run_dir.glob("epoch_*")) or any((run_dir / "checkpoints").glob("epoch_[0-9]*[0-9]"))


def start_run_record(config: TrainConfig) -> Path | None:
    """Before a run starts: refuse frozen changes against the run it resumes, then write the run's
    ``config.yaml`` (never over checkpoints that disagree). Local run folders only; a run in
    s3:// or gs:// storage is checked by its workers against the checkpoint itself.

    Raises:
        ConfigError: see :func:`check_resume`.
    """
    from raypose.training.config import save_resolved_config

    if "://" in config.storage_path:
        return None
    run_dir = Path(config.run_dir)
    record = run_dir / RUN_RECORD
    if record.is_file() and has_checkpoints(run_dir):
        saved = yaml.safe_load(record.read_text()) or {}
        check_resume(saved, config, str(run_dir))
        for key, (old, new) in changed_settings(saved, config).items():
            log.warning("resuming %s with %s changed: %r -> %r", config.name, key, old, new)
    return save_resolved_config(config, record)
