"""Training throughput benchmark (not a test): the tiny CPU model, local vs. Ray Train.

Measures, on the synthetic data set:

* training images/s in one plain process (``workers: 0``, batch 4);
* training images/s per worker and in total with Ray Train, 2 gloo workers x batch 2 (the same
  global batch of 4), and the Ray overhead as the ratio plain / Ray, for the training loop alone
  and for the whole run wall time (Ray start, worker group, checkpoint reporting included).

With ``--gpu`` it instead times ResNet-50 FPN at COCO size with AMP on one GPU (images/s and peak
GPU memory), on synthetic 640x480 images.

Usage::

    python benchmarks/bench_train.py [--images 32] [--epochs 2]
    python benchmarks/bench_train.py --gpu [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

TINY_MODEL = {
    "backbone": "resnet18", "weights": None, "backbone_weights": None, "norm": "batch",
    "keypoint_head_channels": [64, 64, 64, 64], "box_head_size": 256, "box_batch_size_per_image": 64,
    "rpn_post_nms_top_n_train": 300, "min_size": [128], "max_size": 192,
}


def base_config(root: Path, storage: Path, images: int, epochs: int) -> dict:
    return {
        "name": "bench", "storage_path": str(storage), "epochs": epochs, "amp": False, "log_every": 1000,
        "eval_every": 1000, "model": TINY_MODEL,
        "data": {"root": str(root), "kind": "synthetic", "loader_workers": 0, "train_limit": images, "val_limit": 2},
        "optim": {"name": "adamw", "lr": 0.001}, "schedule": {"name": "constant"}, "mlflow": {"enabled": False},
    }


def cpu_benchmark(images: int, epochs: int) -> dict:
    from raypose.data.synth import generate_synthetic_dataset, prepare_dataset
    from raypose.training.config import validate_train_config
    from raypose.training.ray_train import fit, init_ray
    from raypose.training.run import run_training
    from raypose.training.sessions import LocalSession

    work = Path(tempfile.mkdtemp(prefix="raypose-bench-"))
    generate_synthetic_dataset(work / "synth", images, 4, seed=0)
    prepare_dataset(work / "synth")
    raw = base_config(work / "synth", work / "runs", images, epochs)

    start = time.perf_counter()
    local = validate_train_config({**raw, "name": "plain", "workers": 0, "batch_size": 4})
    history = run_training(local, LocalSession(local.run_dir))["history"]
    plain_wall = time.perf_counter() - start
    plain_ips = history[-1]["images_per_s"]  # last epoch: warm caches

    start = time.perf_counter()
    init_ray(min_cpus=3)
    ray_cfg = validate_train_config({**raw, "name": "ray", "workers": 2, "batch_size": 2, "cpus_per_worker": 1})
    result = fit(ray_cfg)
    ray_wall = time.perf_counter() - start
    per_worker = result.metrics["images_per_s"]
    return {
        "images": images, "epochs": epochs, "global_batch": 4,
        "plain_images_per_s": round(plain_ips, 2),
        "ray_images_per_s_per_worker": round(per_worker, 2),
        "ray_images_per_s_total": round(2 * per_worker, 2),
        "loop_overhead_ratio_plain_over_ray": round(plain_ips / (2 * per_worker), 3),
        "plain_wall_s": round(plain_wall, 1), "ray_wall_s": round(ray_wall, 1),
        "wall_ratio_ray_over_plain": round(ray_wall / plain_wall, 3),
    }


def gpu_benchmark(steps: int) -> dict:
    import torch

    from raypose.model import ModelConfig, build_model
    from raypose.training.config import OptimConfig, ScheduleConfig
    from raypose.training.loop import train_one_epoch
    from raypose.training.optim import build_optimizer, build_scheduler

    device = torch.device("cuda")
    model = build_model(ModelConfig(backbone="resnet50", weights=None, backbone_weights=None)).to(device)
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.01))
    sched = build_scheduler(opt, ScheduleConfig(name="constant"), steps, 1)
    scaler = torch.amp.GradScaler("cuda")
    g = torch.Generator().manual_seed(0)

    def batch():
        images = [torch.rand(3, 480, 640, generator=g) for _ in range(2)]
        targets = []
        for _ in images:
            xy = torch.rand(2, 23, 2, generator=g) * torch.tensor([400.0, 300.0]) + 100
            boxes = torch.cat([xy.min(1).values - 10, xy.max(1).values + 10], 1)
            kps = torch.cat([xy, torch.full((2, 23, 1), 2.0)], -1)
            targets.append({"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "keypoints": kps})
        return images, targets

    loader = [batch() for _ in range(steps)]
    train_one_epoch(model, opt, sched, loader[:5], device, scaler=scaler, log_every=0, steps=5)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    sched = build_scheduler(opt, ScheduleConfig(name="constant"), steps, 1)
    torch.cuda.synchronize()
    metrics = train_one_epoch(model, opt, sched, loader, device, scaler=scaler, log_every=0)
    torch.cuda.synchronize()
    return {
        "gpu": torch.cuda.get_device_name(), "model": "resnet50-fpn, 23 keypoints", "image_size": "640x480",
        "batch": 2, "amp": True, "images_per_s": round(metrics["images_per_s"], 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32, help="training images (CPU benchmark)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (CPU benchmark)")
    parser.add_argument("--gpu", action="store_true", help="ResNet-50 FPN + AMP on one GPU instead")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps (GPU benchmark)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    result = gpu_benchmark(args.steps) if args.gpu else cpu_benchmark(args.images, args.epochs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
