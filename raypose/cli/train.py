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
    from raypose.errors import Interrupted
    from raypose.training.resume import run_lock

    config = _load(args)
    _check_writable_outputs(config)
    check_services(config, uses_ray=config.workers > 0)
    ensure_data(config.data)
    from raypose.data.annotations import check_training_annotations  # both files, before any epoch

    check_training_annotations(config.data.path(config.data.train_ann), config.data.path(config.data.val_ann))
    if config.mlflow.enabled:
        uri = config.mlflow.tracking_uri
        print(f"MLflow tracking URI: {uri}  (open it with `mlflow ui --backend-store-uri {uri}`)")
    with run_lock(config):  # one run of a name at a time: from its record to its last checkpoint
        try:
            return _train_locked(config)
        except Interrupted:
            raise
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP (raypose.cli.main)
            reason = f"{e}; " if str(e) else ""
            raise Interrupted(f"{reason}run {config.name!r} keeps its checkpoints in {config.run_dir}; resume it "
                              f"with: {_rerun_command(args)}") from e


def _rerun_command(args) -> str:
    """The command line that reruns (and so resumes) this ``raypose train``."""
    import shlex

    command = ["raypose", "train", args.config, *[a for o in args.overrides for a in ("--set", o)]]
    if args.local:
        command.append("--local")
    if args.activation_stats:
        command += ["--activation-stats", *args.activation_stats]
    return shlex.join(command)


def _train_locked(config) -> int:
    from raypose.training.resume import start_run_record
    from raypose.training.run import run_training
    from raypose.training.sessions import LocalSession

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


def _check_writable_outputs(config) -> None:
    """A read-only or full storage_path or local MLflow store: refused before any work (ConfigError)."""
    from raypose.experiment_log import check_local_store
    from raypose.storage import check_writable

    check_writable(config.storage_path)
    if config.mlflow.enabled:
        check_local_store(config.mlflow.tracking_uri)


def check_services(config, uses_ray: bool) -> None:
    """An MLflow server (http(s) tracking URI) or Ray cluster ($RAY_ADDRESS) that does not answer:
    refused within seconds, before any work (ConfigError naming the address)."""
    if config.mlflow.enabled:
        from raypose.experiment_log import check_tracking_server

        check_tracking_server(config.mlflow.tracking_uri)
    if uses_ray:
        from raypose.training.ray_train import check_ray_address

        check_ray_address()


def _overfit(args) -> int:
    from raypose.data.prepare import ensure_data
    from raypose.io import check_output_dir
    from raypose.training.overfit import OVERFIT_FILES, run_overfit

    config = _load(args)
    out = args.out or os.path.join(config.storage_path, f"{config.name}-overfit")
    data = config.data
    inputs = (args.config, data.path(data.train_ann), data.path(data.val_ann))
    check_output_dir(out, "--out" if args.out else "the overfit folder", inputs=inputs, writes=OVERFIT_FILES)
    ensure_data(config.data)
    result = run_overfit(config, args.images, args.epochs, out, eval_every=args.eval_every)
    first, last = result.first, result.last
    print(f"train loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}; "
          f"training OKS-mAP {first['train_oks_map']:.3f} -> {last['train_oks_map']:.3f}; "
          f"val loss {first['val_loss']:.3f} -> {last['val_loss']:.3f}")
    print(f"wrote {result.files['plot']} and {result.files['json']}")
    return 0
