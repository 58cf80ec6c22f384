"""Training on real Ray clusters on loopback: an autoscaling cluster adds the nodes a trial needs,
a fixed one refuses a trial larger than its nodes within seconds, a Train worker killed
mid-epoch is restored by Train inside the run, and DDP across two nodes trains as on one.

Every run is a ``raypose train`` process connected to the cluster as a Ray driver, as on a
cluster's head; the clusters are the session's shared two-node one (``loopback_cluster``) and
an autoscaling one started here, each stopped by its own handle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.cluster]


def write_config(folder: Path, tiny_train_config: dict, **overrides) -> Path:
    raw = {**tiny_train_config, "storage_path": str(folder / "runs"), **overrides}
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train(cluster, config: Path, *sets: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raypose", "train", str(config), *[f"--set={s}" for s in sets]],
                          env=cluster.driver_env, capture_output=True, text=True, timeout=timeout)


def checkpoint_payload(storage: Path, name: str, epoch: int) -> dict:
    from raypose.checkpoint import load_checkpoint

    found = sorted(storage.glob(f"{name}/**/epoch_{epoch:04d}/checkpoint.pth"))
    assert found, f"no checkpoint of epoch {epoch} under {storage / name}"
    return load_checkpoint(found[-1])


def wait_for_checkpoint(proc: subprocess.Popen, storage: Path, name: str, epoch: int, timeout: float = 400) -> None:
    """Until run ``name`` (in ``proc``) has stored the checkpoint of ``epoch``."""
    deadline = time.monotonic() + timeout
    while not list(storage.glob(f"{name}/**/epoch_{epoch:04d}/checkpoint.pth")):
        assert proc.poll() is None, proc.stdout.read()[-5000:]
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def long_epochs(tmp_path_factory) -> dict:
    """A data block with enough training images for an epoch of several steps per worker."""
    root = tmp_path_factory.mktemp("long-epochs")
    return {"root": str(root), "kind": "synthetic", "loader_workers": 0, "val_limit": 4,
            "synth": {"train": 24, "val": 4, "seed": 3, "image_size": [128, 160]}}


def test_a_trial_larger_than_a_fixed_cluster_is_refused_within_seconds(loopback_cluster, tiny_train_config, tmp_path):
    """No autoscaler reports to a `ray start` cluster: a trial that can never be placed is refused
    with the numbers, not left waiting."""
    config = write_config(tmp_path, tiny_train_config, name="toolarge", workers=6, cpus_per_worker=1)
    start = time.monotonic()
    proc = train(loopback_cluster, config, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "can give at most 0 GPU(s) and 4 CPU(s)" in proc.stderr and "workers=6" in proc.stderr
    assert time.monotonic() - start < 60


def test_an_autoscaling_cluster_adds_the_nodes_a_trial_needs(tiny_train_config, tmp_path):
    """Ray's autoscaler on its fake multi-node provider: a head with 1 CPU and a worker type of
    2 CPUs (0 to 2 nodes). A 2-worker trial of 1 CPU each cannot be placed when it starts; raypose
    says it waits for the autoscaler, which adds a node, and the trial trains to the end."""
    from tests.clusters import node_env, start_autoscaling_cluster

    cluster = start_autoscaling_cluster(node_env(), head_cpus=1, worker_cpus=2, max_workers=2)
    try:
        time.sleep(6)  # the monitor's first status report (every second here)
        assert cluster.alive_nodes() == 1
        config = write_config(tmp_path, tiny_train_config, name="autoscaled", workers=2, cpus_per_worker=1)
        proc = train(cluster, config)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:] + cluster.head_logs()
        assert "Waiting for the autoscaler to add nodes" in proc.stderr
        assert "a trial asks for 0 GPU(s) and 2 CPU(s)" in proc.stderr
        payload = checkpoint_payload(tmp_path / "runs", "autoscaled", 1)
        assert payload["metrics"]["world_size"] == 2 and 0.0 <= payload["metrics"]["oks_map"] <= 1.0
        assert cluster.alive_nodes() >= 2  # the autoscaler's node (idle ones go after 30 s)
    finally:
        cluster.stop()


def test_a_killed_train_worker_is_restored_inside_the_run(loopback_cluster, mlflow_server, tiny_train_config,
                                                          long_epochs, tmp_path):
    """SIGKILL one Train worker in epoch 2: Train restarts the worker group from epoch 1's
    checkpoint (one of max_failures), the run ends with exit 0, and its one MLflow run holds
    every epoch exactly once and is FINISHED."""
    from mlflow.tracking import MlflowClient

    config = write_config(tmp_path, tiny_train_config, name="killed", workers=2, epochs=3, batch_size=2,
                          data=long_epochs,
                          mlflow={"enabled": True, "tracking_uri": mlflow_server, "experiment": "faults"})
    proc = subprocess.Popen([sys.executable, "-m", "raypose", "train", str(config)], env=loopback_cluster.driver_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_checkpoint(proc, tmp_path / "runs", "killed", 1)
        time.sleep(1.0)  # into epoch 2's steps
        victims = loopback_cluster.train_worker_pids()
        assert len(victims) == 2
        os.kill(victims[-1], signal.SIGKILL)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-6000:]
    assert "RETRY" in output  # Train's failure policy restarted the group
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    for key in ("train_loss", "oks_map"):
        steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key))
        assert steps == [1, 2, 3], (key, steps)


def test_ddp_across_two_nodes_trains_as_on_one(loopback_cluster, tiny_train_config, tmp_path):
    """Two gloo workers on two nodes (STRICT_SPREAD) and on one (STRICT_PACK) end with the same
    weights after a few steps: the all-reduce across nodes is the same as within one."""
    import torch

    data = {**tiny_train_config["data"], "train_limit": 6}
    weights = {}
    for strategy in ("STRICT_SPREAD", "STRICT_PACK"):
        name = f"ddp-{strategy.lower()}"
        config = write_config(tmp_path, tiny_train_config, name=name, workers=2, batch_size=1, data=data,
                              placement_strategy=strategy, schedule={"name": "constant"})
        proc = train(loopback_cluster, config)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        payload = checkpoint_payload(tmp_path / "runs", name, 1)
        assert payload["metrics"]["optimizer_steps"] == 3
        weights[strategy] = (payload["metrics"]["nodes"], payload["model"])
    (spread_nodes, spread), (pack_nodes, pack) = weights["STRICT_SPREAD"], weights["STRICT_PACK"]
    assert (spread_nodes, pack_nodes) == (2, 1)
    moved = 0
    for key, value in pack.items():
        if torch.is_floating_point(value):
            torch.testing.assert_close(spread[key], value, rtol=0, atol=1e-6, msg=key)
            moved += 1
    assert moved > 50


def test_a_preempted_node_checkpoints_mid_epoch_and_the_run_resumes_there(tiny_train_config, long_epochs, tmp_path,
                                                                          monkeypatch):
    """Ray's own preemption notice: the node running the workers is drained with reason
    PREEMPTION (as a cloud's spot reclaim reaches Ray); the workers write a checkpoint inside the
    epoch at once, Train moves the run to another node at the deadline, and it resumes in that
    epoch at the step after the checkpoint."""
    from tests.clusters import add_worker_node, node_env, start_head

    # the head runs no workers; Train's preemption watcher polls the drains every 0.5 s (default 5)
    cluster = start_head(node_env({"RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "0.5"}), cpus=0)
    try:
        add_worker_node(cluster, cpus=2)
        add_worker_node(cluster, cpus=2)  # PACK puts both workers on one node; the run moves to the other
        config = write_config(tmp_path, tiny_train_config, name="preempted", workers=2, epochs=4, batch_size=2,
                              data=long_epochs)
        env = {**cluster.driver_env, "RAY_DEDUP_LOGS": "0"}
        proc = subprocess.Popen([sys.executable, "-m", "raypose", "train", str(config)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_checkpoint(proc, tmp_path / "runs", "preempted", 1)
            from ray.util.state import list_actors

            spot = {a.node_id for a in list_actors(address=cluster.dashboard, filters=[
                ("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], raise_on_missing_output=False)}
            assert len(spot) == 1
            # what `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` sends (a CLI would start too slowly)
            import ray._raylet
            from ray.core.generated import autoscaler_pb2

            monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
            accepted, why = ray._raylet.GcsClient(address=cluster.gcs).drain_node(
                spot.pop(), autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), "spot reclaim",
                time.time_ns() // 1_000_000 + 4_000)
            assert accepted, why
            output, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        cluster.stop()
    assert proc.returncode == 0, output[-6000:]
    import re

    saved = re.search(r"being preempted: checkpointing at epoch (\d), step (\d)", output)
    assert saved, output[-6000:]
    epoch, step = map(int, saved.groups())
    assert f"epoch_{epoch - 1:04d}_step_{step:06d}" in output  # Train stored it (pruned later, as unevaluated)
    # Train moved the run at the deadline: from the checkpoint written on the notice, or from a
    # later epoch's end when the epoch finished before the deadline (a busy machine's timing)
    resumed = re.search(r"resumed (in epoch (\d+) after step (\d+)|after epoch (\d+))", output)
    assert resumed, output[-6000:]
    if resumed[2]:
        assert (int(resumed[2]), int(resumed[3])) == (epoch, step)
    else:
        assert int(resumed[4]) >= epoch
