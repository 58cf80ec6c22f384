"""What may change when a run resumes from its checkpoint, and what may not.

A rerun with the same ``name`` resumes. Settings that shape the model, the optimizer's state
or the length of the schedule cannot change then (:func:`frozen_changes`); the run is refused
before anything starts, naming the setting, its old and new values and the choices. Settings
that can change (the learning rate, epochs under a LambdaLR schedule, evaluation and logging)
take effect: :func:`apply_hyperparameters` puts the new config's values into the restored
optimizer and schedule. Pure torch: no Ray, no MLflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from raypose.errors import ConfigError
from raypose.training.config import TrainConfig, flatten
from raypose.yaml_io import load_yaml_mapping

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
        saved = load_yaml_mapping(record, "run record")
        check_resume(saved, config, str(run_dir))
        for key, (old, new) in changed_settings(saved, config).items():
            log.warning("resuming %s with %s changed: %r -> %r", config.name, key, old, new)
    return save_resolved_config(config, record)


@contextlib.contextmanager
def run_lock(config: TrainConfig) -> Iterator[Path | None]:
    """Hold ``STORAGE/NAME.lock`` while the block runs: one run of a name at a time.

    The lock is created atomically (``O_CREAT | O_EXCL``) and holds ``{host, pid, started}``; it
    is removed when the block ends, however it ends. A lock whose process is gone (same host,
    pid not alive: a run killed with SIGKILL, or a lost power) is taken over with a warning. Run
    folders in s3:// or gs:// storage are not locked (yields None).

    Raises:
        ConfigError: another live run holds the name (the message names its host and pid).
    """
    if "://" in config.storage_path:
        yield None
        return
    path = Path(config.storage_path) / f"{config.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat()}
    if not _create_lock(path, mine):
        holder = _read_lock(path)
        if not _is_stale(holder, mine["host"]):
            raise ConfigError(_lock_held_message(path, holder, config.name, mine["host"]))
        log.warning("taking over the stale lock %s: process %s on %s is gone", path, holder["pid"], holder["host"])
        path.unlink(missing_ok=True)
        if not _create_lock(path, mine):  # another run took it over first
            raise ConfigError(_lock_held_message(path, _read_lock(path), config.name, mine["host"]))
    try:
        yield path
    finally:
        holder = _read_lock(path)
        if (holder.get("host"), holder.get("pid")) == (mine["host"], mine["pid"]):
            path.unlink(missing_ok=True)


def _create_lock(path: Path, content: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(content, f)
    return True


def _read_lock(path: Path) -> dict[str, Any]:
    """The lock's content; ``{}`` when it is gone or unreadable (being written, say)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _is_stale(holder: dict[str, Any], host: str) -> bool:
    """Whether the holder is a process of this host that is no longer alive."""
    if holder.get("host") != host or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _lock_held_message(path: Path, holder: dict[str, Any], name: str, host: str) -> str:
    if not holder:
        return (f"run {name!r} is in use: {path} exists but cannot be read yet (a run is starting?). Wait for "
                f"that run, or use another name (--set name={name}-2); if no run of that name is going on, "
                f"remove it: rm {path}")
    who = f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started', '?')}"
    message = (f"run {name!r} is in use: {path} says {who} is training it. Wait for that run to finish, or use "
               f"another name (--set name={name}-2)")
    if holder.get("host") != host:
        message += (f"; this machine ({host}) cannot tell whether it is still running: if {holder.get('host')} "
                    f"is gone and no run of that name is going on, remove the lock: rm {path}")
    return message


def training_data(annotations: str | Path, images: int) -> dict[str, Any]:
    """What a run trains on, as its checkpoints record it: the training annotation file (resolved
    path), its number of images and the sha256 of its content. Moved data is the same data; a
    changed file is not."""
    path = Path(annotations).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "images": int(images), "sha256": digest.hexdigest()}


def check_training_data(saved: dict[str, Any] | None, current: dict[str, Any], name: str) -> None:
    """Refuse to resume run ``name`` on other training data than its checkpoints were trained on
    (the steps per epoch and the schedule's length come from it). Checkpoints written before
    raypose recorded the data (``saved`` None) are not checked.

    Raises:
        ConfigError: naming the old and new file, images and digest, and the two ways out.
    """
    if not saved or saved.get("sha256") == current["sha256"]:
        return

    def described(data: dict[str, Any]) -> str:
        return f"{data.get('path')} ({data.get('images')} images, sha256 {str(data.get('sha256'))[:16]})"

    raise ConfigError(
        f"run {name!r} was trained on {described(saved)}; this run's training data is {described(current)}. "
        f"A resumed run cannot change its training set (its steps per epoch and schedule come from it): "
        f"point data.root / data.train_ann back at the data it was trained on to resume, or start a new run "
        f"with another name (--set name={name}-2)"
    )
