"""One training run, top to bottom, the same on a Ray Train worker and in a local process.

:func:`run_training` takes a validated :class:`TrainConfig` and a
:class:`~raypose.training.sessions.Session`, the small interface to what differs between the
two: rank, device, where checkpoints come from and go. Each epoch is :func:`_run_epoch` over one
:class:`TrainingState`: train, evaluate when due, log, checkpoint and report.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

from raypose.checkpoint import CHECKPOINT_FILE, save_checkpoint
from raypose.data.dataset import collate_fn
from raypose.data.prepare import (
    annotation_source,
    build_datasets,
    image_ids,
    make_train_loader,
    set_loader_epoch,
)
from raypose.errors import ConfigError
from raypose.io import default_mode
from raypose.model import buffers_change_in_training, build_model
from raypose.training.activations import ActivationStats
from raypose.training.config import TrainConfig, identity_tags, recipe_params
from raypose.training.loop import EpochProgress, predict_loader, train_one_epoch
from raypose.training.optim import (
    build_optimizer,
    build_scheduler,
    effective_lr,
    effective_max_lr,
    images_per_step,
)
from raypose.training.resume import (
    apply_hyperparameters,
    changed_settings,
    check_resume,
    check_training_data,
    optimizer_hyperparameters,
    training_data,
)
from raypose.training.sessions import Session

log = logging.getLogger(__name__)

_clock = time.monotonic  # when the last checkpoint was written (checkpoint_every_min); tests replace it

# Per-epoch metrics every evaluated epoch reports (MLflow keys, Tune's metric is oks_map).
EVAL_KEYS = {"oks_map": "AP", "oks_ap50": "AP50", "oks_ap75": "AP75", "oks_ar": "AR"}
# What Ray Train ranks checkpoints by (see _evaluate_if_due); not logged to MLflow.
CHECKPOINT_SCORE = "checkpoint_score"
# Numbers an epoch reports (to Tune, and in the history) that are settings of the run, not curves:
# MLflow gets them as tags, so its charts and Compare views show what changes.
BOOKKEEPING_TAGS = {"world_size": "raypose.world_size", "nodes": "raypose.nodes",
                    "images": "raypose.train_images_per_epoch", "optimizer_steps": "raypose.optimizer_steps_per_epoch"}
NOT_LOGGED = ("epoch", CHECKPOINT_SCORE, "evaluated", *BOOKKEEPING_TAGS)
# In each report: every evaluated epoch so far, restored ones included, as JSON [[epoch, oks_map], ...].
# Tune forgets a function trial's results from before an interruption; the search reads this.
OKS_CURVE = "oks_map_curve"


@dataclass
class TrainingState:
    """Everything one epoch step reads or updates."""

    config: TrainConfig
    session: Session
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loader: DataLoader
    val: Dataset
    tracker: Any = None  # raypose.experiment_log.MlflowRun on rank 0 when MLflow is on
    act_stats: ActivationStats | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    nodes: int = 1  # the nodes the run's workers are on
    progress: EpochProgress | None = None  # where a resumed run's first epoch goes on from (mid-epoch)
    last_checkpoint: float = field(default_factory=lambda: _clock())
    preemption_saved: bool = False  # a checkpoint was written for the preemption now announced
    checkpoint_seconds: float = 0.0  # how long the last checkpoint held training up
    logged_epochs: set[int] = field(default_factory=set)  # epochs the MLflow run held when this run started
    train_data: dict[str, Any] = field(default_factory=dict)  # resume.training_data: recorded in each checkpoint


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch, numpy and random from (seed, epoch, rank) at the start of each epoch, so the
    augmentations of a resumed run are those of an uninterrupted one (loader workers derive
    their seeds from torch's generator)."""
    value = (seed * 1_000_003 + epoch * 1_009 + rank) % 2**32
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


# Per-rank training metrics and how the ranks' values combine into the run's.
SUMMED = ("images", "images_per_s")
AVERAGED = ("train_loss", "loss_keypoint", "loss_box_reg", "loss_classifier", "loss_objectness", "loss_rpn_box_reg")


def global_train_metrics(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """The epoch's training metrics over all ranks: images and images/s summed, losses averaged."""
    keys = [k for k in (*SUMMED, *AVERAGED) if k in metrics]
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)  # sums
    world = dist.get_world_size()
    return {k: float(v) / (1 if k in SUMMED else world) for k, v in zip(keys, values.tolist())}


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
    """OKS metrics on the validation set: each rank predicts a shard, rank 0 gathers and evaluates.

    Returns the :data:`EVAL_KEYS` metrics on rank 0, with ``body_ap`` and ``foot_ap`` for the
    23-point schema (see :func:`raypose.evaluation.cocoeval.part_aps`), and ``{}`` on the other
    ranks. Detections travel as numpy arrays to rank 0 only; the ground truth is parsed once per
    process.
    """
    from raypose.evaluation.cocoeval import evaluate_in_memory, outputs_to_arrays

    shard = Subset(val, range(session.world_rank, len(val), session.world_size))
    loader = DataLoader(shard, batch_size=config.eval_batch_size, collate_fn=collate_fn, num_workers=0)
    net = model.module if isinstance(model, DistributedDataParallel) else model
    outputs, ids = predict_loader(net, loader, session.device, amp=config.amp, options=config.inference)
    parts = [outputs_to_arrays(outputs, ids)]
    if session.world_size > 1:
        gathered: list | None = [None] * session.world_size if session.world_rank == 0 else None
        dist.gather_object(parts[0], gathered, dst=0)
        parts = gathered or []
    if session.world_rank != 0:
        return {}
    evaluation = evaluate_in_memory(annotation_source(val), parts, image_ids=image_ids(val),
                                    foot_sigmas=config.foot_sigmas)
    return {**{key: evaluation.stats[stat] for key, stat in EVAL_KEYS.items()}, **evaluation.parts}


def run_training(config: TrainConfig, session: Session) -> dict[str, Any]:
    """Train ``config.epochs`` epochs (resuming from the session's latest checkpoint).

    Returns:
        ``{"history": [per-epoch metrics], "best": best metrics by oks_map}`` (rank 0; the other
        ranks' history lacks evaluation metrics).
    """
    state = _build_state(config, session)
    start_epoch, state.history, mlflow_run_id = _restore(state)
    if session.world_rank == 0:
        state.tracker = _start_tracking(config, mlflow_run_id or config.mlflow.run_id, session.world_size)
        if state.tracker is not None:
            # Epochs the MLflow run already holds: a run Train restarted before its last checkpoint
            # was registered trains such an epoch again, and must not log it twice.
            state.logged_epochs = state.tracker.logged_steps("train_loss")
            if state.history:
                # epochs a crash between checkpoint and log, or an outage that outlasted the last run, kept out
                state.tracker.backfill(state.history, skip=NOT_LOGGED)
                # the files as of the restored epoch: the run may end (ASHA) before its next epoch does
                log_run_artifacts(state.tracker, state.history)
    if start_epoch >= config.epochs and state.history:
        # resumed after its last epoch (interrupted before it could say so): tell the session how it ended
        session.already_finished(with_curve(state.history[:-1], state.history[-1]))
    try:
        for epoch in range(start_epoch, config.epochs):
            state.history.append(_run_epoch(state, epoch))
    except BaseException as e:
        if state.tracker is not None:
            state.tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    if state.tracker is not None:
        state.tracker.end("FINISHED")
    best = max(state.history, key=lambda m: m.get("oks_map", float("-inf")), default={})
    return {"history": state.history, "best": best}


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` under DDP. Buffers are broadcast from rank 0 before each forward pass only where
    training changes them (batch norm's running statistics): with frozen batch norm, as in the
    COCO configs, every buffer is constant and the broadcast is a wasted collective per step."""
    sync = buffers_change_in_training(model)
    # torch 2.14 renamed the option (the init-time sync of parameters and buffers stays either way)
    option = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
              else "broadcast_buffers")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   **{option: sync})


def _build_state(config: TrainConfig, session: Session) -> TrainingState:
    """Data, model (DDP-wrapped across ranks), optimizer, schedule and scaler for a fresh run."""
    torch.manual_seed(config.seed + session.world_rank)
    device = session.device
    train, val = build_datasets(config.data, config.model.schema)
    model = build_model(config.model).to(device)
    act_stats = ActivationStats(model, config.activation_stats) if config.activation_stats else None
    if session.world_size > 1:
        model = wrap_ddp(model, device)
    loader = make_train_loader(
        train, config.data, config.batch_size, config.seed, session.world_rank, session.world_size,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader) // config.accumulate
    if steps_per_epoch == 0:
        raise ConfigError(
            f"one optimizer step needs batch_size x accumulate x workers = "
            f"{config.batch_size * config.accumulate * session.world_size} training images, "
            f"the data has {len(train)}: lower batch_size or accumulate"
        )
    optimizer = build_optimizer(model, config.optim, lr=effective_lr(config, session.world_size))
    nodes = 1
    if session.world_size > 1:
        node_ids: list = [None] * session.world_size
        dist.all_gather_object(node_ids, session.node_id)
        nodes = len(set(node_ids))
        if session.world_rank == 0:
            log.info("%d workers on %d node(s)", session.world_size, nodes)
    return TrainingState(
        nodes=nodes,
        config=config, session=session, model=model, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.schedule, steps_per_epoch, config.epochs,
                                  max_lr=effective_max_lr(config, session.world_size)),
        scaler=torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda"),
        loader=loader, val=val, act_stats=act_stats,
        train_data=training_data(annotation_source(train), _annotated_images(train)),
    )


def _annotated_images(train: Dataset) -> int:
    """The images of the training annotation file (a ``Subset``'s base dataset's)."""
    base = train.dataset if isinstance(train, Subset) else train
    return base.annotations.num_images


def _run_epoch(state: TrainingState, epoch: int) -> dict[str, float]:
    """Train one epoch, evaluate when due, log, checkpoint and report; returns the epoch's metrics."""
    config, session = state.config, state.session
    set_loader_epoch(state.loader, config.seed, epoch)
    seed_epoch(config.seed, epoch, session.world_rank)
    metrics: dict[str, float] = {"epoch": epoch + 1}
    resume_from, state.progress = state.progress, None
    metrics.update(train_one_epoch(
        state.model, state.optimizer, state.scheduler, state.loader, session.device,
        epoch=epoch, accumulate=config.accumulate, scaler=state.scaler,
        grad_clip=config.grad_clip, log_every=config.log_every,
        resume_from=resume_from, on_step=lambda done, progress: _checkpoint_if_due(state, epoch, done, progress),
    ))
    metrics["world_size"] = session.world_size
    if session.world_size > 1:
        metrics["nodes"] = state.nodes
        metrics.update(global_train_metrics(metrics, session.device))
        metrics["replica_divergence"] = replica_divergence(state.model)
    if state.act_stats is not None:
        metrics.update(state.act_stats.collect())
    metrics.update(_evaluate_if_due(state, epoch))
    if session.world_rank == 0:
        log.info(
            "epoch %d/%d: loss %.4f oks_map %s (%.1f images/s)", epoch + 1, config.epochs,
            metrics["train_loss"], f"{metrics['oks_map']:.4f}" if "oks_map" in metrics else "-", metrics["images_per_s"],
        )
    # MLflow before the report: once Tune has the result, ASHA may end the trial at once
    _log_epoch(state, epoch, metrics)
    _checkpoint_and_report(state, metrics)
    if state.tracker is not None and epoch + 1 not in state.logged_epochs:
        state.tracker.log_metrics(checkpoint_timing(state), step=epoch + 1)  # known once it is stored
    return metrics


def _log_epoch(state: TrainingState, epoch: int, metrics: dict[str, float]) -> None:
    """The epoch's metrics, bookkeeping tags and the run's files to MLflow (rank 0).

    An epoch the run already holds (trained again after a restart before its checkpoint was
    stored) is not logged twice; its files are, as they stand.
    """
    tracker = state.tracker
    if tracker is None:
        return
    if epoch + 1 in state.logged_epochs:
        log.info("epoch %d is already in MLflow run %s (trained again after a restart): not logged twice",
                 epoch + 1, tracker.run_id)
    else:
        # OKS first: MLflow keeps a run's metrics in the order first logged, and its Compare view
        # plots the first shared metric (so oks_map, against the searched params)
        ordered = {**{k: metrics[k] for k in EVAL_KEYS if k in metrics}, **metrics}
        tracker.log_metrics({k: v for k, v in ordered.items() if k not in NOT_LOGGED}, step=epoch + 1)
        tracker.set_tags({tag: int(metrics[k]) for k, tag in BOOKKEEPING_TAGS.items() if k in metrics})
    if state.config.mlflow.system_metrics and not tracker.system_metrics_started:
        # after the first epoch's metrics: MLflow lists a run's metrics in the order first logged
        tracker.start_system_metrics(state.config.mlflow.system_metrics_interval_s)
    # every epoch, not only at the end: a trial ASHA stops (or a lost run) never reaches the end
    log_run_artifacts(tracker, [*state.history, metrics])


def _evaluate_if_due(state: TrainingState, epoch: int) -> dict[str, float]:
    """The evaluation metrics of this epoch, every ``eval_every`` epochs and after the last.

    An epoch that is not evaluated has no ``oks_map``: no score is carried forward, so nothing
    downstream (ASHA, Optuna, checkpoint ranking, the trial table) mistakes it for a measured one.
    ``checkpoint_score`` ranks checkpoints: the epoch's oks_map, or -1 (below any AP) when not
    evaluated, so the evaluated checkpoints are the ones kept; the latest is always kept too.
    """
    config = state.config
    if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
        scores = evaluate_distributed(state.model, state.val, config, state.session)
        return {**scores, "evaluated": 1, CHECKPOINT_SCORE: scores.get("oks_map", -1.0)}
    return {"evaluated": 0, CHECKPOINT_SCORE: -1.0}


def _checkpoint_if_due(state: TrainingState, epoch: int, done: int, progress) -> None:
    """Inside an epoch, every ``log_every`` optimizer steps (the same step on every rank): write a
    mid-epoch checkpoint when ``checkpoint_every_min`` minutes have passed since the last one, or
    at once when the session announces a preemption of one of the run's nodes (once per
    announcement). The ranks agree: the session's preemption check is a barrier that gives all
    of them one answer, and the clock of each is all-reduced."""
    config, session = state.config, state.session
    if done % config.log_every:
        return
    every = config.checkpoint_every_min
    due = every is not None and _clock() - state.last_checkpoint >= every * 60
    preempted = session.preemption_pending()
    if session.world_size > 1 and every is not None:
        flag = torch.tensor([int(due)], device=session.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        due = bool(flag)
    if not preempted:
        state.preemption_saved = False
    elif not state.preemption_saved:
        log.warning("a node of this run is being preempted: checkpointing at epoch %d, step %d", epoch + 1, done)
        state.preemption_saved = due = True
    if due:
        _save_progress(state, epoch, progress())


def _save_progress(state: TrainingState, epoch: int, progress: EpochProgress) -> None:
    """A mid-epoch checkpoint: the usual training state after ``epoch`` whole epochs, plus every
    rank's :class:`EpochProgress` in the epoch under way (``progress``, one per rank)."""
    session = state.session
    per_rank: list | None = [progress.to_dict()]
    if session.world_size > 1:
        per_rank = [None] * session.world_size if session.world_rank == 0 else None
        dist.gather_object(progress.to_dict(), per_rank, dst=0)
    metrics = {"epoch": epoch, "epoch_step": progress.step, CHECKPOINT_SCORE: -1.0}
    _store_checkpoint(state, session.save_progress, with_curve(state.history, metrics), epoch, state.history, metrics,
                      progress=per_rank)
    if session.world_rank == 0:
        log.info("checkpoint inside epoch %d after step %d", epoch + 1, progress.step)


def _write_checkpoint(state: TrainingState, folder: Path, epoch: int, history: list[dict], metrics: dict,
                      **extra: Any) -> None:
    save_checkpoint(
        folder / CHECKPOINT_FILE, state.model, state.config.model,
        epoch=epoch, config=state.config.model_dump(mode="json"),
        optimizer=state.optimizer.state_dict(), scheduler=state.scheduler.state_dict(),
        scaler=state.scaler.state_dict(), history=history, metrics=metrics,
        mlflow_run_id=state.tracker.run_id if state.tracker is not None else None, train_data=state.train_data,
        **extra,
    )


def _checkpoint_and_report(state: TrainingState, metrics: dict[str, float]) -> None:
    """The epoch's checkpoint (model, optimizer, schedule, scaler, history), and every rank reports."""
    _store_checkpoint(state, state.session.report, with_curve(state.history, metrics), int(metrics["epoch"]),
                      [*state.history, metrics], metrics)


def _store_checkpoint(state: TrainingState, send, reported: dict[str, Any], epoch: int, history: list[dict],
                      metrics: dict, **extra: Any) -> None:
    """Rank 0 writes the checkpoint into a new temporary folder; every rank calls ``send`` (the
    session's report or save_progress) with ``reported`` and that folder (None on the others).
    The session owns the folder from then on: it removes it once stored, which an asynchronous
    upload does after ``send`` returns. ``state.checkpoint_seconds``: how long training waited."""
    start = time.perf_counter()
    folder = None
    if state.session.world_rank == 0:
        folder = Path(tempfile.mkdtemp(prefix="raypose-ckpt-"))
        os.chmod(folder, default_mode(directory=True))  # copied as it is: follow the umask, not 0700
    try:
        if folder is not None:
            _write_checkpoint(state, folder, epoch, history, metrics, **extra)
        send(reported, folder)
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    state.checkpoint_seconds = time.perf_counter() - start
    state.last_checkpoint = _clock()


def checkpoint_timing(state: TrainingState) -> dict[str, float]:
    """What the last checkpoint cost, for MLflow: the seconds training waited for it (writing, and
    the upload when synchronous), and the seconds and MB of the last checkpoint stored (an
    asynchronous upload finishes later: the previous one's, until it does)."""
    timing = {"checkpoint_wait_s": state.checkpoint_seconds}
    if state.session.stored:
        last = state.session.stored[-1]
        timing.update(checkpoint_upload_s=last.seconds, checkpoint_mb=last.bytes / 1e6)
    return timing


def with_curve(history: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` plus :data:`OKS_CURVE`: the evaluated epochs of ``history`` and ``metrics``."""
    curve = [[int(m["epoch"]), float(m["oks_map"])] for m in [*history, metrics] if "oks_map" in m]
    return {**metrics, OKS_CURVE: json.dumps(curve)}


def _restore(state: TrainingState) -> tuple[int, list[dict], str | None]:
    """Load the session's latest checkpoint into ``state``: (epochs done, history, MLflow run id).

    Raises:
        ConfigError: the config changes a setting a resumed run cannot change, or the training
            data is another than the checkpoint's (:mod:`resume`).
    """
    ckpt = state.session.latest_checkpoint()
    if ckpt is None:
        return 0, [], None
    config = state.config
    check_resume(ckpt.get("config", {}), config, f"the storage of run {config.name!r}")
    check_training_data(ckpt.get("train_data"), state.train_data, config.name)
    fresh_groups, fresh_base_lrs = optimizer_hyperparameters(state.optimizer), list(state.scheduler.base_lrs)
    net = state.model.module if isinstance(state.model, DistributedDataParallel) else state.model
    net.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    # the new config's lr, weight decay and momentum take effect from the restored step on
    apply_hyperparameters(state.optimizer, state.scheduler, fresh_groups, fresh_base_lrs)
    for key, (old, new) in changed_settings(ckpt.get("config", {}), config).items():
        log.warning("resumed with %s changed: %r -> %r", key, old, new)
    progress = ckpt.get("progress")
    if progress:
        if len(progress) != state.session.world_size:
            raise ConfigError(f"the latest checkpoint of run {config.name!r} was written inside an epoch by "
                              f"{len(progress)} workers; this run has {state.session.world_size}: resume with "
                              f"--set workers={len(progress)}")
        state.progress = EpochProgress.from_dict(progress[state.session.world_rank])
        log.info("resumed in epoch %d after step %d", ckpt["epoch"] + 1, state.progress.step)
    else:
        log.info("resumed after epoch %d", ckpt["epoch"])
    return int(ckpt["epoch"]), list(ckpt.get("history", [])), ckpt.get("mlflow_run_id")


def scale_params(config: TrainConfig, world_size: int) -> dict[str, float]:
    """The lr the optimizer really gets at this run's scale (``optim.lr_scaling``), as params."""
    params = {"optim.images_per_step": images_per_step(config, world_size),
              "optim.effective_lr": effective_lr(config, world_size)}
    if config.schedule.name == "onecycle":
        params["schedule.effective_max_lr"] = effective_max_lr(config, world_size)
    return params


MLFLOW_FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def _start_tracking(config: TrainConfig, run_id: str | None, world_size: int):
    """The run's MLflow run (rank 0): params, the resolved config, the datasets, system metrics."""
    if not config.mlflow.enabled:
        return None
    from raypose.experiment_log import MlflowRun, resolve_tracking_uri

    # A tracking server that does not answer fails a call within seconds (MLflow's default retries
    # for about two minutes per call); the call is queued and training goes on (best_effort).
    for key, value in MLFLOW_FAST_FAIL.items():
        os.environ.setdefault(key, value)
    tracker = MlflowRun(
        config.mlflow.experiment,
        uri=config.mlflow.tracking_uri or resolve_tracking_uri(),
        run_id=run_id,
        run_name=config.mlflow.run_name or config.name,
        tags={**identity_tags(config), **config.mlflow.tags},
        parent_run_id=config.mlflow.parent_run_id,
        best_effort=True,
    )
    params, context = run_params(config, world_size)
    tracker.log_params(params)
    tracker.set_tags(context)
    with tempfile.TemporaryDirectory(prefix="raypose-config-") as tmp:
        from raypose.training.config import save_resolved_config

        save_resolved_config(config, Path(tmp) / "config.yaml")  # the whole recipe, whatever params show
        tracker.log_artifact(Path(tmp) / "config.yaml")
    tracker.log_inputs(dataset_inputs(config))
    return tracker


# What a reader of a run needs beside the params ``mlflow.params`` names: tags when not a param.
CONTEXT_TAGS = ("model.backbone", "epochs", "optim.images_per_step", "optim.effective_lr")


def run_params(config: TrainConfig, world_size: int) -> tuple[dict[str, Any], dict[str, str]]:
    """A run's MLflow params and context tags. Params: every recipe setting and the lr at this
    scale, or only the keys ``mlflow.params`` names (a study's trials: their searched values);
    then :data:`CONTEXT_TAGS` that are not params are tags (``raypose.epochs``, ...).
    ``optim.effective_lr`` (the lr the optimizer gets per step) compares trials whose ``optim.lr``
    means different things: the baseline's is per 16 images (``optim.lr_scaling: linear``)."""
    every = {**recipe_params(config), **scale_params(config, world_size)}
    if config.mlflow.params is None:
        return every, {}
    params = {k: every[k] for k in config.mlflow.params if k in every}
    return params, {f"raypose.{k}": str(every[k]) for k in CONTEXT_TAGS if k in every and k not in params}


def dataset_inputs(config: TrainConfig) -> list:
    """The training and validation annotation files as MLflow datasets, each with its sha256 digest
    (a changed file is a different dataset); a file this process cannot read is left out."""
    from raypose.experiment_log import dataset_input, file_digest

    data = config.data
    inputs = []
    for context, rel in (("train", data.train_ann), ("validation", data.val_ann)):
        path = data.path(rel)
        try:
            inputs.append(dataset_input(f"{data.kind}-{path.stem}", str(path.resolve()), file_digest(path), context))
        except OSError as e:
            log.warning("the %s annotations are not logged as an MLflow dataset (%s)", context, e)
    return inputs


def log_run_artifacts(tracker, history: list[dict]) -> None:
    """The run's training curves (``training_curves.png``) and per-epoch metrics (``metrics.json``)
    as they stand, replacing the previous epoch's."""
    from raypose.training.plots import plot_history

    with tempfile.TemporaryDirectory(prefix="raypose-artifacts-") as tmp:
        plot_history(history, Path(tmp) / "training_curves.png")
        best = max(history, key=lambda m: m.get("oks_map", float("-inf")), default={})
        (Path(tmp) / "metrics.json").write_text(json.dumps({"history": history, "best": best}, indent=1))
        tracker.log_artifact(tmp)
