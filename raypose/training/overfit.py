"""The overfitting sanity check from the design notes.

Train on a handful of training images without augmentation for many epochs: the training loss
must fall and the OKS-mAP *on those same images* must rise towards 1, while the validation loss
eventually rises. A model that cannot do this has a bug in its data, targets or configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from raypose.data.dataset import KeypointDataset, collate_fn
from raypose.evaluation.cocoeval import evaluate_keypoints, outputs_to_coco_results
from raypose.io import write_json_atomic
from raypose.model import build_model
from raypose.training.config import TrainConfig
from raypose.training.loop import predict_loader, train_one_epoch, validation_loss
from raypose.training.optim import build_optimizer, build_scheduler, effective_lr, effective_max_lr
from raypose.training.plots import plot_history

log = logging.getLogger(__name__)
OVERFIT_FILES = ("overfit.json", "overfit.png")  # what run_overfit writes into its folder


@dataclass
class OverfitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def first(self) -> dict[str, float]:
        return self.history[0]

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1]


def _train_oks(model, loader, ann_path: str, image_ids: list[int], device) -> dict[str, float]:
    outputs, ids = predict_loader(model, loader, device)
    stats = evaluate_keypoints(ann_path, outputs_to_coco_results(outputs, ids), image_ids=image_ids, per_keypoint=False)
    return {"train_oks_map": stats.stats["AP"], "train_oks_ap50": stats.stats["AP50"]}


def run_overfit(
    config: TrainConfig, num_images: int, epochs: int, out_dir: str | Path, eval_every: int = 1, val_images: int = 8
) -> OverfitResult:
    """Overfit ``num_images`` training images for ``epochs`` epochs on one device.

    Every ``eval_every`` epochs (and at epoch 0, before training): OKS-mAP on the training
    images themselves and the loss on ``val_images`` validation images. Writes
    ``overfit.json`` and ``overfit.png`` (train vs. validation loss, training OKS) to ``out_dir``.
    """
    device = torch.device("cuda" if torch.cuda.is_available() and config.use_gpu is not False else "cpu")
    torch.manual_seed(config.seed)
    data = config.data
    train = KeypointDataset(data.path(data.train_ann), data.path(data.train_images), train=True)
    train = Subset(train, range(min(num_images, len(train))))
    image_ids = [train.dataset.image_id(i) for i in train.indices]
    val = KeypointDataset(data.path(data.val_ann), data.path(data.val_images), train=True)
    val = Subset(val, range(min(val_images, len(val))))
    batch = min(config.batch_size, len(train))
    train_loader = DataLoader(train, batch_size=batch, shuffle=True, collate_fn=collate_fn, drop_last=True)
    eval_loader = DataLoader(train, batch_size=config.eval_batch_size, collate_fn=collate_fn)
    val_loader = DataLoader(val, batch_size=config.eval_batch_size, collate_fn=collate_fn)

    model = build_model(config.model).to(device)
    optimizer = build_optimizer(model, config.optim, lr=effective_lr(config, 1))
    scheduler = build_scheduler(optimizer, config.schedule, len(train_loader), epochs, max_lr=effective_max_lr(config, 1))
    ann_path = str(data.path(data.train_ann))
    result = OverfitResult(image_ids=image_ids)
    for epoch in range(epochs + 1):
        metrics: dict[str, float] = {"epoch": epoch}
        if epoch > 0:
            metrics.update(train_one_epoch(model, optimizer, scheduler, train_loader, device, epoch=epoch, log_every=0))
        else:
            metrics["train_loss"] = validation_loss(model, train_loader, device)["loss"]
        if epoch % eval_every == 0 or epoch == epochs:
            metrics.update(_train_oks(model, eval_loader, ann_path, image_ids, device))
            metrics["val_loss"] = validation_loss(model, val_loader, device)["loss"]
            log.info(
                "epoch %d: train loss %.3f, val loss %.3f, train OKS-mAP %.3f",
                epoch, metrics["train_loss"], metrics["val_loss"], metrics["train_oks_map"],
            )
        result.history.append(metrics)
    out = Path(out_dir)
    result.files["json"] = write_json_atomic(out / "overfit.json", {"image_ids": image_ids, "history": result.history}, indent=1)
    result.files["plot"] = _plot(result.history, out / "overfit.png")
    return result


def _plot(history: list[dict], path: Path) -> Path:
    curves = [
        {"epoch": m["epoch"], "train_loss": m["train_loss"], "oks_map": m.get("train_oks_map"), "oks_ap50": m.get("train_oks_ap50")}
        for m in history
    ]
    val = [m for m in history if "val_loss" in m]
    val_curve = ([m["epoch"] for m in val], [m["val_loss"] for m in val])
    return plot_history(curves, path, extra_losses={"val_loss": val_curve}, metric_title="OKS on the training images")
