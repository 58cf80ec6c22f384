"""Where the final stage runs: as a Ray task holding a GPU when the cluster has one (evaluating
the full validation set twice on a head node's CPUs takes hours on COCO), in the driver on a
CPU-only cluster; the study says where."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.tuning.test_search import write_space

pytestmark = [pytest.mark.ray, pytest.mark.cluster]


def test_the_final_stage_runs_as_a_gpu_task_where_the_cluster_has_a_gpu(tiny_train_config, tmp_path):
    """A head advertising one (logical) GPU; the trials train on CPUs (use_gpu: false)."""
    from tests.clusters import node_env, start_head

    path = write_space(tmp_path, {**tiny_train_config, "use_gpu": False}, "", num_samples=1, baseline=False,
                       final_analysis=False, require_shared_storage=False, max_concurrent=1)
    space = yaml.safe_load(path.read_text())
    space["base"]["epochs"] = 1
    space["base"]["mlflow"] = {"enabled": False}
    path.write_text(yaml.safe_dump(space))
    cluster = start_head(node_env(), cpus=3, gpus=1)
    try:
        proc = subprocess.run([sys.executable, "-m", "raypose", "tune", str(path)], env=cluster.driver_env,
                              capture_output=True, text=True, timeout=600)
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "running final_stage_into as a Ray task with one GPU" in proc.stderr
    assert "note: final stage ran on" in proc.stdout
    assert (tmp_path / "runs" / "mini" / "best" / "metrics.json").is_file()


def test_a_cpu_only_cluster_runs_the_final_stage_in_the_driver(ray_local, tiny_train_config):
    from raypose.training.config import validate_train_config
    from raypose.training.ray_train import describe_here, final_stage_wants_gpu

    assert not final_stage_wants_gpu(validate_train_config(tiny_train_config))
    assert describe_here().endswith(": CPU")
