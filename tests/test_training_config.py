"""Training config: YAML + --set overrides validate into TrainConfig; errors name key and choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypose.errors import ConfigError
from raypose.training.config import flatten, load_train_config, parse_overrides, set_dotted

REPO = Path(__file__).resolve().parents[1]


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
