"""Batched inference with a KeypointRCNN: images in, per-image predictions out (pure torch)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from raypose.errors import ConfigError
from raypose.images import read_rgb_tensor
from raypose.inference_options import InferenceOptions

log = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """A torch device from ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ConfigError: an unknown device, CUDA without a CUDA device, or a GPU index out of range.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option} {name!r}: not a device; valid: {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{option} {name!r}: raypose runs on {DEVICE_CHOICES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} {name!r}: CUDA is not available on this machine; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{option} {name!r}: this machine has {torch.cuda.device_count()} CUDA devices (cuda:0 ...)"
        )
    return device


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as an 8-bit RGB float tensor (3, H, W) in [0, 1] (:func:`raypose.images.read_rgb`).

    Raises:
        InputError: the file is missing, not an image, or has pixels without an 8-bit RGB form.
    """
    return read_rgb_tensor(path)


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items (the last one shorter)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: Iterable[torch.Tensor],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    options: InferenceOptions | None = None,
) -> list[dict[str, np.ndarray]]:
    """Run the model in eval mode on images (3, H, W) in [0, 1], with inference ``options``
    (:mod:`raypose.inference_options`; None: stock KeypointRCNN).

    Returns:
        One dict per image with numpy arrays in original-image pixels: ``boxes`` (N, 4) xyxy,
        ``scores`` (N,), ``keypoints`` (N, K, 3) as (x, y, 1), ``keypoints_scores`` (N, K).
    """
    from raypose.training.loop import detect

    model.eval()
    results: list[dict[str, np.ndarray]] = []
    for batch in batched(images, batch_size):
        outputs = detect(model, [im.to(device, non_blocking=True) for im in batch], options=options)
        # .cpu() syncs the GPU once per batch.
        for out in outputs:
            results.append({k: out[k].float().cpu().numpy() for k in ("boxes", "scores", "keypoints", "keypoints_scores")})
    return results


def predict_files(
    model: torch.nn.Module,
    paths: Sequence[str | os.PathLike],
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    options: InferenceOptions | None = None,
) -> list[dict[str, np.ndarray]]:
    """:func:`predict_images` over image files, logging progress."""
    paths = [Path(p) for p in paths]
    results: list[dict[str, np.ndarray]] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        results.extend(predict_images(model, [load_image(p) for p in chunk], device, batch_size, options))
        log.info("predicted %d/%d images", min(start + batch_size, len(paths)), len(paths))
    return results
