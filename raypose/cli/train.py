"""``raypose train`` (one training run, Ray Train or local) and ``raypose overfit`` (sanity check)."""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``overfit`` to the ``raypose`` parser."""
    p = subparsers.add_parser(
        "train",
        help="train one model (Ray Train workers, or --local in this process)",
        description="Train KeypointRCNN as CONFIG says: DDP over Ray Train workers (NCCL on GPUs, gloo on "
        "CPU), evaluation and a checkpoint every epoch, metrics to MLflow. Rerunning with the same "
        "run name resumes from the last checkpoint.",
    )
    p.add_argument("config", help="training config YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--local", action="store_true", help="run in this process on one GPU or the CPU (workers: 0)")
    p.add_argument("--activation-stats", nargs="+", metavar="MODULE", default=None,
                   help="log activation statistics of these modules each epoch (e.g. backbone.body.layer4)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "overfit",
        help="overfit a few images: the loss must fall and training OKS-mAP rise",
        description="The overfitting sanity check: train on N training images without augmentation for "
        "many epochs, measuring OKS-mAP on those images and the loss on validation images.",
    )
    p.add_argument("config", help="training config YAML (its model, data and optimizer are used)")
    p.add_argument("--images", type=int, default=11, help="number of training images to overfit (default 11)")
    p.add_argument("--epochs", type=int, default=200, help="epochs (default 200)")
    p.add_argument("--eval-every", type=int, default=10, help="measure OKS-mAP and val loss every N epochs")
    p.add_argument("--out", default=None, help="output folder (default STORAGE/NAME-overfit)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.set_defaults(func=_overfit)


def _load(args) -> object:
    from raypose.training.config import load_train_config

    overrides = list(args.overrides)
    if getattr(args, "local", False):
        overrides.append("workers=0")
    if getattr(args, "activation_stats", None):
        overrides.append(f"activation_stats={args.activation_stats!r}")
    return load_train_config(args.config, overrides)


def _train(args) -> int:
    from raypose.data.prepare import ensure_data
    from raypose.training.resume import start_run_record
    from raypose.training.run import run_training
    from raypose.training.sessions import LocalSession

    config = _load(args)
    ensure_data(config.data)
    if config.mlflow.enabled:
        uri = config.mlflow.tracking_uri
        print(f"MLflow tracking URI: {uri}  (open it with `mlflow ui --backend-store-uri {uri}`)")
    start_run_record(config)  # refuses a resume that changes what cannot change, before anything starts
    if config.workers == 0:
        out = run_training(config, LocalSession(config.run_dir, keep=config.keep_checkpoints))
        best = out["best"]
        print(f"done: {len(out['history'])} epochs in {config.run_dir}; best oks_map {best.get('oks_map', 0):.4f} "
              f"at epoch {best.get('epoch')}")
        return 0
    from raypose.training.ray_train import fit, init_ray

    init_ray(min_cpus=config.workers * config.cpus_per_worker + 1)
    result = fit(config)
    best = result.get_best_checkpoint("oks_map", "max") if result.checkpoint else None
    print(f"done: {config.run_dir}; last metrics oks_map {result.metrics.get('oks_map', 0):.4f}; "
          f"best checkpoint {best.path if best else '-'}")
    return 0


def _overfit(args) -> int:
    from raypose.data.prepare import ensure_data
    from raypose.training.overfit import run_overfit

    config = _load(args)
    ensure_data(config.data)
    out = args.out or os.path.join(config.storage_path, f"{config.name}-overfit")
    result = run_overfit(config, args.images, args.epochs, out, eval_every=args.eval_every)
    first, last = result.first, result.last
    print(f"train loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}; "
          f"training OKS-mAP {first['train_oks_map']:.3f} -> {last['train_oks_map']:.3f}; "
          f"val loss {first['val_loss']:.3f} -> {last['val_loss']:.3f}")
    print(f"wrote {result.files['plot']} and {result.files['json']}")
    return 0
