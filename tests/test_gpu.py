"""GPU checks (issue 13 Part B, issue 12 item 11), run by ``benchmarks/gpu_check.sh`` as ``pytest -m gpu``.

Every test skips where ``torch.cuda.is_available()`` is False. Nothing is downloaded: no
pretrained weights, data made by raypose's synthetic generator, CLI runs under RAYPOSE_OFFLINE=1.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raypose.checkpoint import load_checkpoint, save_checkpoint
from raypose.model import ModelConfig, build_model
from raypose.training.config import OptimConfig, ScheduleConfig
from raypose.training.loop import predict_loader, train_one_epoch
from raypose.training.optim import build_optimizer, build_scheduler

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

REPO = Path(__file__).resolve().parents[1]
R50 = {"backbone": "resnet50", "weights": None, "backbone_weights": None, "min_size": [800], "max_size": 1333}
TINY = {
    "backbone": "resnet18", "weights": None, "backbone_weights": None, "norm": "batch",
    "keypoint_head_channels": [64, 64, 64, 64], "box_head_size": 256, "box_batch_size_per_image": 64,
    "rpn_post_nms_top_n_train": 300, "min_size": [160], "max_size": 256,
}


def people_batch(batch: int, height: int, width: int, seed: int = 0):
    """Images (3, H, W) in [0, 1] with two people each: boxes xyxy and 23 (x, y, 2) keypoints inside."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, height, width, generator=g))
        x0 = torch.rand(2, 1, generator=g) * (width * 0.6)
        y0 = torch.rand(2, 1, generator=g) * (height * 0.3)
        size = torch.tensor([[width * 0.3, height * 0.6]])
        xy = torch.cat([x0, y0], 1)[:, None] + torch.rand(2, 23, 2, generator=g) * size
        boxes = torch.cat([xy.min(1).values - 4, xy.max(1).values + 4], 1)
        keypoints = torch.cat([xy, torch.full((2, 23, 1), 2.0)], -1)
        targets.append({"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "keypoints": keypoints})
    return images, targets


def cli_env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "RAYPOSE_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "MPLBACKEND": "Agg"}


def run_cli(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "raypose", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"raypose {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def checkpoints_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("checkpoint.pth"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_amp_training_step_has_a_finite_loss(dtype):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**R50)).to(device)
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.002))
    assert all(group["fused"] for group in optimizer.param_groups)  # the CUDA default
    loader = [people_batch(2, 800, 1067, seed=s) for s in range(2)]
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="constant"), len(loader), 1)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    before = model.roi_heads.keypoint_predictor.kps_score_lowres.weight.detach().clone()
    metrics = train_one_epoch(model, optimizer, scheduler, loader, device, scaler=scaler, amp_dtype=dtype, log_every=0)
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    assert all(math.isfinite(metrics[k]) for k in ("loss_classifier", "loss_box_reg", "loss_keypoint"))
    assert not torch.equal(before, model.roi_heads.keypoint_predictor.kps_score_lowres.weight)
    assert 0 < metrics["gpu_memory_peak_gib"] < 80


def _train_tiny_on_gpu(steps: int = 2):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY)).to(device)
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.002))
    loader = [people_batch(2, 160, 224, seed=s) for s in range(steps)]
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="constant"), steps, 1)
    scaler = torch.amp.GradScaler("cuda")
    train_one_epoch(model, optimizer, scheduler, loader, device, scaler=scaler, log_every=0)
    return model, optimizer, scheduler, scaler


LOAD_ON_CPU = """
import json, sys, torch
from raypose.checkpoint import load_checkpoint, load_model_from_checkpoint
from raypose.training.config import OptimConfig
from raypose.training.optim import build_optimizer
assert not torch.cuda.is_available()
ckpt = load_checkpoint(sys.argv[1])
model, _ = load_model_from_checkpoint(sys.argv[1], device="cpu")
sums = {k: v.double().sum().item() for k, v in model.state_dict().items()}
devices = sorted({str(v.device) for v in model.state_dict().values()})
out = model([torch.rand(3, 160, 224)])[0]
opt = build_optimizer(model.train(), OptimConfig(name="sgd", lr=0.002))  # a resume on CPU
opt.load_state_dict(ckpt["optimizer"])
for p in model.parameters():
    p.grad = torch.ones_like(p)
opt.step()
print(json.dumps({"sums": sums, "devices": devices, "boxes_dtype": str(out["boxes"].dtype)}))
"""


def test_checkpoint_saved_on_gpu_loads_on_a_cpu_only_machine(tmp_path):
    model, optimizer, scheduler, scaler = _train_tiny_on_gpu()
    path = save_checkpoint(tmp_path / "checkpoint.pth", model, ModelConfig(**TINY), epoch=1,
                           optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict())
    # CUDA hidden from the child: the loader must map every CUDA tensor (optimizer state too) to the CPU
    env = {**cli_env(), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", LOAD_ON_CPU, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["devices"] == ["cpu"] and loaded["boxes_dtype"] == "torch.float32"
    expected = {k: v.double().sum().item() for k, v in model.state_dict().items()}
    assert loaded["sums"] == expected  # bit-identical tensors
    assert load_checkpoint(path)["scaler"]["scale"] > 0


def test_cpu_saved_optimizer_state_resumes_fused_with_amp_on_gpu():
    """A run started on CPU (foreach SGD state) resumed on a GPU: fused optimizer + GradScaler."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY))
    cpu_opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.002))
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    cpu_opt.step()
    state = cpu_opt.state_dict()
    device = torch.device("cuda")
    model = model.to(device)
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.002))
    optimizer.load_state_dict(state)
    assert all(group["fused"] for group in optimizer.param_groups)
    loader = [people_batch(2, 160, 224, seed=s) for s in range(2)]
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="constant"), 2, 1)
    metrics = train_one_epoch(model, optimizer, scheduler, loader, device, scaler=torch.amp.GradScaler("cuda"), log_every=0)
    assert math.isfinite(metrics["train_loss"])


def test_fp32_and_amp_evaluation_agree(tmp_path):
    """Issue 12 item 11: AP with ``amp=True`` (float16 backbone, float32 decoding) within 0.001 of fp32.

    The tiny model overfits 16 synthetic images so that AP is far from 0 and the comparison means
    something; the whole-model float16 AP (what evaluation did before) is printed for the record.
    """
    from torch.utils.data import DataLoader

    from raypose.data.dataset import KeypointDataset, collate_fn
    from raypose.data.synth import generate_synthetic_dataset, prepare_dataset
    from raypose.evaluation.cocoeval import evaluate_keypoints, outputs_to_coco_results

    generate_synthetic_dataset(tmp_path / "synth", 16, 1, seed=0)
    ann = prepare_dataset(tmp_path / "synth")["train"]
    images = tmp_path / "synth" / "train2017"
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY)).to(device)
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=0.001))
    train = DataLoader(KeypointDataset(ann, images, train=True), batch_size=4, shuffle=True, collate_fn=collate_fn)
    epochs = 60
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="onecycle"), len(train), epochs)
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(epochs):
        train_one_epoch(model, optimizer, scheduler, train, device, epoch=epoch, scaler=scaler, log_every=0)
    evaluation = DataLoader(KeypointDataset(ann, images, train=False), batch_size=4, collate_fn=collate_fn)

    def ap(outputs, ids) -> float:
        return evaluate_keypoints(ann, outputs_to_coco_results(outputs, ids), per_keypoint=False).stats["AP"]

    fp32 = ap(*predict_loader(model, evaluation, device, amp=False))
    amp = ap(*predict_loader(model, evaluation, device, amp=True))
    with torch.autocast("cuda", dtype=torch.float16):  # the old way: every layer and the decoding in float16
        whole = ap(*predict_loader(model, evaluation, device, amp=False))
    print(f"AP fp32 {fp32:.5f}, amp (float16 backbone) {amp:.5f}, whole-model float16 {whole:.5f}")
    assert fp32 > 0.1, f"the model did not learn (AP {fp32:.4f}): the comparison would mean nothing"
    assert abs(amp - fp32) < 0.001, (
        f"amp evaluation moves AP by {amp - fp32:+.5f} (fp32 {fp32:.5f}): make predict_loader ignore amp"
    )


def test_raypose_train_local_one_short_epoch_on_cuda(tmp_path):
    run_cli([
        "train", str(REPO / "configs" / "synthetic_tiny.yaml"), "--local",
        "--set", "name=gpu-local", "--set", "epochs=1", "--set", "amp=true",
        "--set", f"storage_path={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'synth'}",
        "--set", "data.synth.train=8", "--set", "data.synth.val=4",
        "--set", "data.train_limit=8", "--set", "data.val_limit=4", "--set", "mlflow.enabled=false",
    ], cwd=tmp_path, timeout=180)
    found = checkpoints_under(tmp_path / "runs" / "gpu-local")
    assert found, "no checkpoint written"
    ckpt = load_checkpoint(found[-1])
    metrics = ckpt["history"][-1]
    # only a CUDA run reports GPU memory and has an enabled GradScaler (with a scale) to save
    assert metrics["gpu_memory_peak_gib"] > 0 and ckpt["scaler"]["scale"] > 0
    assert math.isfinite(metrics["train_loss"]) and metrics["images"] == 8 and "oks_map" in metrics


def test_one_trial_search_with_one_gpu_worker(tmp_path):
    run_cli([
        "tune", str(REPO / "search_spaces" / "quickstart.yaml"),
        "--set", "tune.name=gpu-search", "--set", "tune.num_samples=1", "--set", "tune.baseline=false",
        "--set", "tune.max_concurrent=1", "--set", "tune.asha.enabled=false", "--set", "tune.final_analysis=false",
        "--set", "tune.max_failures=0", "--set", f"tune.storage_path={tmp_path / 'tune'}",
        "--set", "use_gpu='yes'", "--set", "workers=1", "--set", "amp=true", "--set", "epochs=1",
        "--set", f"storage_path={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'synth'}",
        "--set", "data.synth.train=8", "--set", "data.synth.val=4",
        "--set", "data.train_limit=8", "--set", "data.val_limit=4", "--set", "mlflow.enabled=false",
    ], cwd=tmp_path, timeout=300)
    found = checkpoints_under(tmp_path / "tune")
    assert found, "the search wrote no checkpoint"
    for path in found:
        ckpt = load_checkpoint(path)
        if "history" in ckpt:  # a trial's training checkpoint (best/ may hold a copy)
            assert ckpt["history"][-1]["gpu_memory_peak_gib"] > 0 and ckpt["scaler"]["scale"] > 0
            break
    else:
        pytest.fail(f"no training checkpoint among {found}")
