"""A tracking server that goes down during training costs the run nothing: the real `mlflow
server` is stopped for an epoch of a run and started again on the same port and store; the
run ends with exit 0 and its MLflow run holds every epoch exactly once, FINISHED."""

from __future__ import annotations

import subprocess
import sys
import time

import yaml


def test_training_goes_on_through_an_mlflow_outage(mlflow_server_handle, tiny_train_config, tmp_path):
    from mlflow.tracking import MlflowClient

    server = mlflow_server_handle
    data = {"root": str(tmp_path / "data"), "kind": "synthetic", "loader_workers": 0, "val_limit": 4,
            "synth": {"train": 12, "val": 4, "seed": 3, "image_size": [128, 160]}}
    raw = {**tiny_train_config, "name": "outage", "epochs": 3, "data": data,
           "mlflow": {"enabled": True, "tracking_uri": server.uri, "experiment": "outage"}}
    config = tmp_path / "outage.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "-m", "raypose", "train", str(config), "--local"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(server.uri)
    checkpoints = tmp_path / "runs" / "outage" / "checkpoints"

    def wait(predicate, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert proc.poll() is None, f"ended before {what}: " + proc.stdout.read()[-4000:]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.5)

    try:
        wait(lambda: (checkpoints / "epoch_0001").is_dir(), "epoch 1")
        server.stop()
        wait(lambda: (checkpoints / "epoch_0002").is_dir(), "epoch 2 without a tracking server")
        server.start()
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]
    assert "queued until it does" in output
    runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    for key in ("train_loss", "oks_map"):
        assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key)) == [1, 2, 3], key
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"config.yaml", "training_curves.png"}
