"""Training config: YAML + --set overrides validate into TrainConfig; errors name key and choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypose.errors import ConfigError, InputError
from raypose.training.config import (
    TrainConfig,
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
    with pytest.raises(InputError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="not valid YAML"):
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


# --- YAML files that read as something else than they say (duplicate keys, encodings, shapes) ---


def tiny_cpu_with(tmp_path: Path, tail: str) -> Path:
    path = tmp_path / "tiny_cpu.yaml"
    path.write_text((REPO / "configs" / "tiny_cpu.yaml").read_text() + tail)
    return path


def test_a_second_section_of_the_same_name_is_refused_not_merged(tmp_path):
    # PyYAML keeps the last `optim:` only: this config would train SGD at lr 0.02, not AdamW at 1e-3
    path = tiny_cpu_with(tmp_path, "optim:\n  weight_decay: 0.05\n")
    lines = path.read_text().splitlines()
    first, second = (i + 1 for i, line in enumerate(lines) if line.startswith("optim:"))
    with pytest.raises(InputError) as err:
        load_train_config(path)
    text = str(err.value)
    assert str(path) in text and "'optim'" in text
    assert f"line {first}" in text and f"line {second}" in text and "one" in text


@pytest.mark.parametrize(("text", "key", "lines"), [
    ("epochs: 3\nbatch_size: 2\nepochs: 5\n", "'epochs'", (1, 3)),
    ("optim:\n  lr: 0.1\n  name: sgd\n  lr: 0.2\n", "'optim.lr'", (2, 4)),
    ("optim: {lr: 0.1, lr: 0.2}\n", "'optim.lr'", (1, 1)),
    ("activation_stats: [a]\nmodel: {freeze: roi}\nmodel: {freeze: fpn}\n", "'model'", (2, 3)),
])
def test_repeated_keys_are_refused_at_any_depth(tmp_path, text, key, lines):
    with pytest.raises(InputError) as err:
        load_train_config(write(tmp_path, text))
    message = str(err.value)
    assert key in message and f"line {lines[0]}" in message and f"line {lines[1]}" in message
    assert str(tmp_path / "cfg.yaml") in message


def test_a_config_that_is_not_utf8_names_the_byte_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("epochs: 3\n# r\xe9glages du mod\xe8le\nbatch_size: 2\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        load_train_config(path)
    text = str(err.value)
    assert str(path) in text and "line 2" in text and "UTF-8" in text and "byte 13" in text


def test_a_binary_file_given_as_config_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match=r"checkpoint\.pth.*not a text file"):
        load_train_config(path)


def test_a_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "epochs: 3\noptim: {name: sgd,\nlr: [1\n")
    with pytest.raises(InputError) as err:
        load_train_config(path)
    assert str(path) in str(err.value) and "line " in str(err.value) and "not valid YAML" in str(err.value)
    assert "<unicode string>" not in str(err.value)


@pytest.mark.parametrize(("text", "kind"), [("- epochs: 3\n", "a list"), ("epochs 3\n", "a string"), ("3\n", "a number")])
def test_the_top_level_must_be_a_mapping(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_train_config(path)
    assert str(path) in str(err.value) and "mapping" in str(err.value) and kind in str(err.value)


@pytest.mark.parametrize("section", ["optim", "data", "model", "schedule", "mlflow", "data.synth", "inference"])
@pytest.mark.parametrize("value", ["5", "[sgd]", "adamw"])
def test_a_section_that_is_not_a_mapping_names_the_key(tmp_path, section, value):
    outer, _, inner = section.partition(".")
    text = f"{outer}:\n  {inner}: {value}\n" if inner else f"{section}: {value}\n"
    with pytest.raises(ConfigError) as err:
        load_train_config(write(tmp_path, text))
    assert f"{section}: must be a mapping" in str(err.value) and str(tmp_path / "cfg.yaml") in str(err.value)


@pytest.mark.parametrize("scale_range", ["[0, 0]", "[0, 1.2]", "[-1, 1]", "[1.2, 0.8]", "[1, .inf]"])
def test_scale_range_must_be_a_positive_increasing_pair(tmp_path, scale_range):
    with pytest.raises(ConfigError, match=r"data\.scale_range"):
        load_train_config(write(tmp_path, f"data: {{scale_range: {scale_range}}}\n"))
    assert load_train_config(write(tmp_path, "data: {scale_range: [1, 1]}\n")).data.scale_range == (1.0, 1.0)


def float_settings(model: type, prefix: str = "") -> dict[str, bool]:
    """Every float-valued setting of a config model, nested models included: dotted key -> whether
    it holds a pair or list of floats (``optim.betas``) rather than one number."""
    import typing

    from pydantic import BaseModel

    keys: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        args = [field.annotation, *typing.get_args(field.annotation)]
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            keys.update(float_settings(nested[0], f"{prefix}{name}."))
        elif any(typing.get_origin(a) in (tuple, list) and float in typing.get_args(a) for a in args):
            keys[f"{prefix}{name}"] = True
        elif float in args:
            keys[f"{prefix}{name}"] = False
    return keys


def test_every_float_setting_is_found():
    keys = float_settings(TrainConfig)
    assert {"optim.lr", "grad_clip", "cpus_per_worker", "model.weights_min_match", "inference.oks_nms_thresh",
            "mlflow.system_metrics_interval_s", "data.synth.clutter"} <= set(keys)


@pytest.mark.parametrize("key", float_settings(TrainConfig))
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_no_float_setting_takes_inf_or_nan(tmp_path, key, value):
    setting = f"[0.5, {value}]" if float_settings(TrainConfig)[key] else value
    with pytest.raises(ConfigError) as err:
        load_train_config(write(tmp_path, "epochs: 1\n"), [f"{key}={setting}"])
    assert key in str(err.value) and "finite" in str(err.value)


@pytest.mark.parametrize("text", ["optim: {lr: .nan}\n", "optim: {betas: [0.9, .inf]}\n", "data: {scale_range: [.nan, 1]}\n",
                                  "schedule: {milestones: [0.5, .inf]}\n", "grad_clip: 1.0e+400\n"])
def test_non_finite_numbers_in_a_file_are_refused(tmp_path, text):
    with pytest.raises(ConfigError, match="finite"):
        load_train_config(write(tmp_path, text))


def test_home_is_expanded_in_every_path_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    cfg = load_train_config(write(tmp_path, (
        "storage_path: ~/raypose-runs\n"
        "data: {root: ~/data, train_ann: ~/ann/train.json, val_images: ~/val, test_ann: ~/t.json, test_images: ~/ti}\n"
        "model: {weights: ~/w.pth, backbone_weights: ~/b.pth}\n"
        "mlflow: {tracking_uri: ~/mlruns}\n"
    )))
    assert cfg.storage_path == str(home / "raypose-runs") and cfg.run_dir.startswith(str(home))
    assert cfg.data.root == str(home / "data") and cfg.data.path(cfg.data.train_ann) == home / "ann/train.json"
    assert cfg.data.path(cfg.data.val_images) == home / "val" and cfg.data.path(cfg.data.test_ann) == home / "t.json"
    assert cfg.data.test_images == str(home / "ti")
    assert cfg.model.weights == str(home / "w.pth") and cfg.model.backbone_weights == str(home / "b.pth")
    assert cfg.mlflow.tracking_uri == (home / "mlruns").as_uri()
    assert not (tmp_path / "~").exists()
    # URIs are not paths: a ~ in them is the URI's own
    remote = load_train_config(write(tmp_path, "storage_path: s3://bucket/~runs\nmlflow: {tracking_uri: 'http://h/~x'}\n"))
    assert remote.storage_path == "s3://bucket/~runs" and remote.mlflow.tracking_uri == "http://h/~x"
    assert load_train_config(write(tmp_path, "epochs: 1\n"), ["storage_path=~/r"]).storage_path == str(home / "r")


@pytest.mark.parametrize("name", [".hidden", "..x", ".", "a/../b"])
def test_run_names_with_a_leading_dot_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=r"name: .*must be a plain folder name"):
        load_train_config(write(tmp_path, f"name: {name!r}\n"))


@pytest.mark.parametrize("pair", ["optim.betas=[0.9", "model.freeze={a: 1, a: 2}", "name=x\x07"])
def test_a_set_value_that_is_not_yaml_names_the_argument(tmp_path, pair):
    with pytest.raises(ConfigError) as err:
        load_train_config(write(tmp_path, "epochs: 1\n"), [pair])
    assert f"--set {pair}" in str(err.value)
