"""One epoch of training, one pass of inference: pure torch, no Ray, no MLflow.

Both take ``model, loader, device`` and return plain values, as torchvision's reference
``engine.py`` does; the code that runs them on Ray Train or in one process lives elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from raypose.errors import TrainingError
from raypose.inference_options import InferenceOptions, refined_detections

log = logging.getLogger(__name__)

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_keypoint", "loss_objectness", "loss_rpn_box_reg")


def _to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device):
    # non_blocking only overlaps with compute when the batch is in pinned memory (DataLoader
    # pin_memory=True); from pageable memory it is an ordinary copy.
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def place_model(
    model: nn.Module, device: torch.device, *, channels_last: bool = False, compile_backbone: bool = False
) -> nn.Module:
    """Move ``model`` to ``device``, optionally in channels-last layout and with a compiled backbone.

    Call it before building the optimizer: the layout change replaces parameter storage, and an
    optimizer's state (momentum) should be created in the final layout.

    Args:
        channels_last: store the backbone's conv weights as NHWC; cuDNN then runs its
            convolutions (and the float16/bfloat16 tensor-core kernels) in NHWC. Only the backbone:
            torchvision's keypoint loss ``view``s the head's logits, which fails on NHWC, and
            ``roi_align`` hands the heads contiguous tensors anyway. Whether it pays off on
            KeypointRCNN is for ``benchmarks/bench_train.py`` to say.
        compile_backbone: ``torch.compile`` the ResNet + FPN in place (``dynamic=True``: detection
            batches change size). The RPN and ROI heads stay eager: their data-dependent shapes
            break graphs. In place, so state-dict keys (checkpoints) do not change. Untested on a
            GPU so far; opt in only after measuring.

    Returns:
        The same module, moved.
    """
    model = model.to(device)
    backbone = getattr(model, "backbone", None)
    if (channels_last or compile_backbone) and backbone is None:
        raise ValueError(f"channels_last/compile_backbone: {type(model).__name__} has no .backbone")
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    if compile_backbone:
        backbone.compile(dynamic=True)
    return model


def _autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype``, or nothing when it is None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


class _NonFiniteWatch:
    """Finds non-finite losses without a host sync per step.

    Each micro-batch's loss stays on the device until :meth:`check`, which syncs once for all
    of them and raises for the first non-finite one, naming its step and loss components.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]] = []

    def add(self, step: int, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        self.pending.append((step, loss.detach(), {k: v.detach() for k, v in parts.items()}))

    def check(self, epoch: int) -> None:
        """Under DDP every rank checks at the same micro-batch and the ranks agree (one all-reduced
        flag), so all of them raise together: none is left waiting in a collective for a rank that
        stopped, and the failure reaches the driver as a non-finite loss from every rank.

        Raises:
        TrainingError: a pending loss is NaN or infinite (on this rank or another)."""
        if not self.pending:
            return
        finite = torch.stack([torch.isfinite(loss) for _, loss, _ in self.pending])
        bad_here = ~finite.all()
        bad = bad_here
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            bad = bad_here.to(torch.int32).reshape(1)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bool(bad):  # bool() syncs the GPU: once per check, not per step
            if not bool(bad_here):
                raise TrainingError(
                    f"non-finite loss at epoch {epoch} on another rank (this is rank {dist.get_rank()}): "
                    "lower the learning rate, set grad_clip, or check the data with `raypose data check`."
                )
            step, _, parts = self.pending[int((~finite).nonzero()[0, 0])]
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
            raise TrainingError(
                f"non-finite loss at epoch {epoch}, step {step}: {detail}. Lower the learning rate, "
                "set grad_clip, or check the data with `raypose data check`."
            )
        self.pending.clear()


@dataclass
class EpochProgress:
    """Where an epoch stands after ``step`` optimizer steps: what a mid-epoch checkpoint keeps.

    ``sums`` are the loss sums over ``micro`` micro-batches so far, ``seconds`` the time spent,
    ``rng`` this process's RNG states (:func:`capture_rng`).
    """

    step: int
    sums: dict[str, float]
    micro: int
    images: int
    seconds: float
    rng: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> EpochProgress:
        return cls(**value)


def capture_rng() -> dict[str, Any]:
    """torch's (CPU and, where used, CUDA), numpy's and Python's RNG states, in types a
    ``weights_only`` checkpoint load accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                       gauss],
             "python": list(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states :func:`capture_rng` took."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    amp_dtype: torch.dtype | None = None,
    cudnn_benchmark: bool = True,
    resume_from: EpochProgress | None = None,
    on_step: Callable[[int, Callable[[], EpochProgress]], None] | None = None,
) -> dict[str, float]:
    """Train for one epoch of ``steps`` optimizer steps (default: all full accumulation groups).

    Mid-epoch checkpoints: after each optimizer step, ``on_step(done, progress)`` is called with
    the steps done so far and a function giving the epoch's :class:`EpochProgress` (for a
    checkpoint). ``resume_from`` continues an epoch from such a progress: the loader's first
    ``progress.step * accumulate`` batches are loaded and dropped (so a loader reseeded for this
    epoch draws the same augmentations as the interrupted one did), the RNG states are put back
    and the sums go on, so the epoch trains exactly as an uninterrupted one.

    Each optimizer step sums the gradients of ``accumulate`` micro-batches, each loss divided
    by ``accumulate``, so one step equals one step on a batch ``accumulate`` times larger (the
    detection losses are means over the batch). Under DDP, gradients are all-reduced only on the
    last micro-batch of a step (``no_sync`` on the others). The scheduler steps once per
    optimizer step.

    Mixed precision: with an enabled ``scaler`` and no ``amp_dtype``, the forward runs under
    float16 autocast (the default on GPU). ``amp_dtype=torch.bfloat16`` runs it under bfloat16
    autocast, which needs no scaler (bfloat16 has float32's exponent range); it also works on
    CPU. ``amp_dtype=torch.float16`` requires an enabled scaler.

    Host syncs: on CUDA the loop syncs only every ``log_every`` optimizer steps and at the end
    (non-finite check, log line), so the CPU can queue work ahead of the GPU; a non-finite loss
    is then reported up to ``log_every`` steps late, naming the step where it happened. On CPU,
    where a sync costs nothing, it checks every micro-batch. ``cudnn_benchmark`` sets
    ``torch.backends.cudnn.benchmark`` on CUDA (autotuned convolutions, once per input shape).

    Returns:
        Means over micro-batches: ``train_loss`` and each loss component; ``lr`` at the end;
        ``images``, ``seconds`` (GPU work included), ``images_per_s``, ``optimizer_steps``; on
        CUDA ``gpu_memory_peak_gib``, the process's peak allocated GPU memory so far.

    Raises:
        TrainingError: a non-finite loss, with every loss component in the message.
        ValueError: ``amp_dtype=torch.float16`` without an enabled scaler.
    """
    model.train()
    if steps is None:
        steps = len(loader) // accumulate  # a trailing partial group is dropped
    use_scaler = scaler is not None and scaler.is_enabled()
    if amp_dtype is None and use_scaler:
        amp_dtype = torch.float16
    if amp_dtype == torch.float16 and not use_scaler:
        raise ValueError("float16 autocast needs an enabled GradScaler (gradients underflow); or use bfloat16")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
    check_every = log_every if device.type == "cuda" else 1  # 0: at the end of the epoch only
    watch = _NonFiniteWatch()
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    micro, images_seen, start = 0, 0, time.perf_counter()
    batches = iter(loader)
    first_step = 0
    if resume_from is not None:
        for _ in range(resume_from.step * accumulate):  # the batches the interrupted epoch trained on
            next(batches)
        restore_rng(resume_from.rng)
        first_step, micro, images_seen = resume_from.step, resume_from.micro, resume_from.images
        for name, value in resume_from.sums.items():
            sums[name] = torch.tensor(value, device=device)
        start -= resume_from.seconds

    def progress(done: int) -> EpochProgress:
        return EpochProgress(step=done, sums={k: float(v) for k, v in sums.items()}, micro=micro,
                             images=images_seen, seconds=time.perf_counter() - start, rng=capture_rng())

    optimizer.zero_grad(set_to_none=True)
    for step in range(first_step, steps):
        for k in range(accumulate):
            images, targets = _to_device(*next(batches), device)
            sync = k == accumulate - 1
            no_sync = getattr(model, "no_sync", None)
            ctx = contextlib.nullcontext() if sync or no_sync is None else no_sync()
            with ctx:
                with _autocast(device.type, amp_dtype):
                    parts = model(images, targets)
                    loss = sum(parts.values())
                watch.add(step, loss, parts)
                if device.type != "cuda":
                    watch.check(epoch)
                scaled = loss / accumulate
                (scaler.scale(scaled) if use_scaler else scaled).backward()
            for name, value in parts.items():
                sums[name] += value.detach().float()
            sums["train_loss"] += loss.detach().float()
            micro += 1
            images_seen += len(images)
        _optimizer_step(model, optimizer, scaler if use_scaler else None, grad_clip)
        scheduler.step()
        if check_every and (step + 1) % check_every == 0:
            watch.check(epoch)
        if log_every and (step + 1) % log_every == 0:
            log.info(
                "epoch %d step %d/%d loss %.4f lr %.3g",  # .item() syncs the GPU, once per log line
                epoch, step + 1, steps, sums["train_loss"].item() / micro, optimizer.param_groups[0]["lr"],
            )
        if on_step is not None and step + 1 < steps:
            on_step(step + 1, lambda done=step + 1: progress(done))
    watch.check(epoch)
    metrics = {k: v.item() / max(micro, 1) for k, v in sums.items()}  # syncs: the time below includes the GPU work
    seconds = time.perf_counter() - start
    if device.type == "cuda":  # allocator statistics: no sync
        metrics["gpu_memory_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
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
    # With a fused optimizer (CUDA default, see optim.build_optimizer) GradScaler hands the inf
    # check to the kernel; with others scaler.step syncs the GPU once per step.
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


def detect(
    model: nn.Module,
    images: list[torch.Tensor],
    autocast_dtype: torch.dtype | None = None,
    options: InferenceOptions | None = None,
) -> list[dict]:
    """Eval-mode detections of a torchvision detection model, decoded in float32.

    With ``autocast_dtype`` only the backbone (ResNet + FPN, most of the compute) runs under
    autocast on the images' device; its features are cast back to float32 before the RPN and
    ROI heads. Under whole-model float16 autocast torchvision decodes boxes in float16, which
    rounds coordinates to 1 px above 1024 px (2 px above 2048); here they are decoded, like the
    keypoints, in float32. Models that are not a ``GeneralizedRCNN`` run whole in float32.

    Args:
        images: (3, H, W) float tensors in [0, 1], on the model's device.
        options: inference options (:mod:`raypose.inference_options`); None or all off: stock.

    Returns:
        Per image: ``boxes`` (N, 4) xyxy, ``labels`` (N,), ``scores`` (N,), ``keypoints``
        (N, K, 3) ``(x, y, 1)``, ``keypoints_scores`` (N, K), in input-image pixels, float32.
    """
    if not isinstance(model, GeneralizedRCNN):
        return model(images)
    original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    batch, _ = model.transform(images)

    def backbone(tensors: torch.Tensor) -> OrderedDict:
        with _autocast(tensors.device.type, autocast_dtype):
            features = model.backbone(tensors)
        return OrderedDict((name, f.float()) for name, f in features.items())

    features = backbone(batch.tensors)
    proposals, _ = model.rpn(batch, features)
    if options is not None and not options.stock:
        return refined_detections(model, images, batch, features, proposals, options, backbone)
    detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
    return model.transform.postprocess(detections, batch.image_sizes, original_sizes)


@torch.inference_mode()
def predict_loader(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp: bool = False,
    on_batch: Callable[[int], None] | None = None,
    amp_dtype: torch.dtype = torch.float16,
    options: InferenceOptions | None = None,
) -> tuple[list[dict], list[int]]:
    """Eval-mode predictions for every image of ``loader`` (batches of ``(images, targets)``).

    With ``amp`` on CUDA the backbone runs under ``amp_dtype`` autocast and everything after it,
    box and keypoint decoding included, in float32 (see :func:`detect`); on CPU ``amp`` does
    nothing.

    Returns:
        ``(outputs, image_ids)``: per image a dict of float32 CPU tensors (boxes (N, 4) xyxy,
        scores (N,), keypoints (N, K, 3), keypoints_scores (N, K)) in the loader's image pixels,
        and its id.
    """
    was_training = model.training
    model.eval()
    autocast_dtype = amp_dtype if amp and device.type == "cuda" else None
    outputs, image_ids = [], []
    for i, (images, targets) in enumerate(loader):
        images = [im.to(device, non_blocking=True) for im in images]
        batch_out = detect(model, images, autocast_dtype, options)
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

    torchvision detection models return losses only in train mode; the batch-norm layers are put
    in eval mode meanwhile, so (with ``norm: batch``) they normalise with their running
    statistics and do not update them from validation images. Frozen batch norm has none.
    """
    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
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
