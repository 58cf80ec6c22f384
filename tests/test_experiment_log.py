"""The MLflow module on a sqlite store in a temporary folder, without Ray: params logged once,
child runs found again, long values truncated, run identity in tags, the experiment's kind."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from raypose.experiment_log import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MAX_PARAM_CHARS,
    MlflowRun,
    child_runs,
    end_trial_run,
    find_or_create_child_run,
    resolve_tracking_uri,
)
from raypose.training.config import identity_tags, recipe_params, validate_train_config


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_params_are_logged_once_on_resume(uri):
    run = MlflowRun("exp", uri=uri, run_name="r")
    run.log_params({"optim.lr": 0.01, "epochs": 3})
    resumed = MlflowRun("exp", uri=uri, run_id=run.run_id)
    resumed.log_params({"optim.lr": 0.01, "epochs": 3, "batch_size": 2})  # MLflow raises on a changed param
    params = MlflowClient(uri).get_run(run.run_id).data.params
    assert params == {"optim.lr": "0.01", "epochs": "3", "batch_size": "2"}
    assert len(MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("exp").experiment_id])) == 1


def test_resume_sets_running_and_end_sets_the_status(uri):
    run = MlflowRun("exp", uri=uri)
    run.end("KILLED")
    assert MlflowClient(uri).get_run(run.run_id).info.status == "KILLED"
    MlflowRun("exp", uri=uri, run_id=run.run_id)
    assert MlflowClient(uri).get_run(run.run_id).info.status == "RUNNING"


def test_child_runs_are_found_again_not_duplicated(uri):
    parent = MlflowRun("exp", uri=uri, run_name="study")
    first = find_or_create_child_run("exp", parent.run_id, "t1", "trial-t1", uri, tags={"raypose.trial_kind": "search"})
    again = find_or_create_child_run("exp", parent.run_id, "t1", "trial-t1", uri)
    other = find_or_create_child_run("exp", parent.run_id, "t2", "trial-t2", uri)
    assert first == again != other
    # the same trial id under another parent (another study) is another run
    elsewhere = find_or_create_child_run("exp", MlflowRun("exp", uri=uri).run_id, "t1", "trial-t1", uri)
    assert elsewhere not in (first, other)
    children = child_runs("exp", parent.run_id, uri)
    assert sorted(c.info.run_id for c in children) == sorted([first, other])
    assert MlflowClient(uri).get_run(first).info.run_name == "trial-t1"


@pytest.mark.parametrize(("status", "mlflow_status"), [("completed", "FINISHED"), ("stopped_early", "FINISHED"),
                                                       ("errored", "FAILED")])
def test_ended_trials_leave_no_running_run(uri, status, mlflow_status):
    parent = MlflowRun("exp", uri=uri)
    run_id = find_or_create_child_run("exp", parent.run_id, "t1", "trial-t1", uri)
    end_trial_run("exp", parent.run_id, "t1", status, uri, reason="CUDA out of memory" if status == "errored" else None)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == mlflow_status and run.info.end_time is not None
    assert run.data.tags["raypose.trial_status"] == status
    assert ("raypose.failure_reason" in run.data.tags) == (status == "errored")


def test_the_runs_table_url_opens_the_machine_learning_view():
    from raypose.experiment_log import runs_table_url

    assert runs_table_url("http://head:5000/", "7") == "http://head:5000/#/experiments/7?workflowType=machine_learning"
    assert runs_table_url("sqlite:///mlflow.db", "3").startswith("http://127.0.0.1:5000/#/experiments/3?")


def test_trials_inherit_the_studys_source_tags(uri):
    parent = MlflowRun("exp", uri=uri, tags={"mlflow.source.name": "raypose", "mlflow.user": "ana",
                                              "mlflow.source.git.commit": "abc123", "raypose.study": "s"})
    child = MlflowClient(uri).get_run(find_or_create_child_run("exp", parent.run_id, "t1", "trial-t1", uri))
    assert {k: child.data.tags[k] for k in ("mlflow.source.name", "mlflow.user", "mlflow.source.git.commit")} == {
        "mlflow.source.name": "raypose", "mlflow.user": "ana", "mlflow.source.git.commit": "abc123"}
    assert "raypose.study" not in child.data.tags  # only MLflow's source tags are inherited


def test_datasets_are_logged_once_with_their_digest(uri, tmp_path):
    from raypose.experiment_log import dataset_input, file_digest

    ann = tmp_path / "train.json"
    ann.write_text('{"images": []}')
    run = MlflowRun("exp", uri=uri)
    for _ in range(2):  # a resumed run logs its inputs again: not duplicated
        run.log_inputs([dataset_input("synthetic-train", str(ann), file_digest(ann), "train")])
    inputs = MlflowClient(uri).get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == file_digest(ann) != ""
    assert inputs[0].dataset.name == "synthetic-train" and inputs[0].tags[0].value == "train"
    ann.write_text('{"images": [1]}')
    assert file_digest(ann) != inputs[0].dataset.digest  # a changed file is another dataset


def test_a_registered_model_predicts_what_its_checkpoint_predicts(mlflow_server, tmp_path, monkeypatch):
    """The study's best checkpoint as an MLflow model, on a tracking server: registered, loaded back
    by mlflow.pytorch and by raypose (models:/NAME/VERSION, /latest), the same detections."""
    import json

    import mlflow.pytorch
    import numpy as np
    import torch
    from PIL import Image

    from raypose.checkpoint import save_checkpoint
    from raypose.errors import WeightsError
    from raypose.experiment_log import create_run, register_pose_model, resolve_checkpoint, save_pose_model
    from raypose.model import ModelConfig, build_model
    from raypose.predict import predict_to_results
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    config = ModelConfig(**TINY_MODEL)
    model = build_model(config).eval()
    ckpt = save_checkpoint(tmp_path / "checkpoint.pth", model, config)
    image = tmp_path / "images" / "000000000139.jpg"
    image.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((150, 200, 3)) * 255).astype("uint8")).save(image)
    run_id = create_run("study-exp", mlflow_server, "study-s")
    model_dir = save_pose_model(ckpt, image, tmp_path / "model")
    assert register_pose_model(mlflow_server, run_id, model_dir, "s", {"raypose.trial_id": "t1"}) == "1"
    assert register_pose_model(mlflow_server, run_id, model_dir, "s", {"raypose.trial_id": "t2"}) == "2"
    version = MlflowClient(mlflow_server, registry_uri=mlflow_server).get_model_version("s", "2")
    assert version.tags["raypose.trial_id"] == "t2" and version.run_id == run_id

    from mlflow.models import Model

    info = Model.load(str(model_dir))
    assert info.signature.inputs.inputs[0].shape == (-1, 3, -1, -1) and info.saved_input_example_info is not None
    x = torch.rand(3, 128, 160)
    # as a user would point MLflow at the server; no global state is set (later tests read the default)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    loaded = mlflow.pytorch.load_model("models:/s/1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with torch.no_grad():
        a, b = model([x])[0], loaded.eval()([x])[0]
    assert all(torch.equal(a[k], b[k]) for k in a)

    from_file, from_registry = tmp_path / "file.json", tmp_path / "registry.json"
    predict_to_results(ckpt, [image], from_file, score_thresh=0.0)
    for ref in ("models:/s/1", "models:/s/latest"):
        predict_to_results(ref, [image], from_registry, tracking_uri=mlflow_server)
        assert json.loads(from_registry.read_text()) == json.loads(from_file.read_text())
    with pytest.raises(WeightsError, match="models:/s/9.*Models page"):
        resolve_checkpoint("models:/s/9", mlflow_server)


def test_long_values_are_truncated(uri):
    run = MlflowRun("exp", uri=uri)
    run.log_params({"model.min_size": list(range(1000))})
    value = MlflowClient(uri).get_run(run.run_id).data.params["model.min_size"]
    assert len(value) == MAX_PARAM_CHARS and value.endswith("...") and value.startswith("[0, 1, 2")


def test_run_identity_is_in_tags_not_params(tiny_train_config, uri):
    cfg = validate_train_config({**tiny_train_config, "mlflow": {"enabled": True, "tracking_uri": uri,
                                                                 "run_id": "abc", "parent_run_id": "def"}})
    params = recipe_params(cfg)
    assert not {"name", "storage_path"} & set(params)
    assert not any(k.startswith("mlflow.") for k in params)
    assert params["optim.lr"] == 0.001 and params["model.backbone"] == "resnet18"
    tags = identity_tags(cfg)
    assert tags == {"raypose.name": "tiny", "raypose.storage_path": tiny_train_config["storage_path"]}


def test_experiments_are_model_training_experiments(uri):
    MlflowRun("new-exp", uri=uri)
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("new-exp").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    # an experiment made elsewhere without the kind gets it the first time raypose logs to it
    client.create_experiment("old-exp")
    MlflowRun("old-exp", uri=uri)
    assert client.get_experiment_by_name("old-exp").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_resolving_the_tracking_uri_sets_no_global_state(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    assert resolve_tracking_uri("sqlite:///a.db", base_dir=tmp_path) == f"sqlite:///{tmp_path}/a.db"
    assert resolve_tracking_uri("mlruns", base_dir=tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_tracking_uri("http://h:5000") == "http://h:5000"
    assert mlflow.get_tracking_uri() == before


def test_a_resumed_run_gets_new_tags(uri):
    run = MlflowRun("exp", uri=uri, tags={"a": "1"})
    MlflowRun("exp", uri=uri, run_id=run.run_id, tags={"b": "2"})
    tags = MlflowClient(uri).get_run(run.run_id).data.tags
    assert tags["a"] == "1" and tags["b"] == "2"


def test_an_outage_queues_training_calls_and_sends_them_in_order_when_the_server_is_back(
        mlflow_server_handle, monkeypatch, tmp_path):
    """The real `mlflow server`, stopped and started again on the same port and store: nothing
    raises while it is down, and every point, tag and artifact arrives once, in order."""
    from raypose.training.run import MLFLOW_FAST_FAIL

    for key, value in MLFLOW_FAST_FAIL.items():
        monkeypatch.setenv(key, value)
    server = mlflow_server_handle
    run = MlflowRun("outage", uri=server.uri, run_name="r", best_effort=True, flush_timeout_s=60)
    run.log_metrics({"train_loss": 3.0}, step=1)
    server.stop()
    run.log_metrics({"train_loss": 2.0, "oks_map": 0.1}, step=2)
    run.set_tags({"raypose.note": "during the outage"})
    (tmp_path / "curves.txt").write_text("x")
    run.log_artifact(tmp_path / "curves.txt")
    (tmp_path / "curves.txt").unlink()  # a temporary file: the queued call keeps its own copy
    assert run.pending == 3
    server.start()
    run.log_metrics({"train_loss": 1.0}, step=3)
    assert run.pending == 0
    run.end("FINISHED")
    client = MlflowClient(server.uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.tags["raypose.note"] == "during the outage"
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "train_loss")] == [(1, 3.0), (2, 2.0),
                                                                                                 (3, 1.0)]
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["curves.txt"]


def test_backfill_logs_only_the_epochs_a_run_lacks(uri):
    run = MlflowRun("exp", uri=uri, run_name="r", best_effort=True)
    run.log_metrics({"train_loss": 3.0}, step=1)
    history = [{"epoch": 1, "train_loss": 3.0}, {"epoch": 2, "train_loss": 2.0, "oks_map": 0.2, "score": -1}]
    assert run.backfill(history, skip=("score",)) == 1
    assert run.backfill(history) == 0
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run.run_id, "train_loss")] == [1, 2]
    assert "score" not in client.get_run(run.run_id).data.metrics
