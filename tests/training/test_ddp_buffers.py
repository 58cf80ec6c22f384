"""DDP's buffer broadcast: off where no buffer changes in training (frozen batch norm), on where
batch norm tracks running statistics; either way the ranks' buffers stay equal. Two gloo
processes on this machine, each training on its own images."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import TINY_MODEL, free_port


def _train_two_steps(rank: int, port: int, norm: str, out: str) -> None:
    from raypose.model import ModelConfig, build_model
    from raypose.training.run import wrap_ddp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different images per rank
    torch.set_num_threads(1)
    model = wrap_ddp(build_model(ModelConfig(**{**TINY_MODEL, "norm": norm})), torch.device("cpu"))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    seen: list[torch.Tensor] = []  # the buffers as each forward pass starts (after DDP's sync, if any)
    model.module.register_forward_pre_hook(
        lambda module, args: seen.append(torch.stack([b.double().sum() for b in module.buffers()])))
    for _ in range(2):
        images = [torch.rand(3, 128, 128)]
        keypoints = torch.cat([torch.rand(1, 23, 2) * 60 + 30, torch.full((1, 23, 1), 2.0)], dim=2)
        targets = [{"boxes": torch.tensor([[20.0, 20.0, 100.0, 110.0]]), "labels": torch.tensor([1]),
                    "keypoints": keypoints}]
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    buffers = seen[-1]
    gathered = [torch.zeros_like(buffers) for _ in range(2)]
    dist.all_gather(gathered, buffers)
    if rank == 0:
        synced = getattr(model, "forward_sync_buffers", None)
        torch.save({"broadcast": model.broadcast_buffers if synced is None else synced, "spread": float((gathered[0] - gathered[1]).abs().max())},
                   out)
    dist.destroy_process_group()


@pytest.mark.parametrize(("norm", "broadcast"), [("frozen", False), ("batch", True)])
def test_buffers_are_broadcast_only_where_training_changes_them(norm, broadcast, tmp_path):
    out = str(tmp_path / "result.pt")
    mp.start_processes(_train_two_steps, args=(free_port(), norm, out), nprocs=2, start_method="spawn")
    result = torch.load(out)
    assert result["broadcast"] is broadcast
    assert result["spread"] == 0.0  # the ranks' buffers are equal as each forward pass starts
