"""Checkpoints inside an epoch (preemption, ``checkpoint_every_min``): a run killed mid-epoch
resumes at the step after its last checkpoint and ends with the weights an uninterrupted run
has, bit for bit: no step trained twice into the model, none skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raypose.checkpoint import load_checkpoint
from raypose.training.config import validate_train_config
from raypose.training.run import run_training
from raypose.training.sessions import LocalSession


class PreemptedAt(LocalSession):
    """A session whose node is announced as preempted at ``(epoch, step)`` and dies ``lag``
    optimizer steps later (the steps after the checkpoint are lost with it)."""

    def __init__(self, *args, at: tuple[int, int], lag: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.lag = at, lag
        self.checks: list[tuple[int, int]] = []
        self.saved: list[dict] = []

    def preemption_pending(self) -> bool:
        self.checks.append(len(self.checks))
        epoch, step = self.at
        done = len(self.checks)  # log_every=1: a check after each optimizer step but an epoch's last
        now = (done - 1) // (STEPS - 1) + 1, (done - 1) % (STEPS - 1) + 1
        if now == (epoch, step + self.lag):
            raise RuntimeError("node lost")
        return now >= (epoch, step)

    def save_progress(self, metrics, checkpoint_dir):
        super().save_progress(metrics, checkpoint_dir)
        self.saved.append(dict(metrics))


STEPS = 4  # the 4 training images with people / batch 1 -> 4 optimizer steps per epoch


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(run_dir) / "checkpoints" / "epoch_0002" / "checkpoint.pth")["model"]


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_a_run_preempted_mid_epoch_resumes_at_the_next_step_and_trains_as_an_uninterrupted_one(
        tiny_train_config, tmp_path, loader_workers):
    raw = {**tiny_train_config, "epochs": 2, "batch_size": 1, "log_every": 1,
           "data": {**tiny_train_config["data"], "loader_workers": loader_workers}}
    plain = validate_train_config({**raw, "storage_path": str(tmp_path / "plain")})
    whole = run_training(plain, LocalSession(plain.run_dir))

    cut = validate_train_config({**raw, "storage_path": str(tmp_path / "cut")})
    session = PreemptedAt(cut.run_dir, at=(2, 1), lag=1)
    with pytest.raises(RuntimeError, match="node lost"):
        run_training(cut, session)
    assert session.saved == [{"epoch": 1, "epoch_step": 1, "checkpoint_score": -1.0,
                              "oks_map_curve": session.saved[0]["oks_map_curve"]}]  # once per announcement
    partial = load_checkpoint(Path(cut.run_dir) / "checkpoints" / "in_epoch" / "checkpoint.pth")
    assert partial["epoch"] == 1 and partial["progress"][0]["step"] == 1
    assert partial["scheduler"]["last_epoch"] == STEPS + 1  # one step into epoch 2

    resumed = run_training(cut, LocalSession(cut.run_dir))
    assert [m["epoch"] for m in resumed["history"]] == [1, 2]
    for a, b in zip(whole["history"], resumed["history"]):
        assert (a["images"], a["optimizer_steps"]) == (b["images"], b["optimizer_steps"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    expected, got = final_weights(plain.run_dir), final_weights(cut.run_dir)
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key
    assert not (Path(cut.run_dir) / "checkpoints" / "in_epoch").exists()  # the whole epoch superseded it


def test_a_checkpoint_every_n_minutes_lands_inside_the_epoch(tiny_train_config, tmp_path, monkeypatch):
    """``checkpoint_every_min``: time is read at each check (every log_every steps)."""
    import raypose.training.run as run

    clock = iter(range(0, 10_000, 100))  # 100 s per reading: every check is past 1 minute
    monkeypatch.setattr(run, "_clock", lambda: float(next(clock)))
    cfg = validate_train_config({**tiny_train_config, "epochs": 1, "batch_size": 1, "log_every": 1,
                                 "checkpoint_every_min": 1.0, "data": {**tiny_train_config["data"], "train_limit": 4}})

    class Recording(LocalSession):
        saved: list = []

        def save_progress(self, metrics, checkpoint_dir):
            super().save_progress(metrics, checkpoint_dir)
            self.saved.append(metrics["epoch_step"])

    session = Recording(cfg.run_dir)
    run_training(cfg, session)
    assert session.saved == [1, 2, 3]  # after each step but the last (the epoch's own checkpoint)
