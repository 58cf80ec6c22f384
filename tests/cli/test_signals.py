"""SIGTERM and SIGHUP stop raypose as Ctrl-C does: the MLflow run ends KILLED, temporary files
go, the resume hint is printed and the exit code is 130 (raypose.stop_signals, raypose.cli.main)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raypose.stop_signals import as_ctrl_c, treated_as_ctrl_c


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signals_raise_keyboard_interrupt_and_the_old_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt, match=f"stopped by {signal.Signals(signum).name}"):
        with treated_as_ctrl_c():
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler runs at once; never reached
    assert signal.getsignal(signum) == before


def test_a_stop_signal_goes_to_the_sigint_handler_tune_installed():
    calls = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))  # as Tune's does
    try:
        with treated_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT]  # Tune then stops gracefully, saves its state and returns


def test_raypose_s_handler_survives_ray_init(monkeypatch):
    """ray.init makes SIGTERM a sys.exit on the driver (ray/_private/worker.py); init_ray puts
    raypose's handler back."""
    import ray

    from raypose.training import ray_train

    def fake_init(*args, **kwargs):  # what ray.init does to SIGTERM, without starting Ray
        ray._private.utils.set_sigterm_handler(lambda signum, frame: sys.exit(signum))

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray_train, "_started_here", False)
    monkeypatch.setattr(ray_train, "check_ray_address", lambda: None)  # no cluster to reach
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = signal.getsignal(signal.SIGTERM)
    with treated_as_ctrl_c():
        ray_train.init_ray()
        assert signal.getsignal(signal.SIGTERM) is as_ctrl_c
        monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # connecting to a cluster: the same
        ray_train.init_ray()
        assert signal.getsignal(signal.SIGTERM) is as_ctrl_c
    assert signal.getsignal(signal.SIGTERM) == before


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def metrics_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        if path.is_file()
        else []
    )


def test_sigterm_stops_a_local_run_as_ctrl_c_does_and_the_rerun_resumes_it(tiny_train_config, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow 3 refuses a file store unless told
    raw = {
        **tiny_train_config,
        "name": "stopped",
        "epochs": 40,
        "schedule": {"name": "constant"},
        "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "signals", "system_metrics": False},
    }
    config = tmp_path / "stopped.yaml"
    config.write_text(yaml.safe_dump(raw))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "RAY_USAGE_STATS_ENABLED": "0", "MPLBACKEND": "Agg"}
    run_dir = tmp_path / "runs" / "stopped"
    command = [sys.executable, "-m", "raypose", "train", str(config), "--local"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not metrics_lines(run_dir):  # epoch 1 stored: epoch 2 is under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "epoch 1 did not finish in 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "raypose train: interrupted: stopped by SIGTERM; run 'stopped' keeps its checkpoints" in err
    assert f"resume it with: raypose train {config} --local" in err
    (killed,) = mlflow_runs(uri, "signals")
    assert killed.info.status == "KILLED"
    assert [
        p.name for p in scratch.iterdir() if p.name.startswith("raypose-")
    ] == []  # no checkpoint left in /tmp
    assert not (tmp_path / "runs" / "stopped.lock").exists()

    done = len(metrics_lines(run_dir))
    rerun = subprocess.run(
        [*command, "--set", f"epochs={done + 1}"], env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed after epoch {done}" in rerun.stderr
    (resumed,) = mlflow_runs(uri, "signals")  # the same run, not a second one
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert [m["epoch"] for m in metrics_lines(run_dir)] == list(range(1, done + 2))


@pytest.mark.ray
def test_sigterm_stops_a_search_as_ctrl_c_does(tiny_train_config, tmp_path):
    """`ray job stop`'s SIGTERM on `raypose tune`: Tune stops as on Ctrl-C (not Ray's sys.exit
    and a stack dump with the runs FAILED), the parent run ends KILLED and the resume hint is printed."""
    from tests.tuning.test_search import mlflow_state, scored_children, wait_for, write_space

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, tiny_train_config, uri)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raypose", "tune", str(space)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: scored_children(uri) >= 1, 600, "a trial's first evaluated epoch", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert f"Resume it with: raypose tune {space} --resume" in err
    _, parents, children = mlflow_state(uri)
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert all(c.info.status not in ("RUNNING", "FAILED") for c in children)
    assert not (tmp_path / "runs" / "mini" / "best").exists()


def test_sigterm_while_a_checkpoint_is_written_leaves_no_temporary_folder(
    tiny_train_config, tmp_path, monkeypatch
):
    import tempfile

    from raypose.training import run
    from raypose.training.config import validate_train_config
    from raypose.training.sessions import LocalSession

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real_save = run.save_checkpoint

    def save_then_sigterm(path, *args, **kwargs):
        real_save(path, *args, **kwargs)  # a whole checkpoint file in /tmp/raypose-ckpt-*/, not yet moved
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at once; never reached

    monkeypatch.setattr(run, "save_checkpoint", save_then_sigterm)
    config = validate_train_config(tiny_train_config)
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM"), treated_as_ctrl_c():
        run.run_training(config, LocalSession(config.run_dir))
    assert [p.name for p in scratch.iterdir() if p.name.startswith("raypose-")] == []
    assert not (tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_0001").exists()
