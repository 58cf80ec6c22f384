"""One epoch of training, one pass of inference: pure torch, no Ray, no MLflow.

Both take ``model, loader, device`` and return plain values, as torchvision's reference
``engine.py`` does; the code that runs them on Ray Train or in one process lives elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import nn

from raypose.errors import TrainingError

log = logging.getLogger(__name__)

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_keypoint", "loss_objectness", "loss_rpn_box_reg")


def _to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def _check_finite(loss: torch.Tensor, parts: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    # .item() syncs the GPU; once per micro-batch is cheap next to a detection step.
    if not math.isfinite(loss.item()):
        detail = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
        raise TrainingError(
            f"non-finite loss at epoch {epoch}, step {step}: {detail}. Lower the learning rate, "
            "set grad_clip, or check the data with `raypose data check`."
        )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: Iterable,
    device: torch.device,
    *,
    epoch: int = 0,
    accumulate: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    log_every: int = 20,
    steps: int | None = None,
) -> dict[str, float]:
    """Train for one epoch of ``steps`` optimizer steps (default: all full accumulation groups).

    Each optimizer step sums the gradients of ``accumulate`` micro-batches, each loss divided
    by ``accumulate``, so one step equals one step on a batch ``accumulate`` times larger (the
    detection losses are means over the batch). Under DDP, gradients are all-reduced only on the
    last micro-batch of a step (``no_sync`` on the others). The scheduler steps once per
    optimizer step. With a ``scaler`` (GPU), the forward runs under float16 autocast.

    Returns:
        Means over micro-batches: ``train_loss`` and each loss component; ``lr`` at the end;
        ``images``, ``seconds``, ``images_per_s``, ``optimizer_steps``.

    Raises:
        TrainingError: a non-finite loss, with every loss component in the message.
    """
    model.train()
    if steps is None:
        steps = len(loader) // accumulate  # a trailing partial group is dropped
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    micro, images_seen, start = 0, 0, time.perf_counter()
    use_amp = scaler is not None and scaler.is_enabled()
    batches = iter(loader)
    optimizer.zero_grad(set_to_none=True)
    for step in range(steps):
        for k in range(accumulate):
            images, targets = _to_device(*next(batches), device)
            sync = k == accumulate - 1
            no_sync = getattr(model, "no_sync", None)
            ctx = contextlib.nullcontext() if sync or no_sync is None else no_sync()
            with ctx:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    parts = model(images, targets)
                    loss = sum(parts.values())
                _check_finite(loss, parts, epoch, step)
                scaled = loss / accumulate
                (scaler.scale(scaled) if use_amp else scaled).backward()
            for name, value in parts.items():
                sums[name] += value.detach().float()
            sums["train_loss"] += loss.detach().float()
            micro += 1
            images_seen += len(images)
        _optimizer_step(model, optimizer, scaler if use_amp else None, grad_clip)
        scheduler.step()
        if log_every and (step + 1) % log_every == 0:
            log.info(
                "epoch %d step %d/%d loss %.4f lr %.3g",
                epoch, step + 1, steps, sums["train_loss"].item() / micro, optimizer.param_groups[0]["lr"],
            )
    seconds = time.perf_counter() - start
    metrics = {k: v.item() / max(micro, 1) for k, v in sums.items()}
    metrics.update(
        lr=optimizer.param_groups[0]["lr"],
        images=images_seen,
        seconds=seconds,
        images_per_s=images_seen / seconds if seconds > 0 else 0.0,
        optimizer_steps=steps,
    )
    return metrics


def _optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, grad_clip: float | None
) -> None:
    if scaler is not None:
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], grad_clip)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.inference_mode()
def predict_loader(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[dict], list[int]]:
    """Eval-mode predictions for every image of ``loader`` (batches of ``(images, targets)``).

    Returns:
        ``(outputs, image_ids)``: per image a dict of CPU tensors (boxes (N, 4) xyxy, scores (N,),
        keypoints (N, K, 3), keypoints_scores (N, K)) in the loader's image pixels, and its id.
    """
    was_training = model.training
    model.eval()
    outputs, image_ids = [], []
    for i, (images, targets) in enumerate(loader):
        images = [im.to(device, non_blocking=True) for im in images]
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            batch_out = model(images)
        for out, target in zip(batch_out, targets):
            outputs.append({k: v.float().cpu() for k, v in out.items() if k != "labels"})
            image_ids.append(int(target["image_id"]))
        if on_batch is not None:
            on_batch(i)
    model.train(was_training)
    return outputs, image_ids


@torch.no_grad()
def validation_loss(model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
    """Mean training losses on a loader without updating anything (for overfitting plots).

    torchvision detection models return losses only in train mode; with frozen batch norm
    (the default) train mode changes no statistics.
    """
    was_training = model.training
    model.train()
    sums: dict[str, float] = defaultdict(float)
    n = 0
    for images, targets in loader:
        images, targets = _to_device(images, targets, device)
        parts = model(images, targets)
        for k, v in parts.items():
            sums[k] += v.item()
        sums["loss"] += sum(parts.values()).item()
        n += 1
    model.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}
