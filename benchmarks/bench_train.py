"""Training throughput benchmark (not a test).

CPU mode (default): the tiny CPU model on the synthetic data set, one plain process (``workers: 0``,
batch 4) against Ray Train with 2 gloo workers x batch 2 (the same global batch of 4); the Ray
overhead as the ratio plain / Ray, for the training loop and for the whole run wall time.

``--gpu``: KeypointRCNN ResNet-50 FPN, 23 keypoints, no pretrained weights, on synthetic images of
800-1333 px with 1-5 people each, generated in memory. In one run it measures, at batch 2 and at
the largest batch that fits (searched upward by powers of 2):

* a loop written as torchvision's reference ``references/detection/engine.py::train_one_epoch``,
  in fp32 and with its ``--amp`` (float16 autocast + GradScaler);
* raypose's loop (``raypose.training.loop.train_one_epoch``) with its defaults, and with each
  lever toggled on its own (bf16, channels_last, cudnn.benchmark off, unfused optimizer,
  unpinned batches, fp32, fp32 + TF32 matmuls; ``--compile``: a compiled backbone);
* ``raypose train --local`` against ``raypose train`` on Ray Train with one GPU worker, on the same
  synthetic data set written to disk (the loop's images/s of the last epochs, from the checkpoints).

Each figure excludes warm-up steps and is timed between ``torch.cuda.synchronize()`` calls; peak
GPU memory is ``torch.cuda.max_memory_allocated`` after the warm-up. Results go to
``OUT/bench_train.json`` (rewritten after every measurement, so a cut-off run keeps what it had)
and ``OUT/bench_train.md``.

``--smoke``: the ``--gpu`` benchmark's code paths with tiny sizes, on CPU when there is no GPU
(Ray started with ``$RAY_TMPDIR`` if set).

Usage::

    python benchmarks/bench_train.py [--images 32] [--epochs 2]
    python benchmarks/bench_train.py --gpu [--out benchmarks/out] [--budget-s 210] [--compile]
    python benchmarks/bench_train.py --smoke --out /tmp/bench
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

TINY_MODEL = {
    "backbone": "resnet18", "weights": None, "backbone_weights": None, "norm": "batch",
    "keypoint_head_channels": [64, 64, 64, 64], "box_head_size": 256, "box_batch_size_per_image": 64,
    "rpn_post_nms_top_n_train": 300, "min_size": [128], "max_size": 192,
}
# torchvision's KeypointRCNN R50-FPN as the reference trains it (min_size 640-800, max 1333), untrained.
R50_MODEL = {"backbone": "resnet50", "weights": None, "backbone_weights": None, "num_keypoints": 23}


# --- CPU mode (unchanged) -------------------------------------------------------------------------


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


# --- GPU mode: sizes, data, loops ------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """What one ``--gpu`` (or ``--smoke``) run measures."""

    model: dict
    image_sides: tuple[int, int]  # each image side drawn from this range, in pixels
    people: tuple[int, int]  # people per image, inclusive
    warmup_steps: int  # untimed steps before each measurement
    timed_images: int  # at least this many images timed per measurement (and >= 3 steps)
    max_batch: int  # the largest-batch search stops here
    cli_images: int  # training images of the `raypose train` comparison, per epoch
    cli_epochs: int  # the first is warm-up; the others are averaged
    loader_workers: int
    lr: float = 0.002  # small: the model is untrained and must not diverge in a benchmark


GPU_SIZES = Sizes(R50_MODEL, (800, 1333), (1, 5), warmup_steps=5, timed_images=48, max_batch=64,
                  cli_images=48, cli_epochs=3, loader_workers=6)
SMOKE_SIZES = Sizes(TINY_MODEL, (128, 192), (1, 3), warmup_steps=1, timed_images=6, max_batch=4,
                    cli_images=8, cli_epochs=2, loader_workers=0)


def synthetic_batch(batch: int, sizes: Sizes, g, num_keypoints: int = 23, largest: bool = False):
    """One batch of CPU tensors: images (3, H, W) in [0, 1] and torchvision targets.

    People are boxes of 20-90 % of the image height (COCO-like: from small to filling the frame),
    each with ``num_keypoints`` (x, y, v) inside, v = 2 for 80 % of them and 0 otherwise.
    ``largest``: every image at the largest size with the most people (for the OOM search).
    """
    import torch

    low, high = sizes.image_sides
    images, targets = [], []
    for _ in range(batch):
        if largest:
            h, w, n = low, high, sizes.people[1]  # resized to short side 800 / long side 1333 at most
        else:
            h, w = (int(torch.randint(low, high + 1, (1,), generator=g)) for _ in range(2))
            n = int(torch.randint(sizes.people[0], sizes.people[1] + 1, (1,), generator=g))
        images.append(torch.rand(3, h, w, generator=g))
        box_h = (0.2 + 0.7 * torch.rand(n, generator=g)) * h
        box_w = torch.minimum(box_h * (0.3 + 0.3 * torch.rand(n, generator=g)), torch.tensor(w - 2.0))
        x0 = torch.rand(n, generator=g) * (w - box_w)
        y0 = torch.rand(n, generator=g) * (h - box_h)
        boxes = torch.stack([x0, y0, x0 + box_w, y0 + box_h], 1)
        rel = torch.rand(n, num_keypoints, 2, generator=g)
        xy = boxes[:, None, :2] + rel * (boxes[:, None, 2:] - boxes[:, None, :2])
        v = torch.where(torch.rand(n, num_keypoints, 1, generator=g) < 0.8, 2.0, 0.0)
        targets.append({"boxes": boxes, "labels": torch.ones(n, dtype=torch.int64), "keypoints": torch.cat([xy * (v > 0), v], -1)})
    return images, targets


def make_batches(count: int, batch: int, sizes: Sizes, seed: int, pin: bool, largest: bool = False) -> list:
    """``count`` batches cycling through at most 8 distinct ones (host memory stays small)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    pool = [synthetic_batch(batch, sizes, g, largest=largest) for _ in range(min(count, 8))]
    if pin:  # what DataLoader(pin_memory=True) hands the loop
        pool = [([im.pin_memory() for im in ims], [{k: v.pin_memory() for k, v in t.items()} for t in tgts]) for ims, tgts in pool]
    return [pool[i % len(pool)] for i in range(count)]


def reference_train_one_epoch(model, optimizer, data_loader, device, epoch, print_freq, scaler=None):
    """torchvision ``references/detection/engine.py::train_one_epoch`` at one process.

    Kept as written there: a LinearLR warm-up in epoch 0, unpinned blocking copies, autocast from
    ``scaler``, and per step ``.item()`` on the summed loss and on every component (its
    MetricLogger); ``utils.reduce_dict`` is the identity at world size 1. Left out: printing, and
    ``sys.exit`` on a non-finite loss (raises instead).
    """
    import torch

    model.train()
    lr_scheduler = None
    if epoch == 0:
        warmup_factor = 1.0 / 1000
        warmup_iters = min(1000, len(data_loader) - 1)
        lr_scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=warmup_factor, total_iters=warmup_iters)
    logged: dict[str, float] = {}
    for images, targets in data_loader:
        images = list(image.to(device) for image in images)
        targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, enabled=scaler is not None):
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
        loss_dict_reduced = loss_dict
        losses_reduced = sum(loss for loss in loss_dict_reduced.values())
        loss_value = losses_reduced.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"Loss is {loss_value}, stopping training: {loss_dict_reduced}")
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(losses).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            losses.backward()
            optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        logged = {"loss": losses_reduced.item(), **{k: v.item() for k, v in loss_dict_reduced.items()}}
        logged["lr"] = optimizer.param_groups[0]["lr"]
    return logged


# --- GPU mode: variants ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One way to run a training step; ``raypose`` with no lever changed is raypose's default."""

    name: str
    loop: str  # "reference" or "raypose"
    amp: str | None = "float16"  # autocast dtype: None (fp32), "float16", "bfloat16"
    channels_last: bool = False
    cudnn_benchmark: bool = True
    fused: bool | None = None  # None: raypose's default (fused on CUDA)
    pin: bool = True
    tf32_matmul: bool = False
    compile_backbone: bool = False

    def levers(self) -> str:
        default = RAYPOSE
        changed = [f"{k}={v}" for k, v in asdict(self).items() if k not in ("name", "loop") and v != getattr(default, k)]
        return ", ".join(changed) or "defaults"


RAYPOSE = Variant("raypose", "raypose")
REFERENCE_FP32 = Variant("reference_fp32", "reference", amp=None, cudnn_benchmark=False, fused=False, pin=False)
REFERENCE_AMP = replace(REFERENCE_FP32, name="reference_amp", amp="float16")
LEVERS = [
    replace(RAYPOSE, name="raypose_fp32", amp=None),
    replace(RAYPOSE, name="raypose_fp32_tf32", amp=None, tf32_matmul=True),
    replace(RAYPOSE, name="raypose_bf16", amp="bfloat16"),
    replace(RAYPOSE, name="raypose_channels_last", channels_last=True),
    replace(RAYPOSE, name="raypose_no_cudnn_benchmark", cudnn_benchmark=False),
    replace(RAYPOSE, name="raypose_unfused", fused=False),
    replace(RAYPOSE, name="raypose_unpinned", pin=False),
]
COMPILE = replace(RAYPOSE, name="raypose_compile", compile_backbone=True)
VARIANTS = {v.name: v for v in [REFERENCE_FP32, REFERENCE_AMP, RAYPOSE, *LEVERS, COMPILE]}


def _build(variant: Variant, sizes: Sizes, device):
    import torch

    from raypose.model import ModelConfig, build_model
    from raypose.training.config import OptimConfig
    from raypose.training.loop import place_model
    from raypose.training.optim import build_optimizer

    torch.manual_seed(0)
    model = place_model(build_model(ModelConfig(**sizes.model)), device,
                        channels_last=variant.channels_last, compile_backbone=variant.compile_backbone)
    if variant.loop == "reference":  # references/detection/train.py: SGD over the trainable parameters
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=sizes.lr, momentum=0.9, weight_decay=1e-4)
    else:
        optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=sizes.lr), fused=variant.fused)
    return model, optimizer


def _run_steps(variant: Variant, model, optimizer, batches: list, device, epoch: int) -> None:
    import torch

    from raypose.training.config import ScheduleConfig
    from raypose.training.loop import train_one_epoch
    from raypose.training.optim import build_scheduler

    amp_dtype = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16}[variant.amp]
    if variant.loop == "reference":
        scaler = torch.amp.GradScaler(device.type) if variant.amp else None
        reference_train_one_epoch(model, optimizer, batches, device, epoch, print_freq=20, scaler=scaler)
        return
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="constant"), len(batches), 1)
    train_one_epoch(model, optimizer, scheduler, batches, device, epoch=epoch, scaler=scaler,
                    amp_dtype=amp_dtype, cudnn_benchmark=variant.cudnn_benchmark)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(variant: Variant, batch: int, sizes: Sizes, device) -> dict:
    """images/s and peak GPU memory of ``variant`` at ``batch`` (a dict with ``error`` on failure)."""
    import torch

    row = {"variant": variant.name, "loop": variant.loop, "batch": batch, "amp": variant.amp or "fp32",
           "levers": variant.levers() if variant.loop == "raypose" else "torchvision reference"}
    if variant.amp == "float16" and device.type == "cpu":  # float16 + GradScaler is the CUDA path
        row["amp"] = "bfloat16 (CPU stand-in)"  # the reference's CPU autocast is bfloat16 too
        if variant.loop == "raypose":
            variant = replace(variant, amp="bfloat16")
    steps = max(3, -(-sizes.timed_images // batch))
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = variant.tf32_matmul
    model = optimizer = None
    try:
        model, optimizer = _build(variant, sizes, device)
        warm = make_batches(sizes.warmup_steps, batch, sizes, seed=1, pin=variant.pin and device.type == "cuda")
        timed = make_batches(steps, batch, sizes, seed=2, pin=variant.pin and device.type == "cuda")
        torch.manual_seed(0)  # the transform's random min_size: the same sequence for every variant
        _run_steps(variant, model, optimizer, warm, device, epoch=0)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        _run_steps(variant, model, optimizer, timed, device, epoch=1)
        _sync(device)
        seconds = time.perf_counter() - start
        row.update(steps=steps, seconds=round(seconds, 3), images_per_s=round(steps * batch / seconds, 2))
        if device.type == "cuda":
            row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
    except Exception as e:  # one failing lever must not cost the other measurements
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        del model, optimizer
        torch.backends.cuda.matmul.allow_tf32 = False
        _free(device)
    return row


def largest_batch(sizes: Sizes, device) -> tuple[int, list[dict]]:
    """The largest power-of-2 batch (>= 2) for which two fp32 reference steps on the largest images
    fit; fp32 needs the most memory of the measured variants, so every variant fits it."""
    import torch

    tries, fits, batch = [], 2, 4
    while batch <= sizes.max_batch:
        model = optimizer = None
        try:
            model, optimizer = _build(REFERENCE_FP32, sizes, device)
            model.transform.min_size = (max(model.transform.min_size),)
            batches = make_batches(2, batch, sizes, seed=3, pin=False, largest=True)
            reference_train_one_epoch(model, optimizer, batches, device, epoch=1, print_freq=20)
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            tries.append({"batch": batch, "fits": True, "peak_gpu_memory_gib": peak and round(peak, 2)})
            fits = batch
        except torch.OutOfMemoryError:
            tries.append({"batch": batch, "fits": False})
            break
        finally:
            del model, optimizer
            _free(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        batch *= 2
    return fits, tries


# --- GPU mode: raypose train --local against Ray Train, through the CLI ---------------------------


def cli_comparison(sizes: Sizes, device, work: Path, timeout_s: float) -> dict:
    """``raypose train --local`` and ``raypose train`` (Ray Train, one worker) on the same data
    set on disk; images/s of each epoch's training loop, read back from the last checkpoint."""
    import yaml

    from raypose.data.synth import generate_synthetic_dataset, prepare_dataset

    root = work / "synth"
    if not (root / "annotations").is_dir():
        generate_synthetic_dataset(root, sizes.cli_images, 2, seed=0, image_size=sizes.image_sides)
        prepare_dataset(root)
    config = {
        "name": "bench", "storage_path": str(work / "runs"), "epochs": sizes.cli_epochs, "batch_size": 2,
        "amp": True, "log_every": 20, "eval_every": 1000, "eval_batch_size": 2,
        "keep_checkpoints": sizes.cli_epochs,  # all: Ray keeps the best by oks_map, not the newest
        "cpus_per_worker": max(1, sizes.loader_workers + 1),
        "model": sizes.model,
        "data": {"root": str(root), "kind": "synthetic", "loader_workers": sizes.loader_workers, "val_limit": 2},
        "optim": {"name": "sgd", "lr": sizes.lr}, "schedule": {"name": "constant"}, "mlflow": {"enabled": False},
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    gpu = "'yes'" if device.type == "cuda" else "'no'"
    runs = {  # result key: (run name, CLI arguments)
        "local": ("local", ["--local"]),
        "ray_1_worker": ("ray", ["--set", "workers=1", "--set", f"use_gpu={gpu}"]),
    }
    env = {**os.environ, "RAYPOSE_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    out: dict = {"images_per_epoch": sizes.cli_images, "epochs": sizes.cli_epochs, "batch": 2,
                 "loader_workers": sizes.loader_workers}
    for name, (run_name, args) in runs.items():
        start = time.perf_counter()
        command = [sys.executable, "-m", "raypose", "train", str(path), "--set", f"name={run_name}", *args]
        proc = subprocess.run(command, env=env, cwd=work,
                              capture_output=True, text=True, timeout=timeout_s)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            out[name] = {"error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}
            continue
        history = _last_history(work / "runs" / run_name)
        warm = history[1:] or history  # the first epoch holds the warm-up
        out[name] = {
            "wall_s": round(wall, 1),
            "images_per_s_by_epoch": [round(m["images_per_s"], 2) for m in history],
            "images_per_s": round(sum(m["images_per_s"] for m in warm) / len(warm), 2),
            "peak_gpu_memory_gib": round(max(m.get("gpu_memory_peak_gib", 0.0) for m in history), 2) or None,
        }
    local, ray = out["local"].get("images_per_s"), out["ray_1_worker"].get("images_per_s")
    if local and ray:
        out["ray_overhead_pct"] = round(100 * (1 - ray / local), 2)
    return out


def _last_history(run_dir: Path) -> list[dict]:
    """The per-epoch metrics saved in a run's newest checkpoint (local and Ray layouts alike)."""
    from raypose.checkpoint import load_checkpoint

    found = sorted(run_dir.rglob("epoch_*/checkpoint.pth"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not found:
        raise FileNotFoundError(f"no checkpoint.pth under {run_dir}")
    return load_checkpoint(found[-1])["history"]


# --- GPU mode: the whole run ------------------------------------------------------------------------


@dataclass
class Report:
    """What a ``--gpu``/``--smoke`` run found; written after every measurement."""

    out_dir: Path
    info: dict
    rows: list[dict] = field(default_factory=list)
    batch_search: list[dict] = field(default_factory=list)
    cli: dict | None = None
    skipped: list[str] = field(default_factory=list)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.write()

    def write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {**self.info, "measurements": self.rows, "largest_batch_search": self.batch_search,
                   "cli_local_vs_ray": self.cli, "skipped": self.skipped}
        _write_atomic(self.out_dir / "bench_train.json", json.dumps(payload, indent=2))
        _write_atomic(self.out_dir / "bench_train.md", self.markdown())

    def markdown(self) -> str:
        lines = [f"## Training throughput: {self.info['device_name']}", "",
                 f"{self.info['model']}; images {self.info['images']}; warm-up steps excluded.", "",
                 "| variant | batch | precision | levers | images/s | vs reference fp32 | vs reference amp | peak GPU GiB |",
                 "|---|---|---|---|---|---|---|---|"]
        base = {(r["variant"], r["batch"]): r.get("images_per_s") for r in self.rows}
        for r in self.rows:
            ips = r.get("images_per_s")
            ratios = []
            for ref in ("reference_fp32", "reference_amp"):
                b = base.get((ref, r["batch"]))
                ratios.append(f"{ips / b:.2f}x" if ips and b else "-")
            value = f"{ips:.2f}" if ips else r.get("error", "-")
            lines.append(f"| {r['variant']} | {r['batch']} | {r['amp']} | {r['levers']} | {value} | "
                         f"{ratios[0]} | {ratios[1]} | {r.get('peak_gpu_memory_gib', '-')} |")
        if self.cli:
            lines += ["", "`raypose train --local` vs Ray Train, 1 worker (same data on disk, batch 2, "
                      f"loader workers {self.cli['loader_workers']}, mean of epochs 2..{self.cli['epochs']}):", "",
                      "| run | images/s | per epoch | peak GPU GiB | wall s |", "|---|---|---|---|---|"]
            for name in ("local", "ray_1_worker"):
                r = self.cli.get(name, {})
                lines.append(f"| {name} | {r.get('images_per_s', r.get('error', '-'))} | "
                             f"{r.get('images_per_s_by_epoch', '-')} | {r.get('peak_gpu_memory_gib', '-')} | {r.get('wall_s', '-')} |")
            if "ray_overhead_pct" in self.cli:
                lines += ["", f"Ray Train overhead: {self.cli['ray_overhead_pct']} % (target <= 3 %)."]
        if self.skipped:
            lines += ["", "Skipped: " + "; ".join(self.skipped)]
        return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def gpu_benchmark(sizes: Sizes, device, out_dir: Path, budget_s: float, variants: list[Variant],
                  skip_cli: bool = False, skip_max_batch: bool = False) -> Report:
    """Run the measurements in order of importance until ``budget_s`` is spent."""
    import torch

    deadline = time.monotonic() + budget_s
    model_name = f"KeypointRCNN {sizes.model['backbone']}-FPN, {sizes.model.get('num_keypoints', 23)} keypoints, no pretrained weights"
    info = {
        "device": device.type, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__, "model": model_name,
        "images": f"{sizes.image_sides[0]}-{sizes.image_sides[1]} px sides, {sizes.people[0]}-{sizes.people[1]} people, in memory",
    }
    report = Report(out_dir, info)

    def time_left(what: str, need_s: float) -> bool:
        if time.monotonic() + need_s > deadline:
            report.skipped.append(f"{what} (time budget)")
            report.write()
            return False
        return True

    core = [v for v in variants if v.name in ("reference_fp32", "reference_amp", "raypose")]
    levers = [v for v in variants if v not in core]
    for variant in core:
        if time_left(f"{variant.name} at batch 2", 10):
            report.add(measure(variant, 2, sizes, device))
    if not skip_cli and time_left("raypose train --local vs Ray Train", 60):
        with tempfile.TemporaryDirectory(prefix="raypose-bench-cli-") as work:
            try:
                report.cli = cli_comparison(sizes, device, Path(work), timeout_s=max(30.0, (deadline - time.monotonic()) / 2))
            except Exception as e:  # recorded; the other measurements go on
                report.cli = {"error": f"{type(e).__name__}: {e}"}
            report.write()
    if not skip_max_batch and time_left("largest batch", 30):
        big, report.batch_search = largest_batch(sizes, device)
        report.write()
        if big > 2:
            for variant in core:
                if time_left(f"{variant.name} at batch {big}", 20):
                    report.add(measure(variant, big, sizes, device))
    for variant in levers:
        if time_left(f"{variant.name} at batch 2", 15):
            report.add(measure(variant, 2, sizes, device))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32, help="training images (CPU mode)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (CPU mode)")
    parser.add_argument("--gpu", action="store_true", help="the R50-FPN benchmark on one CUDA GPU")
    parser.add_argument("--smoke", action="store_true",
                        help="the --gpu benchmark's code paths with tiny sizes, on CPU unless CUDA is there")
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out"),
                        help="folder for bench_train.json and bench_train.md (default $OUT or benchmarks/out)")
    parser.add_argument("--budget-s", type=float, default=210.0,
                        help="seconds for the --gpu/--smoke measurements; what does not fit is listed as skipped")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated subset of: {', '.join(VARIANTS)} (default: all but raypose_compile)")
    parser.add_argument("--compile", action="store_true", help="also measure raypose_compile (torch.compile of the backbone)")
    parser.add_argument("--skip-ray", action="store_true", help="leave out the raypose train --local vs Ray Train runs")
    parser.add_argument("--skip-max-batch", action="store_true", help="measure at batch 2 only")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not (args.gpu or args.smoke):
        print(json.dumps(cpu_benchmark(args.images, args.epochs), indent=2))
        return

    import torch

    logging.basicConfig(level=logging.WARNING)
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA device (torch.cuda.is_available() is False); use --smoke on CPU")
    names = args.variants.split(",") if args.variants else [n for n in VARIANTS if n != COMPILE.name]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"--variants: unknown {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    if args.compile and COMPILE.name not in names:
        names.append(COMPILE.name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = GPU_SIZES if args.gpu and not args.smoke else SMOKE_SIZES
    report = gpu_benchmark(sizes, device, Path(args.out), args.budget_s, [VARIANTS[n] for n in names],
                           skip_cli=args.skip_ray, skip_max_batch=args.skip_max_batch)
    print(report.markdown())
    failed = [r["variant"] for r in report.rows if "error" in r and r["error"] != "out of memory"]
    if failed or (report.cli and ("error" in report.cli or any("error" in v for v in report.cli.values() if isinstance(v, dict)))):
        sys.exit(f"some measurements failed: {failed or 'the CLI comparison'}; see {args.out}/bench_train.json")


if __name__ == "__main__":
    main()
