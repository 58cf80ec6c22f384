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
