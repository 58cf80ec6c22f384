"""Training on Ray Train: two gloo workers run real DDP, report, checkpoint, resume and log to MLflow."""

from __future__ import annotations

import pytest

from raypose.training.config import validate_train_config
from raypose.training.ray_train import build_trainer, fit

pytestmark = pytest.mark.ray


def test_two_gloo_workers_run_ddp_and_resume(ray_local, tiny_train_config, tmp_path):
    """Checkpoints uploaded in the background (the default), then, on the resumed run, waited for."""
    import glob
    import tempfile

    from mlflow.tracking import MlflowClient

    leftovers = set(glob.glob(f"{tempfile.gettempdir()}/raypose-ckpt-*"))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = {
        **tiny_train_config,
        "name": "ddp",
        "workers": 2,
        "epochs": 1,
        "data": {**tiny_train_config["data"], "train_limit": 4},
        "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "ddp-test"},
        "schedule": {"name": "cosine"},  # a LambdaLR schedule: the run may grow on resume (1cycle's may not)
    }
    result = fit(validate_train_config(raw))
    assert result.error is None
    assert result.metrics["world_size"] == 2
    # DDP keeps the two replicas identical: their parameter sums agree after the step
    assert result.metrics["replica_divergence"] < 1e-6
    # 4 images / (2 workers x batch 2) = 1 optimizer step per worker per epoch
    assert result.metrics["optimizer_steps"] == 1 and result.metrics["images"] == 4  # global: both workers
    assert 0.0 <= result.metrics["oks_map"] <= 1.0
    assert result.checkpoint is not None

    # same name, more epochs: Ray Train finds the checkpoint in storage and resumes at epoch 2
    again = fit(validate_train_config({**raw, "epochs": 2, "checkpoint_upload": "sync"}))
    assert again.error is None
    assert again.metrics["epoch"] == 2
    assert again.checkpoint.path.endswith("epoch_0002")
    # each upload deleted its local folder, in the background or not
    assert set(glob.glob(f"{tempfile.gettempdir()}/raypose-ckpt-*")) <= leftovers

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ddp-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, "a resumed run logs into the same MLflow run"
    history = client.get_metric_history(runs[0].info.run_id, "oks_map")
    assert sorted(m.step for m in history) == [1, 2]  # epoch 1 was not trained (or logged) twice
    assert runs[0].data.params["workers"] == "2"
    # what checkpoints cost: epoch 1's upload ran in the background (MLflow logs its size only if
    # it finished before the epoch was logged); epoch 2's was waited for, so the epoch holds it
    run_id = runs[0].info.run_id
    stored = {m.step: m.value for m in client.get_metric_history(run_id, "checkpoint_mb")}
    assert set(stored) in ({2}, {1, 2}) and stored[2] > 1.0
    waits = {m.step: m.value for m in client.get_metric_history(run_id, "checkpoint_wait_s")}
    uploads = {m.step: m.value for m in client.get_metric_history(run_id, "checkpoint_upload_s")}
    assert set(waits) == {1, 2} and 0 < uploads[2] <= waits[2]
    assert {"train_loss", "loss_keypoint", "loss_box_reg", "loss_classifier", "loss_objectness",
            "loss_rpn_box_reg", "lr", "oks_ap50", "oks_ap75", "oks_ar"} <= set(runs[0].data.metrics)


def test_local_mode_is_not_a_ray_train_run(tiny_train_config):
    with pytest.raises(Exception, match="workers: 0 means local mode"):
        build_trainer(validate_train_config({**tiny_train_config, "workers": 0}))


def test_non_finite_loss_on_a_worker_fails_the_run_with_its_components(ray_local, tiny_train_config, tmp_path, capsys):
    import yaml

    from raypose.cli.main import main

    raw = {**tiny_train_config, "name": "nan", "workers": 1, "grad_clip": None,
           "optim": {"name": "sgd", "lr": 1.0e12}, "schedule": {"name": "constant"}}
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "raypose train: error: training failed" in err
    assert "non-finite loss at epoch 0" in err and "loss_keypoint=" in err and "Lower the learning rate" in err


def test_fractional_gpus_per_worker_reach_the_scaling_config(tiny_train_config):
    cfg = validate_train_config({**tiny_train_config, "workers": 2, "use_gpu": True, "gpus_per_worker": 0.25})
    scaling = build_trainer(cfg).scaling_config
    assert scaling.use_gpu and scaling.num_workers == 2
    assert scaling.resources_per_worker == {"CPU": 1.0, "GPU": 0.25}
    assert not build_trainer(validate_train_config({**cfg.model_dump(), "use_gpu": False})).scaling_config.use_gpu


def test_a_node_without_the_data_names_itself_and_the_path(ray_local, tiny_train_config, tmp_path):
    """The data is never uploaded with a job: the worker checks data.root on its node first."""
    import socket

    import ray.util

    from raypose.errors import TrainingError

    nowhere = tmp_path / "not-mounted"
    raw = {**tiny_train_config, "name": "nodata", "workers": 1, "data": {**tiny_train_config["data"], "root": str(nowhere)}}
    with pytest.raises(TrainingError) as e:
        fit(validate_train_config(raw))
    message = str(e.value)
    assert f"data not found on node {ray.util.get_node_ip_address()} ({socket.gethostname()})" in message
    assert str(nowhere / "annotations") in message and "--set data.root=" in message
