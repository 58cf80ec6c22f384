"""Searches on Ray Tune: a quickstart-sized search on CPU, resume without duplicate MLflow runs,
the cluster checks (shared storage, an MLflow server), the study's state in S3, and a real
two-node Ray cluster on loopback running a submitted search with S3 storage (moto) and an MLflow
tracking server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raypose.cli.main import main
from tests.clusters import wait_for_jobs_api

pytestmark = pytest.mark.ray


def write_space(folder: Path, tiny_train_config: dict, uri: str, **tune) -> Path:
    base = {**tiny_train_config, "workers": 1, "epochs": 2, "mlflow": {"experiment": "tune-test", "tracking_uri": uri}}
    space = {
        "base": base,
        "search": {
            "optim.name": {"choice": ["sgd", "adamw"]},
            "optim.lr": [
                {"loguniform": [5.0e-4, 2.0e-3], "when": {"optim.name": "adamw"}},
                {"loguniform": [5.0e-3, 2.0e-2], "when": {"optim.name": "sgd"}},
            ],
            "model.freeze": {"choice": ["none", "backbone"]},
        },
        "tune": {"name": "mini", "num_samples": 3, "max_concurrent": 2, "storage_path": str(folder / "runs"),
                 "asha": {"grace_period": 1, "reduction_factor": 2}, "worst": 3, **tune},
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def mlflow_state(uri: str) -> tuple[object, list, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def wait_for(predicate, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(2)


def scored_children(uri: str) -> int:
    try:
        return sum("oks_map" in c.data.metrics for c in mlflow_state(uri)[2])
    except Exception:  # the store is still being created
        return 0


def test_interrupted_search_resumes_and_logs_trials_once(ray_local, tiny_train_config, tmp_path, capsys):
    """Ctrl-C in the middle of a search stops it cleanly (no final stage, parent KILLED, a line
    saying how to resume); --resume finishes it with one parent, one child per trial, no epoch
    logged twice; a second --resume adds nothing."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, tiny_train_config, uri)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "raypose", "tune", str(space)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: scored_children(uri) >= 1, 600, "a trial's first evaluated epoch", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "--resume" in err and "unfinished" in err
    _, parents, children = mlflow_state(uri)
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert all(c.info.status != "RUNNING" for c in children)
    assert not (tmp_path / "runs" / "mini" / "best").exists()  # no final stage on half-trained trials

    assert main(["tune", str(space), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "Study result" in out and "torchvision default recipe" in out
    assert "?workflowType=machine_learning" in out  # the URL that opens the runs table
    assert out.strip().splitlines()[-1].startswith("The search's best recipe (trial ")  # the last line says it

    client, parents, children = mlflow_state(uri)
    assert len(parents) == 1 and len(children) == 3
    assert [p.info.run_id for p in parents] == [p.info.run_id for p in mlflow_state(uri)[1]]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    kinds = sorted(c.data.tags["raypose.trial_kind"] for c in children)
    assert kinds == ["baseline", "search", "search"]
    baseline = next(c for c in children if c.data.tags["raypose.trial_kind"] == "baseline")
    assert baseline.data.params["optim.name"] == "sgd" and float(baseline.data.params["optim.lr"]) == 0.02
    for child in children:
        assert child.data.tags["raypose.trial_status"] in ("completed", "stopped_early")
        assert 0.0 <= child.data.metrics["oks_map"] <= 1.0
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "oks_map")]
        assert steps == sorted(set(steps)) and steps[0] == 1
        assert (child.data.tags["raypose.trial_status"] == "completed") == (steps[-1] == 2)
    assert "gain_over_baseline" in parents[0].data.metrics
    # both scores under their own names: chosen on the search's images; here every validation image
    # was scored during the search, so the reported one is not called held-out
    assert {"search_oks_map", "validation_oks_map"} <= set(parents[0].data.metrics)
    assert "heldout_oks_map" not in parents[0].data.metrics
    # every run ended; none is left RUNNING; ASHA's early stops are not shown as failures
    assert parents[0].info.status == "FINISHED"
    assert all(c.info.status == "FINISHED" and c.info.end_time for c in children)
    # every trial's run has its files, also those ASHA stopped and those resumed
    for child in children:
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "training_curves.png", "metrics.json"} <= files, child.data.tags["raypose.trial_id"]
        # the searched values only (Compare's defaults are picked from the params), what a reader
        # needs besides as tags; the rest is in config.yaml
        assert set(child.data.params) == {"optim.name", "optim.lr", "model.freeze"}
        assert child.data.tags["raypose.epochs"] == "2" and child.data.tags["raypose.model.backbone"] == "resnet18"
        assert float(child.data.tags["raypose.optim.effective_lr"]) > 0
        assert child.data.tags["mlflow.user"] == parents[0].data.tags["mlflow.user"]
        assert child.inputs.dataset_inputs  # the train and validation files, with their digests
    assert set(parents[0].data.params) == {"optim.name", "optim.lr", "model.freeze"}  # the space only
    assert parents[0].data.tags["raypose.tune_dir"] == str(tmp_path / "runs" / "mini")
    assert "mlflow.source.name" in parents[0].data.tags and parents[0].inputs.dataset_inputs
    # the best checkpoint as a registered model, its version tagged with the trial and its scores
    from mlflow.tracking import MlflowClient as RegistryClient

    versions = RegistryClient(uri, registry_uri=uri).search_model_versions("name = 'mini'")
    assert len(versions) == 1 and versions[0].run_id == parents[0].info.run_id
    assert parents[0].data.tags["raypose.registered_model"] == "models:/mini/1"
    # the Optuna study beside Tune's state, every trial in it, and Optuna's plots on the parent run
    import optuna

    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{tmp_path / 'runs' / 'mini' / 'optuna.db'}")
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    # one name per searched value, run identity in tags, the space on the parent under the same names
    for child in children:
        assert not any("|" in k for k in child.data.params)
        assert not {"name", "storage_path", "mlflow.run_id", "mlflow.parent_run_id"} & set(child.data.params)
        assert child.data.tags["raypose.name"].startswith("mini-")
        assert next(iter(child.data.metrics)) == "oks_map"  # what MLflow's Compare view plots first
    assert "loguniform" in parents[0].data.params["optim.lr"] and "optim.name=adamw" in parents[0].data.params["optim.lr"]
    assert client.get_experiment_by_name("tune-test").tags["mlflow.experimentKind"] == "custom_model_development"
    trial_dirs = [p.name for p in (tmp_path / "runs" / "mini").iterdir() if p.is_dir() and p.name != "best"]
    assert len(trial_dirs) == 3 and not any("|" in d for d in trial_dirs)

    best = tmp_path / "runs" / "mini" / "best"
    summary = json.loads((best / "metrics.json").read_text())
    assert summary["trials"] == 3
    assert summary["gain_over_baseline"] == pytest.approx(summary["search_oks_map"] - summary["baseline_oks_map"])
    assert summary["search_oks_map"] >= summary["baseline_oks_map"]
    assert 0.0 <= summary["trial_epochs_saved"] < 1.0
    assert summary["validation_images"] == 4  # the full validation set, not val_limit
    assert (best / "checkpoint.pth").stat().st_size > 1_000_000
    assert (best / "analysis" / "report.html").is_file() and (best / "analysis" / "summary.json").is_file()
    assert yaml.safe_load((best / "config.yaml").read_text())["optim"]["name"] == summary["best_config"]["optim.name"]
    assert not any("|" in k for k in summary["best_config"]) and "optim.lr" in summary["best_config"]
    report = (best / "report.md").read_text()
    assert "optim.lr=" in report and "optim.lr|" not in report
    # readable at a glance: the sentence, every trial's curve, which settings mattered
    assert report.splitlines()[2] == summary["sentence"]
    assert "](trial_curves.png)" in report and (best / "trial_curves.png").stat().st_size > 10_000
    for child in children:  # the plotted curves are the epochs each trial logged
        trial_id = child.data.tags["raypose.name"].rsplit("-", 1)[1]
        logged = [[m.step, m.value] for m in client.get_metric_history(child.info.run_id, "oks_map")]
        curve = summary["curves"][trial_id]
        assert [e for e, _ in curve] == [e for e, _ in sorted(logged)]
        assert [v for _, v in curve] == pytest.approx([v for _, v in sorted(logged)], abs=1e-6)
    assert "## Which searched settings mattered" in report and "too few to rate" in report  # 2 search trials
    assert "## Error analysis" in report and "| error type | AP gain alone |" in report  # coco-analyze's (g)
    assert "## Inference options" not in report  # every validation image was scored: nothing to choose on
    assert 0.0 <= summary["baseline_validation"]["AP"] <= 1.0  # both recipes on the full validation set
    if summary["baseline_trial"] != summary["best_trial"]:  # else the best's evaluation is the baseline's
        assert (best / "baseline" / "detections.json").is_file()
        assert not (best / "baseline" / "checkpoint.pth").exists()  # best/ keeps one checkpoint
    else:
        assert summary["baseline_validation"] == summary["validation"]
    # tune.keep_checkpoints: best: the best trial and the baseline keep their best checkpoint, others none
    kept = {run.name.rsplit("-", 1)[1]: sorted(p.name for p in run.glob("epoch_*"))
            for run in (tmp_path / "runs" / "mini_train").iterdir() if run.is_dir()}
    serving = {summary["best_trial"], summary["baseline_trial"]}
    assert {t: ckpts for t, ckpts in kept.items() if ckpts} == {
        t: [f"epoch_{(summary['best_epoch'] if t == summary['best_trial'] else max(summary['curves'][t], key=lambda p: (p[1], p[0]))[0]):04d}"]
        for t in serving}
    assert set(summary["checkpoint_bytes"]) == set(kept)
    assert all((size > 1_000_000) == (t in serving) for t, size in summary["checkpoint_bytes"].items())
    assert "## Checkpoints kept in storage" in report
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"trial_curves.png", "best", "report.html", "optuna_history.png", "model"} <= parent_artifacts
    assert summary["analysis"]["report"] == "analysis/report.html"  # relative to best/, not a temporary folder
    assert parents[0].data.tags["mlflow.note.content"] == summary["sentence"]

    # resuming a finished search runs nothing again and logs into the same MLflow runs, once
    assert main(["tune", str(space), "--resume"]) == 0
    _, parents_after, children_after = mlflow_state(uri)
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    assert sorted(c.info.run_id for c in children_after) == sorted(c.info.run_id for c in children)
    assert all(c.info.status == "FINISHED" for c in children_after)
    assert len(client.get_metric_history(parents[0].info.run_id, "search_oks_map")) == 1
    assert len(RegistryClient(uri, registry_uri=uri).search_model_versions("name = 'mini'")) == 1  # not again


def test_a_trial_with_a_non_finite_loss_is_a_poor_result_not_a_retry(ray_local, tiny_train_config, tmp_path):
    """A deterministic failure (here a real non-finite loss) is reported to the search as a poor
    result, recorded in MLflow and report.md, not retried, and the study goes on."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = {**tiny_train_config, "workers": 1, "epochs": 1, "grad_clip": None,
            "mlflow": {"experiment": "tune-test", "tracking_uri": uri}}
    space = tmp_path / "nan.yaml"
    space.write_text(yaml.safe_dump({
        "base": base,
        "search": {"optim.name": {"choice": ["sgd"]}, "optim.lr": {"choice": [1.0e12]},
                   "schedule.name": {"choice": ["constant"]}},
        "tune": {"name": "nan", "num_samples": 2, "max_concurrent": 2, "max_failures": 2, "final_analysis": False,
                 "storage_path": str(tmp_path / "runs")},
    }))
    assert main(["tune", str(space)]) == 0
    _, parents, children = mlflow_state(uri)
    failed = [c for c in children if c.data.tags["raypose.trial_kind"] == "search"]
    assert len(children) == 2 and len(failed) == 1
    assert failed[0].info.status == "FAILED" and failed[0].data.tags["raypose.trial_status"] == "errored"
    assert "non-finite loss" in failed[0].data.tags["raypose.failure_reason"]
    summary = json.loads((tmp_path / "runs" / "nan" / "best" / "metrics.json").read_text())
    assert summary["best_trial"] != failed[0].data.tags["raypose.trial_id"]
    report = (tmp_path / "runs" / "nan" / "best" / "report.md").read_text()
    assert "non-finite loss" in report
    # Tune saw the trial end normally (no retry), with the poor score the searcher learns from
    from ray import tune

    from raypose.tuning.search import train_driver

    grid = tune.Tuner.restore(str(tmp_path / "runs" / "nan"), trainable=train_driver).get_results()
    assert grid.num_errors == 0 and grid.num_terminated == 2
    scores = sorted(r.metrics.get("oks_map") for r in grid)
    assert scores[0] == 0.0


def test_local_storage_on_a_multi_node_cluster_is_refused(ray_local, tiny_train_config, tmp_path):
    from raypose.errors import ConfigError
    from raypose.tuning.search import check_shared_storage
    from raypose.tuning.space import load_search_space

    space = load_search_space(write_space(tmp_path, tiny_train_config, "sqlite:///x.db", require_shared_storage=True))
    with pytest.raises(ConfigError, match="s3://"):
        check_shared_storage(space)


@pytest.mark.parametrize(("setting", "connected", "nodes", "required"), [
    (None, False, 1, False),  # Ray started here, one node: local paths are fine
    (None, False, 2, True),  # several nodes now
    (None, True, 1, True),  # a cluster raypose connected to: autoscaled nodes may come
    (False, True, 4, False),  # NFS on every node, declared
    (True, False, 1, True),
])
def test_shared_storage_is_required_on_any_cluster_raypose_connects_to(setting, connected, nodes, required):
    from raypose.tuning.search import shared_storage_required

    assert shared_storage_required(setting, connected, nodes) is required


def test_a_file_mlflow_store_on_a_connected_cluster_is_refused(ray_local, tiny_train_config, tmp_path, monkeypatch):
    from raypose.errors import ConfigError
    from raypose.tuning.search import check_shared_storage, is_local_tracking_uri
    from raypose.tuning.space import load_search_space

    assert is_local_tracking_uri("sqlite:///mlflow.db") and is_local_tracking_uri("file:///tmp/mlruns")
    assert not is_local_tracking_uri("http://head:5000") and not is_local_tracking_uri("databricks")
    space = load_search_space(write_space(tmp_path, tiny_train_config, "sqlite:///x.db",
                                          storage_path="s3://bucket/study"))
    check_shared_storage(space)  # Ray started here (one node): a local MLflow store is fine
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # as in a Ray job's driver
    with pytest.raises(ConfigError, match="mlflow server") as e:
        check_shared_storage(space)
    assert "MLFLOW_TRACKING_URI=http://" in str(e.value)


@pytest.mark.s3
def test_study_state_lives_in_s3_and_resume_finds_the_parent_run(s3_server, s3_bucket, mlflow_server,
                                                                 tiny_train_config, tmp_path):
    """A new job (here: a new call) resuming the study finds the parent run in the study's S3 folder."""
    from raypose.tuning.space import load_search_space
    from raypose.tuning.study import PARENT_STATE_FILE, _parent_run

    path = write_space(tmp_path, tiny_train_config, mlflow_server, storage_path=f"s3://{s3_bucket}/study")
    space = load_search_space(path)
    assert space.study_dir == f"s3://{s3_bucket}/study/mini"
    first = _parent_run(space, resume=False)
    first.end("KILLED")
    assert s3_server.keys(s3_bucket) == [f"study/mini/{PARENT_STATE_FILE}"]
    resumed = _parent_run(load_search_space(path), resume=True)
    assert resumed.run_id == first.run_id
    resumed.end("FINISHED")
    _, parents, children = mlflow_state(mlflow_server)
    assert [p.info.run_id for p in parents] == [first.run_id] and not children
    assert parents[0].info.status == "FINISHED"


@pytest.mark.s3
def test_submitted_search_runs_on_a_two_node_cluster(loopback_cluster, s3_server, s3_bucket, mlflow_server,
                                                     tiny_train_config, tmp_path):
    """The whole cluster path: `raypose submit` from a project folder to two nodes, S3 storage
    (moto), an MLflow tracking server; the final stage fetches the best checkpoint from S3 and
    uploads best/ beside Tune's state."""
    address, env = loopback_cluster.dashboard, loopback_cluster.env
    wait_for_jobs_api(address)
    # a project folder as a user's clone has it: the nodes import raypose from its upload only
    project = tmp_path / "project"
    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "raypose", project / "raypose", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "pyproject.toml", project / "pyproject.toml")
    write_space(project, tiny_train_config, "", num_samples=2, final_analysis=False,
                storage_path=f"s3://{s3_bucket}/study")
    space = yaml.safe_load((project / "space.yaml").read_text())
    del space["base"]["mlflow"]["tracking_uri"]  # the job takes the server from MLFLOW_TRACKING_URI
    (project / "space.yaml").write_text(yaml.safe_dump(space))
    proc = subprocess.run(
        [sys.executable, "-m", "raypose", "submit", "--address", address, "space.yaml"],
        cwd=project, env={**env, "MLFLOW_TRACKING_URI": mlflow_server}, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + loopback_cluster.head_logs()
    assert "SUCCEEDED" in proc.stdout
    assert "Study result" in proc.stdout  # the job's logs were streamed back
    _, parents, children = mlflow_state(mlflow_server)
    assert len(parents) == 1 and len(children) == 2
    assert all("oks_map" in c.data.metrics for c in children)
    assert parents[0].info.status == "FINISHED" and all(c.info.status != "RUNNING" for c in children)
    keys = s3_server.keys(s3_bucket, "study/mini/")
    assert {"study/mini/best/checkpoint.pth", "study/mini/best/metrics.json", "study/mini/best/report.md",
            "study/mini/mlflow_parent.json"} <= set(keys)
    assert any(k.endswith("/checkpoint.pth") for k in s3_server.keys(s3_bucket, "study/mini_train/"))
