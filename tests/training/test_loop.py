"""The training loop: gradient accumulation, non-finite losses, activation statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raypose.errors import TrainingError
from raypose.training.activations import ActivationStats
from raypose.training.config import OptimConfig, ScheduleConfig
from raypose.training.loop import train_one_epoch
from raypose.training.optim import build_optimizer, build_scheduler


class ToyDetector(nn.Module):
    """Deterministic stand-in with the detection interface: images + targets in, a loss dict out.

    Like torchvision's detection losses, each loss is a mean over the images of the batch.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, images, targets):
        pred = self.net(torch.stack(images))
        goal = torch.stack([t["goal"] for t in targets])
        return {"loss_a": ((pred - goal) ** 2).mean(), "loss_b": pred.abs().mean() * 0.1}


def data(n: int, batch: int):
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(3, 2, 2, generator=g) for _ in range(n)]
    goals = [torch.randn(2, generator=g) for _ in range(n)]
    return [([images[i + j] for j in range(batch)], [{"goal": goals[i + j]} for j in range(batch)]) for i in range(0, n, batch)]


def train(batch: int, accumulate: int, optim: str, steps: int = 3):
    model = ToyDetector()
    opt = build_optimizer(model, OptimConfig(name=optim, lr=0.05, weight_decay=0.01))
    loader = data(4 * steps, batch)
    sched = build_scheduler(opt, ScheduleConfig(name="onecycle"), len(loader) // accumulate, 1)
    metrics = train_one_epoch(model, opt, sched, loader, torch.device("cpu"), accumulate=accumulate, log_every=0)
    return model, metrics


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_two_micro_batches_equal_one_double_batch(optim):
    big, m_big = train(batch=4, accumulate=1, optim=optim)
    acc, m_acc = train(batch=2, accumulate=2, optim=optim)
    for p_big, p_acc in zip(big.parameters(), acc.parameters()):
        torch.testing.assert_close(p_acc, p_big, rtol=1e-5, atol=1e-6)
    assert m_big["optimizer_steps"] == m_acc["optimizer_steps"] == 3
    assert m_acc["lr"] == pytest.approx(m_big["lr"])
    assert m_acc["train_loss"] == pytest.approx(m_big["train_loss"], rel=1e-5)
    # and accumulation is not a no-op: one micro-batch per step is a different update
    small, _ = train(batch=2, accumulate=1, optim=optim, steps=3)
    assert not torch.allclose(next(small.parameters()), next(big.parameters()))


def test_trailing_partial_group_is_dropped():
    model = ToyDetector()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.01))
    sched = build_scheduler(opt, ScheduleConfig(name="constant"), 2, 1)
    metrics = train_one_epoch(model, opt, sched, data(10, 2), torch.device("cpu"), accumulate=2, log_every=0)
    assert metrics["optimizer_steps"] == 2 and metrics["images"] == 8


def test_non_finite_loss_fails_with_components():
    class Exploding(ToyDetector):
        def forward(self, images, targets):
            out = super().forward(images, targets)
            out["loss_b"] = out["loss_b"] * float("nan")
            return out

    model = Exploding()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.01))
    sched = build_scheduler(opt, ScheduleConfig(name="constant"), 1, 1)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 4, step 0: loss_a=[\d.]+, loss_b=nan"):
        train_one_epoch(model, opt, sched, data(2, 2), torch.device("cpu"), epoch=4, log_every=0)


def test_activation_stats_fraction_mean_std():
    relu = nn.Sequential(nn.Identity(), nn.ReLU())
    stats = ActivationStats(relu, ["1"])
    x = torch.tensor([[-1.0, 0.01, 0.5, 2.0]])
    relu(x)
    relu(x)
    out = stats.collect()
    # ReLU output [0, 0.01, 0.5, 2]: two of four are below 0.05
    assert out["act/1/near_zero"] == pytest.approx(0.5)
    assert out["act/1/mean"] == pytest.approx(2.51 / 4)
    assert out["act/1/std"] == pytest.approx(torch.tensor([0, 0.01, 0.5, 2.0]).std(unbiased=False).item(), rel=1e-5)
    assert stats.collect() == {}  # reset after collect
    relu.eval()
    relu(x)
    assert stats.collect() == {}  # only training passes count
    with pytest.raises(KeyError, match="no module named 'layer9'"):
        ActivationStats(relu, ["layer9"])


def test_non_finite_check_is_deferred_and_names_the_first_bad_step():
    from raypose.training.loop import _NonFiniteWatch

    watch = _NonFiniteWatch()
    parts = {"loss_a": torch.tensor(1.0), "loss_b": torch.tensor(2.0)}
    watch.add(0, torch.tensor(3.0), parts)
    watch.check(epoch=1)  # all finite: nothing pending afterwards
    assert watch.pending == []
    watch.add(1, torch.tensor(3.0), parts)
    watch.add(2, torch.tensor(float("inf")), {"loss_a": torch.tensor(float("inf")), "loss_b": torch.tensor(2.0)})
    watch.add(3, torch.tensor(float("nan")), {"loss_a": torch.tensor(1.0), "loss_b": torch.tensor(float("nan"))})
    with pytest.raises(TrainingError, match=r"epoch 5, step 2: loss_a=inf, loss_b=2"):
        watch.check(epoch=5)


def test_bfloat16_autocast_trains_without_a_scaler_and_float16_needs_one():
    model = ToyDetector()
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=0.05))
    loader = data(8, 2)
    sched = build_scheduler(opt, ScheduleConfig(name="constant"), len(loader), 1)
    before = next(model.parameters()).detach().clone()
    metrics = train_one_epoch(model, opt, sched, loader, torch.device("cpu"), log_every=0, amp_dtype=torch.bfloat16)
    assert metrics["optimizer_steps"] == 4 and 0 < metrics["train_loss"] < 10
    assert not torch.equal(before, next(model.parameters()))
    with pytest.raises(ValueError, match="float16 autocast needs an enabled GradScaler"):
        train_one_epoch(model, opt, sched, loader, torch.device("cpu"), log_every=0, amp_dtype=torch.float16)


# A KeypointRCNN small enough for CPU, on a 96 x 1100 strip: wide enough for x > 1024, where
# float16 spaces numbers 1 px apart and bfloat16 8 px.
STRIP_MODEL = {
    "backbone": "resnet18", "weights": None, "backbone_weights": None, "norm": "batch",
    "keypoint_head_channels": [32, 32], "box_head_size": 128, "min_size": [96], "max_size": 1100,
}


@pytest.fixture(scope="module")
def strip_model():
    from raypose.model import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(**STRIP_MODEL)).eval()


def _far_x(boxes: torch.Tensor) -> torch.Tensor:
    """Box x coordinates in (1024, 1099): past float16's 1-px spacing, not clipped to the edge."""
    x = boxes[:, [0, 2]].flatten()
    return x[(x > 1024) & (x < 1099)]


@torch.inference_mode()
def test_detect_decodes_boxes_in_float32_with_an_autocast_backbone(strip_model):
    from raypose.training.loop import detect

    images = [torch.rand(3, 96, 1100, generator=torch.Generator().manual_seed(2))]
    reference = strip_model(images)[0]
    plain = detect(strip_model, images)[0]
    for key, value in reference.items():  # without autocast: exactly torchvision's forward
        assert torch.equal(plain[key], value), key
    # bfloat16 on CPU stands in for float16 on GPU: the same autocast path, coarser rounding
    mixed = detect(strip_model, images, autocast_dtype=torch.bfloat16)[0]
    assert {k: v.dtype for k, v in mixed.items() if k != "labels"} == dict.fromkeys(
        ["boxes", "scores", "keypoints", "keypoints_scores"], torch.float32
    )
    far = _far_x(mixed["boxes"])
    assert len(far) > 5 and (far != far.round()).float().mean() > 0.9  # not on a 1-px (or 8-px) grid
    with torch.autocast("cpu", dtype=torch.bfloat16):  # whole-model autocast rounds: what detect avoids
        rounded = _far_x(strip_model(images)[0]["boxes"].float())
    assert len(rounded) > 5 and torch.all(rounded % 8 == 0)


def test_predict_loader_returns_float32_cpu_outputs(strip_model):
    from raypose.training.loop import predict_loader

    g = torch.Generator().manual_seed(3)
    loader = [([torch.rand(3, 96, 1100, generator=g)], [{"image_id": 7}])]
    outputs, ids = predict_loader(strip_model, loader, torch.device("cpu"), amp=True)
    assert ids == [7] and "labels" not in outputs[0]
    for key, value in outputs[0].items():
        assert value.dtype == torch.float32 and value.device.type == "cpu", key
    assert outputs[0]["keypoints"].shape[1:] == (23, 3)


@torch.inference_mode()
def test_place_model_channels_last_matches_and_compile_keeps_state_dict_keys(strip_model):
    import copy

    from raypose.training.loop import place_model

    images = [torch.rand(3, 96, 1100, generator=torch.Generator().manual_seed(4))]
    expected = strip_model(images)[0]
    nhwc = place_model(copy.deepcopy(strip_model), torch.device("cpu"), channels_last=True)
    conv = nhwc.backbone.body.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    got = nhwc(images)[0]
    torch.testing.assert_close(got["scores"], expected["scores"], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=1e-4, atol=1e-2)
    # compiling is lazy (nothing compiles until a forward), and in place: checkpoints keep their keys
    compiled = place_model(copy.deepcopy(strip_model), torch.device("cpu"), compile_backbone=True)
    assert list(compiled.state_dict()) == list(strip_model.state_dict())
    with pytest.raises(ValueError, match="has no .backbone"):
        place_model(ToyDetector(), torch.device("cpu"), compile_backbone=True)


def test_channels_last_backbone_trains():
    """torchvision's keypoint loss views the head's logits: only the backbone may be NHWC."""
    from raypose.model import ModelConfig, build_model
    from raypose.training.loop import place_model

    torch.manual_seed(0)
    model = place_model(build_model(ModelConfig(**STRIP_MODEL)), torch.device("cpu"), channels_last=True)
    assert model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(1, 23, 2, generator=g) * torch.tensor([60.0, 50.0]) + 20
    target = {"boxes": torch.cat([xy.min(1).values - 5, xy.max(1).values + 5], 1),
              "labels": torch.ones(1, dtype=torch.int64), "keypoints": torch.cat([xy, torch.full((1, 23, 1), 2.0)], -1)}
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.001))
    sched = build_scheduler(opt, ScheduleConfig(name="constant"), 1, 1)
    loader = [([torch.rand(3, 96, 128, generator=g)], [target])]
    metrics = train_one_epoch(model, opt, sched, loader, torch.device("cpu"), log_every=0)
    assert metrics["optimizer_steps"] == 1 and metrics["loss_keypoint"] > 0


class NormedDetector(ToyDetector):
    """The toy with a batch-norm layer in front, as a ``norm: batch`` backbone has; it returns
    losses only in train mode, as torchvision's detectors do."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)

    def forward(self, images, targets):
        assert self.training, "losses need train mode"
        return super().forward(list(self.norm(torch.stack(images))), targets)


def test_validation_loss_leaves_batch_norm_statistics_alone():
    from raypose.training.loop import validation_loss

    model = NormedDetector()
    model.eval()
    before = {k: v.clone() for k, v in model.norm.state_dict().items()}
    shifted = [([image + 5.0 for image in images], targets) for images, targets in data(4, 2)]  # far from 0 mean
    losses = validation_loss(model, shifted, torch.device("cpu"))
    assert {"loss_a", "loss_b", "loss"} <= set(losses) and losses["loss"] > 0
    after = model.norm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # train mode alone would move them toward 5
    assert not model.training and not model.norm.training  # put back as it was
    model.train()
    validation_loss(model, shifted, torch.device("cpu"))
    assert model.training and model.norm.training and torch.equal(model.norm.running_mean, before["running_mean"])


def test_a_bad_image_in_a_loader_worker_stops_training_with_raypose_own_message(synth_data, tmp_path):
    import shutil

    from raypose.data.dataset import KeypointDataset, collate_fn
    from raypose.errors import InputError

    images = shutil.copytree(synth_data.val_images, tmp_path / "images")
    dataset = KeypointDataset(synth_data.val_ann, images)
    dataset.image_path(0).write_bytes(dataset.image_path(0).read_bytes()[:200])  # truncated
    loader = torch.utils.data.DataLoader(dataset, batch_size=len(dataset), num_workers=1, collate_fn=collate_fn)
    model = ToyDetector()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.05))
    sched = build_scheduler(opt, ScheduleConfig(name="onecycle"), 1, 1)
    with pytest.raises(InputError) as caught:
        train_one_epoch(model, opt, sched, loader, torch.device("cpu"), log_every=0)
    message = str(caught.value)
    assert message.startswith(f"{dataset.image_path(0)}: cannot read image") and "Traceback" not in message
