"""raypose checkpoints: one ``.pth`` with the model, its config and the keypoint schema.

A checkpoint is a dict of tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``::

    {"format": "raypose/1", "model": state_dict, "model_config": {...},
     "keypoint_names": [...], "epoch": int, "config": {...resolved run config...},
     "optimizer": ..., "scheduler": ..., "scaler": ..., "metrics": {...}}

Only ``format``, ``model``, ``model_config`` and ``keypoint_names`` are required; training adds the rest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torchvision.models.detection import KeypointRCNN

from raypose.errors import WeightsError
from raypose.io import atomic_path, reporting_write_failures
from raypose.model import ModelConfig, build_model, torch_load

FORMAT = "raypose/1"
# The file name of a checkpoint inside a training checkpoint folder (local or in Ray storage).
CHECKPOINT_FILE = "checkpoint.pth"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, model_config: ModelConfig, **extra: Any) -> Path:
    """Write a checkpoint atomically; ``extra`` adds training state (epoch, optimizer, ...).

    Raises:
        OutputError: the disk is full or read-only; nothing of the new file is left, an older
            checkpoint at ``path`` is kept, and the message names the folder and the bytes needed.
    """
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {
        "format": FORMAT,
        "model": state,
        "model_config": model_config.model_dump(),
        "keypoint_names": list(model_config.schema.names),
        **extra,
    }
    fix = "free space there or write it to another disk (training writes each checkpoint under TMPDIR first)"
    with atomic_path(path) as tmp, reporting_write_failures(Path(path).parent, _tensor_bytes(payload), fix):
        torch.save(payload, tmp)
    return Path(path)


def _tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists, tuples): about a checkpoint's size."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a raypose checkpoint (``weights_only=True``).

    Raises:
        WeightsError: missing file, unreadable file, or not a raypose checkpoint.
    """
    path = Path(path)
    ckpt = torch_load(path, what="checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not a raypose checkpoint (no format={FORMAT!r}); for plain torchvision weights "
            "set `model.weights` to this path in a training config instead"
        )
    return ckpt


def load_model_from_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[KeypointRCNN, ModelConfig]:
    """Rebuild the model a checkpoint was saved from, in eval mode, on ``device``."""
    ckpt = load_checkpoint(path)
    try:
        config = ModelConfig(**{**ckpt["model_config"], "weights": None, "backbone_weights": None})
    except ValidationError as e:
        raise WeightsError(f"{path}: model_config does not validate: {e}") from None
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), config


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
