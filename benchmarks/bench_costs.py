"""What a search costs in storage and time (not a test): the figures of the README's "Costs at scale".

1. Checkpoint bytes of each searched recipe: KeypointRCNN with 23 keypoints on ResNet-50 and
   ResNet-152, SGD (one momentum buffer per trained weight) and AdamW (two moments), with the
   freezing depths the search draws; one optimizer step taken so the optimizer state exists, then
   written with raypose's ``save_checkpoint`` (what a Train checkpoint folder holds).
2. Upload time of the ResNet-50 + SGD checkpoint: to a local folder, and to S3 through pyarrow
   (what Ray Train uses) on a moto server on loopback (an upper bound: no network in between).
3. How long training waits for a checkpoint per epoch, synchronous against asynchronous upload:
   ``raypose train`` on Ray Train (one worker, the tiny CPU model) with its storage in moto S3,
   read back from the run's MLflow metrics ``checkpoint_wait_s`` and ``checkpoint_upload_s``.
4. Seconds per training image of ResNet-50 KeypointRCNN at COCO's size (800 x 1067 px, 3 people)
   here, on CPU: the per-image figure the GPU-hours estimate is worked out from (``--s-per-image``
   gives a GPU's figure instead, e.g. from ``benchmarks/bench_train.py --gpu``).
5. The GPU-hours of a 32-trial ``search_spaces/onecycle.yaml`` search from that figure:
   images x epochs x trials x (1 - ASHA's saving) x seconds per image x workers per trial.

Prints a JSON document and writes it to ``--out`` (default ``benchmarks/out/bench_costs.json``).

Usage::

    python benchmarks/bench_costs.py [--skip-train] [--s-per-image 0.11] [--asha-saved 0.125]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# COCO train2017 images with at least one person with keypoints (person_keypoints_train2017.json)
COCO_TRAIN_IMAGES = 64_115


def checkpoint_bytes(backbone: str, optim: str, freeze: str, folder: Path) -> tuple[int, int]:
    """(checkpoint bytes, trainable parameters) of one recipe, written to ``folder``."""
    from raypose.checkpoint import save_checkpoint
    from raypose.model import ModelConfig, build_model
    from raypose.training.config import OptimConfig
    from raypose.training.optim import build_optimizer

    config = ModelConfig(backbone=backbone, weights=None, backbone_weights=None, freeze=freeze,
                         trainable_backbone_layers=3)
    model = build_model(config)
    optimizer = build_optimizer(model, OptimConfig(name=optim, lr=0.01), fused=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    path = save_checkpoint(folder / "checkpoint.pth", model, config, epoch=1, optimizer=optimizer.state_dict(),
                           history=[], metrics={})
    return path.stat().st_size, sum(p.numel() for p in trainable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, dict[str, str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="costs")
    return proc, env


def upload_seconds(folder: Path) -> dict[str, float]:
    from pyarrow import fs

    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    out = {}
    with tempfile.TemporaryDirectory() as dest:
        start = time.perf_counter()
        local = fs.LocalFileSystem()
        local.create_dir(f"{dest}/ckpt")
        fs.copy_files(str(folder), f"{dest}/ckpt", source_filesystem=local, destination_filesystem=local)
        out["local_s"] = time.perf_counter() - start
    s3, path = fs.FileSystem.from_uri("s3://costs/ckpt")
    start = time.perf_counter()
    fs.copy_files(str(folder), path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=s3)
    out["s3_loopback_s"] = time.perf_counter() - start
    out["s3_loopback_mb_per_s"] = size / 1e6 / out["s3_loopback_s"]
    return out


def train_waits(env: dict[str, str], work: Path) -> dict[str, dict[str, float]]:
    """Per epoch, seconds training waited for its checkpoint (sync vs async) on Ray Train to moto S3."""
    import yaml
    from bench_train import TINY_MODEL  # this folder is on sys.path when run as a script
    from mlflow.tracking import MlflowClient

    results = {}
    for mode in ("sync", "async"):
        uri = f"sqlite:///{work / f'mlflow-{mode}.db'}"
        config = {
            "name": f"costs-{mode}", "storage_path": "s3://costs/train", "epochs": 3, "batch_size": 2, "amp": False,
            "workers": 1, "cpus_per_worker": 1, "use_gpu": False, "checkpoint_upload": mode, "model": TINY_MODEL,
            "data": {"kind": "synthetic", "root": str(work / "synth"), "loader_workers": 0, "train_limit": 8,
                     "val_limit": 4, "synth": {"train": 8, "val": 4, "image_size": [128, 192]}},
            "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "costs"},
        }
        path = work / f"{mode}.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.run([sys.executable, "-m", "raypose", "train", str(path)], cwd=work,
                              env={**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0"}, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"raypose train ({mode}) failed:\n{proc.stderr[-3000:]}")
        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("costs").experiment_id])[0]
        history = {key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
                   for key in ("checkpoint_wait_s", "checkpoint_upload_s", "checkpoint_mb")}
        results[mode] = {
            "wait_s_per_epoch": history["checkpoint_wait_s"],
            "upload_s": history["checkpoint_upload_s"],
            "checkpoint_mb": history["checkpoint_mb"][-1] if history["checkpoint_mb"] else None,
        }
    return results


def r50_seconds_per_image(steps: int = 3) -> float:
    """One training step of ResNet-50 KeypointRCNN (23 keypoints, untrained) on an 800 x 1067 image
    with 3 people, on this machine's CPU; the mean of ``steps`` after a warm-up step."""
    from raypose.model import ModelConfig, build_model
    from raypose.training.config import OptimConfig
    from raypose.training.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet50", weights=None, backbone_weights=None,
                                    trainable_backbone_layers=3, min_size=[800]))
    model.train()
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.001), fused=False)
    image = torch.rand(3, 800, 1067)
    boxes = torch.tensor([[100.0, 100.0, 300.0, 700.0], [400.0, 150.0, 600.0, 750.0], [700.0, 120.0, 900.0, 700.0]])
    keypoints = torch.zeros(3, 23, 3)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        keypoints[i, :, 0] = torch.linspace(x0 + 10, x1 - 10, 23)
        keypoints[i, :, 1] = torch.linspace(y0 + 10, y1 - 10, 23)
        keypoints[i, :, 2] = 2
    target = {"boxes": boxes, "labels": torch.ones(3, dtype=torch.int64), "keypoints": keypoints}
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = sum(model([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def onecycle_gpu_hours(s_per_image: float, asha_saved: float, trials: int = 32, epochs: int = 26,
                       images: int = COCO_TRAIN_IMAGES) -> dict[str, float]:
    """GPU-hours of the search: every trial-epoch trains ``images`` images (split over the trial's
    GPUs, so the GPU-seconds do not depend on how many), less what ASHA stops."""
    full = trials * epochs * images * s_per_image / 3600
    return {"trials": trials, "epochs": epochs, "images_per_epoch": images, "s_per_image": s_per_image,
            "asha_saved": asha_saved, "gpu_hours_without_asha": full, "gpu_hours": full * (1 - asha_saved)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "bench_costs.json"))
    parser.add_argument("--skip-train", action="store_true", help="skip the Ray Train sync/async runs")
    parser.add_argument("--s-per-image", type=float, help="GPU seconds per training image (default: measure CPU)")
    parser.add_argument("--asha-saved", type=float, default=0.125,
                        help="fraction of trial-epochs ASHA stops (default: the quickstart's measured 2 of 16)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    report: dict = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}"}
    moto, env = start_moto()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            sizes = {}
            for backbone in ("resnet50", "resnet152"):
                for optim in ("sgd", "adamw"):
                    for freeze in ("none", "backbone"):
                        folder = work / f"{backbone}-{optim}-{freeze}"
                        folder.mkdir()
                        size, trainable = checkpoint_bytes(backbone, optim, freeze, folder)
                        sizes[f"{backbone}+{optim}+freeze={freeze}"] = {"bytes": size, "trainable_params": trainable}
                        print(f"{backbone} {optim} freeze={freeze}: {size / 1e9:.3f} GB", flush=True)
                        if (backbone, optim, freeze) != ("resnet50", "sgd", "none"):
                            shutil.rmtree(folder)
            report["checkpoint_bytes"] = sizes
            report["upload_r50_sgd"] = upload_seconds(work / "resnet50-sgd-none")
            print(json.dumps(report["upload_r50_sgd"]), flush=True)
            if not args.skip_train:
                report["train_waits"] = train_waits(env, work)
                print(json.dumps(report["train_waits"]), flush=True)
    finally:
        os.killpg(moto.pid, 15)
    measured = args.s_per_image is None
    s_per_image = r50_seconds_per_image() if measured else args.s_per_image
    report["r50_s_per_image"] = {"value": s_per_image, "where": "this CPU, measured" if measured else "given"}
    report["onecycle"] = onecycle_gpu_hours(s_per_image, args.asha_saved)
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
