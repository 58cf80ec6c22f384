"""One training run, top to bottom, the same on a Ray Train worker and in a local process.

:func:`run_training` takes a validated :class:`TrainConfig` and a :class:`Session`, the small
interface to what differs between the two: rank, device, where checkpoints come from and go.
``raypose.training.ray_train`` supplies the Ray session; :class:`LocalSession` runs without Ray.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from raypose.checkpoint import load_checkpoint, save_checkpoint
from raypose.data.dataset import KeypointDataset, collate_fn
from raypose.data.transforms import build_train_transforms
from raypose.errors import ConfigError, InputError
from raypose.model import build_model
from raypose.training.activations import ActivationStats
from raypose.training.config import TrainConfig, flatten
from raypose.training.loop import predict_loader, train_one_epoch
from raypose.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pth"
# Per-epoch metrics every run reports (MLflow keys, Tune's metric is oks_map).
EVAL_KEYS = {"oks_map": "AP", "oks_ap50": "AP50", "oks_ap75": "AP75", "oks_ar": "AR"}


class Session(Protocol):
    """What a training run needs from where it runs."""

    world_rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The payload of the newest checkpoint of this run, or None for a fresh run."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """Called by every rank once per epoch; rank 0 passes a folder holding the checkpoint."""


@dataclass
class LocalSession:
    """One process, no Ray: checkpoints in ``run_dir/checkpoints/epoch_NNNN/``, metrics in
    ``run_dir/metrics.jsonl``. Keeps the newest checkpoint and the best by ``oks_map``."""

    run_dir: Path
    keep: int = 2
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    world_rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)

    def _checkpoint_dirs(self) -> list[Path]:
        found = [p for p in (self.run_dir / "checkpoints").glob("epoch_*") if (p / CHECKPOINT_FILE).is_file()]
        return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.name) or 0))

    def latest_checkpoint(self) -> dict[str, Any] | None:
        dirs = self._checkpoint_dirs()
        return load_checkpoint(dirs[-1] / CHECKPOINT_FILE) if dirs else None

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if checkpoint_dir is None:
            return
        dest = self.run_dir / "checkpoints" / f"epoch_{int(metrics['epoch']):04d}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(checkpoint_dir, dest.with_name(dest.name + ".tmp"), dirs_exist_ok=True)
        os.replace(dest.with_name(dest.name + ".tmp"), dest)
        self._prune()

    def _prune(self) -> None:
        dirs = self._checkpoint_dirs()
        scores = {}
        for line in (self.run_dir / "metrics.jsonl").read_text().splitlines():
            m = json.loads(line)
            scores[int(m["epoch"])] = m.get("oks_map", float("-inf"))
        ranked = sorted(dirs[:-1], key=lambda p: scores.get(int(p.name.split("_")[1]), float("-inf")), reverse=True)
        for stale in ranked[max(self.keep - 1, 0) :]:
            shutil.rmtree(stale)


def ensure_data(config: TrainConfig) -> None:
    """Make sure the data the config names is there; generate the synthetic set when missing.

    Raises:
        InputError: COCO files are missing; the message says how to download and prepare them.
    """
    data = config.data
    needed = [data.path(data.train_ann), data.path(data.val_ann)]
    if all(p.is_file() for p in needed):
        return
    if data.kind == "synthetic":
        from raypose.data.synth import generate_synthetic_dataset, prepare_dataset

        log.info("generating the synthetic data set in %s", data.root)
        generate_synthetic_dataset(data.root, data.synth.train, data.synth.val, seed=data.synth.seed)
        prepare_dataset(data.root)
        return
    missing = ", ".join(str(p) for p in needed if not p.is_file())
    raise InputError(
        f"data not found: {missing}. Download COCO 2017 (train2017, val2017, "
        "annotations_trainval2017) and the CMU foot annotations (person_keypoints_{train,val}2017_foot_v1.json) "
        f"into {data.root} as described in the README, then run `raypose data prepare --root {data.root}`"
    )


def build_datasets(config: TrainConfig) -> tuple[KeypointDataset, KeypointDataset]:
    """The training and validation datasets the config names.

    Raises:
        ConfigError: the files hold another keypoint count than ``model.num_keypoints``.
    """
    data, schema = config.data, config.model.schema
    transforms = build_train_transforms(schema, data.hflip_prob, data.scale_range, data.photometric)
    train = KeypointDataset(data.path(data.train_ann), data.path(data.train_images), train=True, transforms=transforms)
    val = KeypointDataset(data.path(data.val_ann), data.path(data.val_images), train=False)
    for name, ds in (("train_ann", train), ("val_ann", val)):
        if ds.num_keypoints != schema.num_keypoints:
            raise ConfigError(
                f"data.{name} ({ds.annotations.source}) has {ds.num_keypoints} keypoints but "
                f"model.num_keypoints is {schema.num_keypoints}: set model.num_keypoints={ds.num_keypoints} "
                "or point data at the merged 23-keypoint files (`raypose data prepare`)"
            )
    if data.train_limit:
        train = Subset(train, range(min(data.train_limit, len(train))))
    if data.val_limit:
        val = Subset(val, range(min(data.val_limit, len(val))))
    return train, val


def _image_ids(ds) -> list[int]:
    if isinstance(ds, Subset):
        return [ds.dataset.image_id(i) for i in ds.indices]
    return [ds.image_id(i) for i in range(len(ds))]


def _val_source(ds) -> str:
    base = ds.dataset if isinstance(ds, Subset) else ds
    return base.annotations.source


def make_train_loader(train, config: TrainConfig, session: Session) -> DataLoader:
    """Shuffled training batches; each epoch reseeds the sampler (see ``_run_epoch``)."""
    if session.world_size > 1:
        sampler = DistributedSampler(train, session.world_size, session.world_rank, shuffle=True, seed=config.seed)
    else:
        sampler = RandomSampler(train, generator=torch.Generator().manual_seed(config.seed))
    return DataLoader(
        train,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.data.loader_workers,
        drop_last=True,
        pin_memory=session.device.type == "cuda",
        persistent_workers=False,
    )


def replica_divergence(model: torch.nn.Module) -> float:
    """Largest difference between the ranks' sums of their parameters (0 when DDP keeps them in sync).

    A cheap health check once per epoch: one scalar per rank is gathered.
    """
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    values = torch.cat(gathered)
    return float(values.max() - values.min())


def evaluate_distributed(model, val, config: TrainConfig, session: Session) -> dict[str, float]:
    """OKS metrics on the validation set: each rank predicts a shard, rank 0 evaluates.

    Returns the :data:`EVAL_KEYS` metrics on rank 0 and ``{}`` on the other ranks.
    """
    from raypose.evaluation.cocoeval import evaluate_keypoints, outputs_to_coco_results

    shard = Subset(val, range(session.world_rank, len(val), session.world_size))
    loader = DataLoader(shard, batch_size=config.eval_batch_size, collate_fn=collate_fn, num_workers=0)
    net = model.module if isinstance(model, DistributedDataParallel) else model
    outputs, ids = predict_loader(net, loader, session.device, amp=config.amp)
    results = outputs_to_coco_results(outputs, ids)
    if session.world_size > 1:
        gathered: list = [None] * session.world_size
        dist.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    if session.world_rank != 0:
        return {}
    evaluation = evaluate_keypoints(_val_source(val), results, image_ids=_image_ids(val), per_keypoint=False)
    return {key: evaluation.stats[stat] for key, stat in EVAL_KEYS.items()}


def run_training(config: TrainConfig, session: Session) -> dict[str, Any]:
    """Train ``config.epochs`` epochs (resuming from the session's latest checkpoint).

    Returns:
        ``{"history": [per-epoch metrics], "best": best metrics by oks_map}`` (rank 0; the other
        ranks' history lacks evaluation metrics).
    """
    torch.manual_seed(config.seed + session.world_rank)
    device, rank = session.device, session.world_rank
    train, val = build_datasets(config)
    model = build_model(config.model).to(device)
    act_stats = ActivationStats(model, config.activation_stats) if config.activation_stats else None
    if session.world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loader = make_train_loader(train, config, session)
    steps_per_epoch = len(loader) // config.accumulate
    if steps_per_epoch == 0:
        raise ConfigError(
            f"one optimizer step needs batch_size x accumulate x workers = "
            f"{config.batch_size * config.accumulate * session.world_size} training images, "
            f"the data has {len(train)}: lower batch_size or accumulate"
        )
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.schedule, steps_per_epoch, config.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    start_epoch, history, mlflow_run_id = _restore(session, model, optimizer, scheduler, scaler, config)
    tracker = _start_tracking(config, mlflow_run_id or config.mlflow.run_id) if rank == 0 else None
    try:
        for epoch in range(start_epoch, config.epochs):
            history.append(
                _run_epoch(config, session, model, optimizer, scheduler, scaler, loader, val, epoch, tracker, act_stats, history)
            )
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if tracker is not None:
        _log_final_artifacts(tracker, config, history)
        tracker.end("FINISHED")
    best = max(history, key=lambda m: m.get("oks_map", float("-inf")), default={})
    return {"history": history, "best": best}


def _run_epoch(config, session, model, optimizer, scheduler, scaler, loader, val, epoch, tracker, act_stats, history):
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    elif isinstance(loader.sampler, RandomSampler):
        loader.sampler.generator.manual_seed(config.seed + epoch)
    metrics: dict[str, float] = {"epoch": epoch + 1}
    train_metrics = train_one_epoch(
        model, optimizer, scheduler, loader, session.device,
        epoch=epoch, accumulate=config.accumulate, scaler=scaler,
        grad_clip=config.grad_clip, log_every=config.log_every,
    )
    metrics.update(train_metrics)
    metrics["world_size"] = session.world_size
    if session.world_size > 1:
        metrics["replica_divergence"] = replica_divergence(model)
    if act_stats is not None:
        metrics.update(act_stats.collect())
    last = epoch + 1 == config.epochs
    evaluated_before = any(m.get("evaluated") for m in history)
    if (epoch + 1) % config.eval_every == 0 or last or not evaluated_before:
        metrics.update(evaluate_distributed(model, val, config, session))
        metrics["evaluated"] = 1
    elif history:  # carry the last evaluation forward so schedulers always see the metric
        metrics.update({k: history[-1][k] for k in EVAL_KEYS if k in history[-1]})
        metrics["evaluated"] = 0
    if session.world_rank == 0:
        log.info(
            "epoch %d/%d: loss %.4f oks_map %s (%.1f images/s)", epoch + 1, config.epochs,
            metrics["train_loss"], f"{metrics['oks_map']:.4f}" if "oks_map" in metrics else "-", metrics["images_per_s"],
        )
    if tracker is not None:
        tracker.log_metrics(metrics, step=epoch + 1)
    with tempfile.TemporaryDirectory(prefix="raypose-ckpt-") as tmp:
        ckpt_dir = None
        if session.world_rank == 0:
            ckpt_dir = Path(tmp)
            save_checkpoint(
                ckpt_dir / CHECKPOINT_FILE, model, config.model,
                epoch=epoch + 1, config=config.model_dump(mode="json"),
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                history=[*history, metrics], metrics=metrics,
                mlflow_run_id=tracker.run_id if tracker is not None else None,
            )
        session.report(metrics, ckpt_dir)
    return metrics


def _restore(session, model, optimizer, scheduler, scaler, config) -> tuple[int, list[dict], str | None]:
    ckpt = session.latest_checkpoint()
    if ckpt is None:
        return 0, [], None
    net = model.module if isinstance(model, DistributedDataParallel) else model
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    total_steps = getattr(scheduler, "total_steps", None)
    scheduler.load_state_dict(ckpt["scheduler"])
    saved_epochs = ckpt.get("config", {}).get("epochs", config.epochs)
    if saved_epochs != config.epochs:
        log.warning(
            "resuming a %d-epoch run as a %d-epoch run: the %s schedule is stretched to the new length",
            saved_epochs, config.epochs, config.schedule.name,
        )
        if total_steps is not None:  # OneCycleLR saves its length; the lambda schedules do not
            scheduler.total_steps = total_steps
    scaler.load_state_dict(ckpt["scaler"])
    log.info("resumed after epoch %d", ckpt["epoch"])
    return int(ckpt["epoch"]), list(ckpt.get("history", [])), ckpt.get("mlflow_run_id")


def _start_tracking(config: TrainConfig, run_id: str | None):
    if not config.mlflow.enabled:
        return None
    from raypose.tracking import MlflowRun

    tracker = MlflowRun(
        config.mlflow.experiment,
        uri=config.mlflow.tracking_uri,
        run_id=run_id,
        run_name=config.mlflow.run_name or config.name,
        tags=config.mlflow.tags,
        parent_run_id=config.mlflow.parent_run_id,
    )
    tracker.log_params(flatten(config))
    return tracker


def _log_final_artifacts(tracker, config: TrainConfig, history: list[dict]) -> None:
    from raypose.training.config import save_resolved_config
    from raypose.training.plots import plot_history

    with tempfile.TemporaryDirectory(prefix="raypose-artifacts-") as tmp:
        save_resolved_config(config, Path(tmp) / "config.yaml")
        plot_history(history, Path(tmp) / "training_curves.png")
        tracker.log_artifact(tmp)
