"""Searches on Ray Tune: a quickstart-sized search on CPU, resume without duplicate MLflow runs,
and a real two-node Ray cluster on loopback running a submitted job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raypose.cli.main import main

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
    # every run ended; none is left RUNNING
    assert parents[0].info.status == "FINISHED"
    assert all(c.info.status in ("FINISHED", "KILLED") and c.info.end_time for c in children)
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

    # resuming a finished search runs nothing again and logs into the same MLflow runs, once
    assert main(["tune", str(space), "--resume"]) == 0
    _, parents_after, children_after = mlflow_state(uri)
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    assert sorted(c.info.run_id for c in children_after) == sorted(c.info.run_id for c in children)
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children_after)
    assert len(client.get_metric_history(parents[0].info.run_id, "best_oks_map")) == 1


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


def test_local_storage_on_a_multi_node_cluster_is_refused(tiny_train_config, tmp_path):
    from raypose.errors import ConfigError
    from raypose.tuning.search import check_shared_storage
    from raypose.tuning.space import load_search_space

    space = load_search_space(write_space(tmp_path, tiny_train_config, "sqlite:///x.db", require_shared_storage=True))
    with pytest.raises(ConfigError, match="s3://"):
        check_shared_storage(space)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster():
    """A head and a worker node (`ray start`) on loopback; yields the Jobs API address.

    `ray stop --force` ends every Ray process on the machine, so the session's in-process Ray
    is shut down first (the ``ray_local`` fixture starts it again if a later test needs it).
    """
    import tempfile

    import ray

    ray.shutdown()
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray >= 2.59 turns token authentication on for clusters started with `ray start`; a loopback
    # test cluster runs without it (head, worker and job client alike).
    env["RAY_AUTH_MODE"] = "disabled"
    gcs, dashboard = free_port(), free_port()
    # Ray's socket paths must stay under 108 characters: pytest's tmp_path is too deep.
    temp = tempfile.mkdtemp(prefix="rp-ray-", dir="/tmp")
    # Each node its own session folder, as on separate machines: two nodes sharing one would
    # unpack and delete the job's working_dir under each other.
    worker_temp = tempfile.mkdtemp(prefix="rp-ray-w-", dir="/tmp")
    head = [ray_bin, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            f"--temp-dir={temp}", "--disable-usage-stats"]
    subprocess.run(head, check=True, env=env, capture_output=True, timeout=180)
    try:
        worker = [ray_bin, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                  f"--temp-dir={worker_temp}"]
        subprocess.run(worker, check=True, env=env, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(worker_temp, ignore_errors=True)


def test_submitted_search_runs_on_a_two_node_cluster(two_node_cluster, tiny_train_config, tmp_path):
    address, env = two_node_cluster
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + 60
    while True:  # the dashboard's job agent comes up a few seconds after `ray start`
        try:
            JobSubmissionClient(address).list_jobs()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    project = tmp_path / "project"
    project.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # one filesystem under both nodes: it is shared storage, declared as such
    write_space(project, tiny_train_config, uri, num_samples=2, require_shared_storage=False, final_analysis=False)
    proc = subprocess.run(
        [sys.executable, "-m", "raypose", "submit", "--address", address, "space.yaml", "--working-dir", str(project)],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "SUCCEEDED" in proc.stdout
    assert "Study result" in proc.stdout  # the job's logs were streamed back
    _, parents, children = mlflow_state(uri)
    assert len(parents) == 1 and len(children) == 2
    assert all("oks_map" in c.data.metrics for c in children)
    # the final stage ran in the job and wrote best/ to the (shared) storage
    assert (project / "runs" / "mini" / "best" / "checkpoint.pth").is_file()
