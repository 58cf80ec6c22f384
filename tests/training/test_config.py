"""Training config: YAML + --set overrides validate into TrainConfig; errors name key and choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypose.errors import ConfigError
from raypose.training.config import (
    flatten,
    load_train_config,
    parse_overrides,
    set_dotted,
    validate_train_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_overrides_are_parsed_as_yaml_and_applied(tmp_path):
    path = write(tmp_path, "epochs: 3\noptim: {name: sgd, lr: 0.02}\n")
    cfg = load_train_config(path, ["optim.lr=0.005", "optim.name=adamw", "model.freeze=roi", "model.min_size=[320, 352]"])
    assert cfg.epochs == 3
    assert cfg.optim.lr == pytest.approx(0.005)
    assert cfg.optim.name == "adamw"
    assert cfg.model.freeze == "roi"
    assert cfg.model.min_size == [320, 352]
    assert parse_overrides(["a.b=1e-3", "c=[1, 2]", "d=none"]) == {"a.b": 0.001, "c": [1, 2], "d": "none"}


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = write(tmp_path, "optim: {name: sgd, learning_rate: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    assert str(path) in str(err.value)
    assert "optim.learning_rate: unknown key" in str(err.value)


def test_bad_choice_lists_the_valid_ones(tmp_path):
    path = write(tmp_path, "schedule: {name: triangle}\nmodel: {freeze: everything}\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    text = str(err.value)
    assert "schedule.name" in text and "'onecycle'" in text and "'multistep'" in text
    assert "model.freeze" in text and "'roi'" in text and "'fpn'" in text
    assert "2 invalid setting(s)" in text


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        load_train_config(write(tmp_path, "epochs: 0\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(write(tmp_path, "epochs: [1\n"))
    with pytest.raises(ConfigError, match="expected key=value"):
        load_train_config(write(tmp_path, "epochs: 1\n"), ["epochs"])
    with pytest.raises(ConfigError, match="storage_path"):
        load_train_config(write(tmp_path, "storage_path: http://x/y\n"))


def test_flatten_and_set_dotted():
    tree: dict = {}
    set_dotted(tree, "a.b.c", 1)
    set_dotted(tree, "a.d", 2)
    assert tree == {"a": {"b": {"c": 1}, "d": 2}}
    assert flatten(tree) == {"a.b.c": 1, "a.d": 2}
    with pytest.raises(ConfigError, match="is a value"):
        set_dotted(tree, "a.d.e", 3)


def test_shipped_configs_validate():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ should ship example training configs"
    for path in configs:
        cfg = load_train_config(path)
        assert cfg.model.num_keypoints in (17, 23)


def test_resolve_config_fixes_paths_and_tracking_uri_once(tiny_train_config, tmp_path, monkeypatch):
    from raypose.training.config import resolve_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = {**tiny_train_config, "storage_path": "relative/runs", "data": {"root": "data/x"},
           "model": {**tiny_train_config["model"], "weights": "w/model.pth"},
           "mlflow": {"enabled": True, "tracking_uri": "sqlite:///rel/mlflow.db"}}
    cfg = resolve_config(validate_train_config(raw), base_dir=tmp_path)
    assert cfg.storage_path == str(tmp_path / "relative/runs")
    assert cfg.data.root == str(tmp_path / "data/x") and cfg.model.weights == str(tmp_path / "w/model.pth")
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path}/rel/mlflow.db"  # four slashes: absolute
    # URIs and absolute paths are left alone; resolving twice changes nothing
    remote = resolve_config(validate_train_config({**raw, "storage_path": "s3://b/runs",
                                                   "mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}))
    assert remote.storage_path == "s3://b/runs" and remote.mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert resolve_config(cfg, base_dir="/elsewhere") == cfg
    # the default (no URI configured) is MLflow's own, made absolute
    monkeypatch.chdir(tmp_path)
    default = resolve_config(validate_train_config({**raw, "mlflow": {}})).mlflow.tracking_uri
    assert default.startswith(("sqlite:////", "file:///")) and str(tmp_path) in default


def test_configs_are_frozen(tiny_train_config):
    import pydantic

    cfg = validate_train_config(tiny_train_config)
    with pytest.raises(pydantic.ValidationError):
        cfg.epochs = 3
    with pytest.raises(pydantic.ValidationError):
        cfg.optim.lr = 1.0


@pytest.mark.parametrize(("value", "parsed"), [(True, True), ("yes", True), ("true", True), (False, False),
                                               ("no", False), ("auto", "auto")])
def test_use_gpu_accepts_booleans_and_auto(tiny_train_config, tmp_path, value, parsed):
    import yaml

    assert validate_train_config({**tiny_train_config, "use_gpu": value}).use_gpu == parsed
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config))
    assert load_train_config(path, [f"use_gpu={value}"]).use_gpu == parsed  # --set use_gpu=yes is YAML's true
    with pytest.raises(ConfigError, match="use_gpu"):
        validate_train_config({**tiny_train_config, "use_gpu": "maybe"})


@pytest.mark.parametrize("name", ["../x", "../../etc", "a/b", "/abs", "a\\\\b", "..", ".", "", "  ", "a\\0b"])
def test_run_name_must_be_a_plain_folder_name(tmp_path, name):
    with pytest.raises(ConfigError, match=r"name: .*must be a plain folder name .*set storage_path to change where"):
        load_train_config(write(tmp_path, "epochs: 1\n"), [f"name={name!r}"])


@pytest.mark.parametrize("name", ["run-1", "a..b", "coco_r50.lr3e-4", "study-7_trial"])
def test_plain_run_names_stay_under_the_storage_folder(tmp_path, name):
    cfg = load_train_config(write(tmp_path, f"storage_path: {tmp_path / 'runs'}\n"), [f"name={name}"])
    assert Path(cfg.run_dir).parent == tmp_path / "runs" and Path(cfg.run_dir).name == name


def test_weights_min_match_is_set_like_any_model_key(tmp_path):
    cfg = load_train_config(write(tmp_path, "epochs: 1\n"), ["model.weights_min_match=0"])
    assert cfg.model.weights_min_match == 0
    with pytest.raises(ConfigError, match="model.weights_min_match"):
        load_train_config(write(tmp_path, "epochs: 1\n"), ["model.weights_min_match=2"])
