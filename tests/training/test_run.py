"""A training run in one process: epochs, checkpoints, resume, the overfitting check, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raypose.checkpoint import load_checkpoint, load_model_from_checkpoint
from raypose.cli.main import main
from raypose.data.prepare import ensure_data
from raypose.errors import ConfigError, InputError
from raypose.training.config import validate_train_config
from raypose.training.overfit import run_overfit
from raypose.training.run import run_training
from raypose.training.sessions import LocalSession


class CrashAfter(LocalSession):
    """A session that dies right after reporting epoch ``crash_epoch`` (a preempted node, say)."""

    def __init__(self, *args, crash_epoch: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_epoch = crash_epoch

    def report(self, metrics, checkpoint_dir):
        super().report(metrics, checkpoint_dir)
        if metrics["epoch"] == self.crash_epoch:
            raise RuntimeError("node lost")


def test_interrupted_run_resumes_where_it_stopped(tiny_train_config, tmp_path):
    cfg = validate_train_config({**tiny_train_config, "epochs": 3})
    with pytest.raises(RuntimeError, match="node lost"):
        run_training(cfg, CrashAfter(cfg.run_dir, crash_epoch=2))
    before = load_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_0002" / "checkpoint.pth")
    resumed = run_training(cfg, LocalSession(cfg.run_dir))
    assert [m["epoch"] for m in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == before["history"]  # epochs 1-2 restored, only epoch 3 ran
    final = load_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_0003" / "checkpoint.pth")
    assert final["scheduler"]["last_epoch"] == 6  # 3 epochs x 2 optimizer steps: the schedule went on
    lines = (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_local_run_checkpoints_and_resumes_at_the_right_epoch(tiny_train_config, tmp_path):
    # a LambdaLR schedule: its length may change on resume (1cycle's may not, see below)
    tiny_train_config = {**tiny_train_config, "schedule": {"name": "cosine"}}
    cfg = validate_train_config({**tiny_train_config, "epochs": 2, "keep_checkpoints": 1})
    first = run_training(cfg, LocalSession(cfg.run_dir, keep=1))
    assert [m["epoch"] for m in first["history"]] == [1, 2]
    assert all(0.0 <= m["oks_map"] <= 1.0 for m in first["history"])
    ckpts = sorted(p.name for p in (tmp_path / "runs" / "tiny" / "checkpoints").iterdir())
    assert ckpts == ["epoch_0002"]  # keep=1 prunes the older one
    ckpt = load_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_0002" / "checkpoint.pth")
    assert ckpt["epoch"] == 2 and ckpt["keypoint_names"][-1] == "right_heel"
    assert ckpt["config"]["optim"]["name"] == "adamw"
    assert {"optimizer", "scheduler", "scaler", "history"} <= set(ckpt)

    longer = validate_train_config({**tiny_train_config, "epochs": 4, "keep_checkpoints": 1})
    resumed = run_training(longer, LocalSession(longer.run_dir, keep=1))
    assert [m["epoch"] for m in resumed["history"]] == [1, 2, 3, 4]
    assert resumed["history"][:2] == first["history"]  # epochs 1-2 were restored, not rerun
    lines = (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    # the scheduler continued from its saved state: its step count is 4 epochs x 2 steps
    final = load_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_0004" / "checkpoint.pth")
    assert final["scheduler"]["last_epoch"] == 8
    model, model_cfg = load_model_from_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_0004" / "checkpoint.pth")
    assert model_cfg.num_keypoints == 23 and not model.training


def test_overfitting_a_few_images_raises_training_oks_map(tiny_train_config, tmp_path):
    """The design notes' sanity check, and the issue's 'a short run raises OKS-mAP on its own images'."""
    cfg = validate_train_config({**tiny_train_config, "data": {**tiny_train_config["data"], "photometric": False}})
    torch.manual_seed(0)
    result = run_overfit(cfg, num_images=2, epochs=40, out_dir=tmp_path / "overfit", eval_every=40, val_images=2)
    untrained, trained = result.first, result.last
    assert untrained["train_oks_map"] < 0.05
    assert trained["train_oks_map"] > 0.3
    assert trained["train_oks_map"] > untrained["train_oks_map"] + 0.25
    assert trained["train_loss"] < 0.5 * untrained["train_loss"]
    assert (tmp_path / "overfit" / "overfit.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "overfit" / "overfit.json").read_text())
    assert len(saved["history"]) == 41 and len(saved["image_ids"]) == 2


def test_too_few_images_for_one_step_is_a_clear_error(tiny_train_config):
    cfg = validate_train_config({**tiny_train_config, "batch_size": 4, "accumulate": 2})
    with pytest.raises(ConfigError, match="one optimizer step needs batch_size x accumulate x workers = 8"):
        run_training(cfg, LocalSession(cfg.run_dir))


def test_keypoint_count_mismatch_is_a_config_error(tiny_train_config):
    cfg = validate_train_config({**tiny_train_config, "model": {**tiny_train_config["model"], "num_keypoints": 17}})
    with pytest.raises(ConfigError, match="has 23 keypoints but model.num_keypoints is 17"):
        run_training(cfg, LocalSession(cfg.run_dir))


def test_missing_coco_data_says_how_to_get_it(tiny_train_config, tmp_path):
    cfg = validate_train_config({**tiny_train_config, "data": {"root": str(tmp_path / "coco"), "kind": "coco"}})
    with pytest.raises(InputError, match="raypose data prepare --root"):
        ensure_data(cfg.data)


def test_missing_synthetic_data_is_generated(tiny_train_config, tmp_path):
    data = {"root": str(tmp_path / "gen"), "kind": "synthetic", "synth": {"train": 3, "val": 2, "seed": 1}}
    cfg = validate_train_config({**tiny_train_config, "data": data})
    ensure_data(cfg.data)
    merged = json.loads((tmp_path / "gen" / "annotations" / "person_keypoints_val2017_foot23.json").read_text())
    assert len(merged["images"]) == 2 and len(merged["categories"][0]["keypoints"]) == 23


def test_cli_train_local_and_bad_config(tiny_train_config, tmp_path, capsys):
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config))
    assert main(["train", str(path), "--local", "--set", "name=cli", "--activation-stats", "backbone.body.layer4"]) == 0
    out = capsys.readouterr().out
    assert "done: 1 epochs" in out
    metrics = json.loads((tmp_path / "runs" / "cli" / "metrics.jsonl").read_text())
    assert 0.0 <= metrics["act/backbone.body.layer4/near_zero"] <= 1.0
    assert (tmp_path / "runs" / "cli" / "config.yaml").is_file()

    assert main(["train", str(path), "--set", "optim.name=rmsprop"]) == 2
    err = capsys.readouterr().err
    assert "optim.name" in err and "'sgd'" in err and "'adamw'" in err


def test_scaled_lr_reaches_the_optimizer_and_mlflow(tiny_train_config, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = {**tiny_train_config, "name": "scaled", "batch_size": 2,
           "optim": {"name": "sgd", "lr": 0.02, "lr_scaling": "linear", "reference_batch": 16},
           "schedule": {"name": "constant"}, "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "scale"}}
    cfg = validate_train_config(raw)
    out = run_training(cfg, LocalSession(cfg.run_dir))
    assert out["history"][-1]["lr"] == pytest.approx(0.02 * 2 / 16)  # 2 images per step against 16
    client = MlflowClient(uri)
    params = client.search_runs([client.get_experiment_by_name("scale").experiment_id])[0].data.params
    assert float(params["optim.effective_lr"]) == pytest.approx(0.0025) and params["optim.images_per_step"] == "2"
    # checkpoint folders and files follow the umask, as plain mkdir() and open() would
    from raypose.io import default_mode

    folder = tmp_path / "runs" / "scaled" / "checkpoints" / "epoch_0001"
    assert folder.stat().st_mode & 0o777 == default_mode(directory=True)
    assert (folder / "checkpoint.pth").stat().st_mode & 0o777 == default_mode()


def final_weights(run_dir) -> dict:
    last = sorted((run_dir / "checkpoints").glob("epoch_*"))[-1]
    return load_checkpoint(last / "checkpoint.pth")["model"]


def test_a_resumed_run_trains_as_an_uninterrupted_one(tiny_train_config, tmp_path):
    """Sampler order and augmentations are seeded per epoch: crash-and-resume gives the same weights."""
    raw = {**tiny_train_config, "epochs": 2, "schedule": {"name": "constant"}}
    straight = validate_train_config({**raw, "name": "straight"})
    run_training(straight, LocalSession(straight.run_dir))
    crashed = validate_train_config({**raw, "name": "crashed"})
    with pytest.raises(RuntimeError, match="node lost"):
        run_training(crashed, CrashAfter(crashed.run_dir, crash_epoch=1))
    torch.manual_seed(1234)  # whatever the process did in between
    run_training(crashed, LocalSession(crashed.run_dir))
    a, b = final_weights(tmp_path / "runs" / "straight"), final_weights(tmp_path / "runs" / "crashed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("override", "message"), [
    ({"model": {"backbone": "resnet34"}}, "model.backbone: 'resnet18' -> 'resnet34'"),
    ({"optim": {"name": "sgd", "lr": 0.001}}, "optim.name: 'adamw' -> 'sgd'"),
    ({"epochs": 3}, "epochs: 1 -> 3"),  # 1cycle's length is fixed when it starts
    ({"batch_size": 1}, "batch_size: 2 -> 1"),
])
def test_a_resume_that_changes_what_cannot_change_is_refused(tiny_train_config, tmp_path, override, message):
    cfg = validate_train_config(tiny_train_config)
    run_training(cfg, LocalSession(cfg.run_dir))
    changed = {**tiny_train_config, **{k: ({**tiny_train_config[k], **v} if isinstance(v, dict) else v)
                                       for k, v in override.items()}}
    with pytest.raises(ConfigError) as err:
        run_training(validate_train_config(changed), LocalSession(cfg.run_dir))
    assert message in str(err.value) and "--set name=tiny-2" in str(err.value)


def test_the_cli_refuses_before_anything_starts_and_keeps_the_run_record(tiny_train_config, tmp_path, capsys):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config))
    assert main(["train", str(path), "--local"]) == 0
    record = tmp_path / "runs" / "tiny" / "config.yaml"
    before = record.read_text()
    assert main(["train", str(path), "--local", "--set", "model.num_keypoints=17"]) == 2
    assert "model.num_keypoints: 23 -> 17" in capsys.readouterr().err
    assert record.read_text() == before  # the record still describes the checkpoints there


def test_a_changed_lr_takes_effect_on_resume(tiny_train_config, tmp_path):
    raw = {**tiny_train_config, "schedule": {"name": "constant"}, "optim": {"name": "sgd", "lr": 0.001}}
    cfg = validate_train_config(raw)
    first = run_training(cfg, LocalSession(cfg.run_dir))
    assert first["history"][-1]["lr"] == pytest.approx(0.001)
    more = validate_train_config({**raw, "epochs": 2, "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.5}})
    session = LocalSession(cfg.run_dir)
    resumed = run_training(more, session)
    assert resumed["history"][-1]["lr"] == pytest.approx(0.01)
    ckpt = session.latest_checkpoint()
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.5


def test_an_interrupted_checkpoint_save_never_blocks_a_resume(tiny_train_config, tmp_path, monkeypatch):
    """Ctrl-C while epoch 2's checkpoint is moved into place (a copy when the temporary folder is
    on another disk): the .tmp folder is not a checkpoint, metrics.jsonl has no line for the
    epoch, and the rerun resumes after epoch 1 and cleans up."""
    from raypose.storage import move_folder as real_move

    cfg = validate_train_config({**tiny_train_config, "epochs": 2, "schedule": {"name": "constant"}})

    def move_then_interrupt(src, dst, *args, **kwargs):
        real_move(src, dst, *args, **kwargs)
        if "epoch_0002" in str(dst):
            target = next(Path(dst).iterdir())
            target.write_bytes(target.read_bytes()[:1000])  # half-written, as a killed copy leaves it
            raise KeyboardInterrupt

    monkeypatch.setattr("raypose.training.sessions.move_folder", move_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, LocalSession(cfg.run_dir))
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "checkpoints" / "epoch_0002.tmp").is_dir()
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]

    resumed = run_training(cfg, LocalSession(cfg.run_dir))
    assert [m["epoch"] for m in resumed["history"]] == [1, 2]
    assert not (run_dir / "checkpoints" / "epoch_0002.tmp").exists()
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert load_checkpoint(run_dir / "checkpoints" / "epoch_0002" / "checkpoint.pth")["epoch"] == 2


def test_checkpoints_leave_no_temporary_folder_and_their_cost_is_logged(tiny_train_config, tmp_path, monkeypatch):
    """Each checkpoint is written to a temporary folder the session takes: moved into the run
    (LocalSession) or deleted after its upload (Ray). MLflow gets what it cost per epoch."""
    import tempfile

    from mlflow.tracking import MlflowClient

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = validate_train_config({**tiny_train_config, "epochs": 2, "schedule": {"name": "constant"},
                                 "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "costs",
                                            "system_metrics_interval_s": 0.5}})
    session = LocalSession(cfg.run_dir)
    run_training(cfg, session)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("raypose-")] == []
    run_dir = tmp_path / "runs" / "tiny" / "checkpoints"
    assert [s.name for s in session.stored] == ["epoch_0001", "epoch_0002"]
    assert session.stored[-1].bytes == sum(f.stat().st_size for f in (run_dir / "epoch_0002").rglob("*"))
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("costs").experiment_id])[0]
    sizes = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "checkpoint_mb"), key=lambda m: m.step)]
    assert sizes == pytest.approx([s.bytes / 1e6 for s in session.stored])
    assert run.data.metrics["checkpoint_wait_s"] >= run.data.metrics["checkpoint_upload_s"] > 0


def test_mlflow_gets_curves_as_metrics_settings_as_tags_and_the_run_s_files(tiny_train_config, tmp_path):
    """What MLflow's charts and Compare views show: metrics that change (oks_map first), not
    bookkeeping constants (tags); the resolved config, curves, metrics file, datasets and system metrics."""
    import json

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = validate_train_config({**tiny_train_config, "epochs": 2, "schedule": {"name": "constant"},
                                 "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "ui",
                                            "params": ["optim.lr", "model.freeze"],
                                            "system_metrics_interval_s": 0.5}})
    run_training(cfg, LocalSession(cfg.run_dir))
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("ui").experiment_id])[0]
    assert set(run.data.params) == {"optim.lr", "model.freeze"}  # as mlflow.params says; the context as tags
    assert run.data.tags["raypose.epochs"] == "2" and run.data.tags["raypose.optim.images_per_step"] == "2"
    assert next(iter(run.data.metrics)) == "oks_map"  # system metrics start after the first epoch's
    assert not {"evaluated", "world_size", "images", "optimizer_steps", "checkpoint_score"} & set(run.data.metrics)
    assert run.data.tags["raypose.world_size"] == "1" and int(run.data.tags["raypose.optimizer_steps_per_epoch"]) > 0
    assert any(k.startswith("system/cpu") for k in run.data.metrics)  # MLflow's own monitor, on rank 0
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "training_curves.png", "metrics.json"} <= files
    local = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
    assert [m["epoch"] for m in json.loads(open(local).read())["history"]] == [1, 2]
    contexts = {d.dataset.name: [t.value for t in d.tags] for d in run.inputs.dataset_inputs}
    assert contexts == {"synthetic-person_keypoints_train2017_foot23": ["train"],
                        "synthetic-person_keypoints_val2017_foot23": ["validation"]}


def test_metrics_of_epochs_past_the_last_checkpoint_are_dropped(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "epoch_0001").mkdir(parents=True)
    (run_dir / "checkpoints" / "epoch_0001" / "checkpoint.pth").write_bytes(b"x")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 2}\n')
    LocalSession(run_dir)
    assert (run_dir / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_unevaluated_epochs_report_no_score_and_keep_the_evaluated_checkpoint(tiny_train_config, tmp_path):
    """eval_every=2 over 3 epochs: epoch 1 has no oks_map (none carried forward); the kept
    checkpoints are the best evaluated one and the latest, never an unevaluated one ranked on an old score."""
    cfg = validate_train_config({**tiny_train_config, "epochs": 3, "eval_every": 2, "keep_checkpoints": 2,
                                 "schedule": {"name": "constant"}})
    out = run_training(cfg, LocalSession(cfg.run_dir, keep=2))
    history = out["history"]
    assert "oks_map" not in history[0] and history[0]["evaluated"] == 0 and history[0]["checkpoint_score"] == -1.0
    assert all("oks_map" in m and m["checkpoint_score"] == m["oks_map"] for m in history[1:])
    lines = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert "oks_map" not in lines[0] and "oks_map" in lines[1]
    kept = sorted(p.name for p in (tmp_path / "runs" / "tiny" / "checkpoints").iterdir())
    assert kept == ["epoch_0002", "epoch_0003"]


# --- One run per name at a time: runs/NAME.lock --------------------------------------------


def write_lock(path: Path, host: str, pid: int) -> str:
    text = json.dumps({"host": host, "pid": pid, "started": "2026-01-01T00:00:00+00:00"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


@pytest.fixture
def twin_config(tiny_train_config, tmp_path) -> Path:
    import yaml

    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump({**tiny_train_config, "name": "twin"}))
    return path


def test_a_run_name_in_use_by_a_live_process_is_refused(twin_config, tmp_path, capsys):
    import socket
    import subprocess

    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = tmp_path / "runs" / "twin.lock"
        text = write_lock(lock, socket.gethostname(), holder.pid)
        assert main(["train", str(twin_config), "--local"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("raypose train: error: ") and "Traceback" not in err
        assert str(lock) in err and f"process {holder.pid} on {socket.gethostname()}" in err
        assert "--set name=twin-2" in err and "Wait for that run to finish" in err
        assert lock.read_text() == text  # the holder's lock is untouched
        assert not (tmp_path / "runs" / "twin").exists()  # nothing started
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_from_another_host_is_respected_and_says_how_to_remove_it(twin_config, tmp_path, capsys):
    lock = tmp_path / "runs" / "twin.lock"
    write_lock(lock, "gpu-node-7.invalid", 4242)
    assert main(["train", str(twin_config), "--local"]) == 2
    err = capsys.readouterr().err
    assert "process 4242 on gpu-node-7.invalid" in err and f"rm {lock}" in err and lock.is_file()


def test_the_lock_is_held_for_the_whole_run_and_a_stale_one_is_taken_over(twin_config, tmp_path, monkeypatch,
                                                                          caplog):
    import os
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is free now: a run killed with SIGKILL leaves such a lock
    lock = tmp_path / "runs" / "twin.lock"
    write_lock(lock, socket.gethostname(), dead.pid)
    seen = []

    def fake_training(config, session):
        seen.append(json.loads(lock.read_text()))
        return {"history": [{"epoch": 1}], "best": {}}

    monkeypatch.setattr("raypose.training.run.run_training", fake_training)
    with caplog.at_level("WARNING"):
        assert main(["train", str(twin_config), "--local"]) == 0
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname() and seen[0]["started"]
    assert f"stale lock {lock}" in caplog.text and f"process {dead.pid}" in caplog.text
    assert not lock.exists()  # released at the end

    def interrupted(config, session):
        raise KeyboardInterrupt

    monkeypatch.setattr("raypose.training.run.run_training", interrupted)
    assert main(["train", str(twin_config), "--local"]) == 130
    assert not lock.exists()  # released on an interrupt too


def test_resuming_on_another_training_set_is_refused_naming_both(tiny_train_config, synth_data, tmp_path, capsys):
    """A run killed in epoch 2 and rerun with data.root at a smaller set would train on with the
    wrong steps per epoch (and a 1cycle schedule that never anneals): refused, naming both sets."""
    import shutil

    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**tiny_train_config, "schedule": {"name": "constant"}}))
    assert main(["train", str(path), "--local"]) == 0
    other = tmp_path / "other"
    shutil.copytree(synth_data.root, other)
    train_ann = other / synth_data.train_ann.relative_to(synth_data.root)
    coco = json.loads(train_ann.read_text())
    kept = {image["id"] for image in coco["images"][:3]}
    coco["images"] = [image for image in coco["images"] if image["id"] in kept]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
    train_ann.write_text(json.dumps(coco))
    capsys.readouterr()

    assert main(["train", str(path), "--local", "--set", "epochs=2", "--set", f"data.root={other}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypose train: error: run 'tiny' was trained on ") and "Traceback" not in err
    assert f"{synth_data.train_ann.resolve()} (6 images, sha256 " in err
    assert f"{train_ann.resolve()} (3 images, sha256 " in err and "--set name=tiny-2" in err
    lines = (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]  # nothing trained on the other set
