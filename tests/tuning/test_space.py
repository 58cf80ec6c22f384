"""Search space files: validation, conditionals, alternatives, the baseline trial, overrides."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from raypose.errors import ConfigError, RayposeError
from raypose.tuning.space import BASELINE_RECIPE, TRIAL_KIND_KEY, SpaceSampler, load_search_space

REPO = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = """
base: base.yaml
search:
  optim.name: {choice: [sgd, adamw]}
  optim.lr:
    - {loguniform: [1.0e-4, 1.0e-3], when: {optim.name: adamw}}
    - {loguniform: [1.0e-2, 5.0e-2], when: {optim.name: sgd}}
  optim.momentum: {uniform: [0.8, 0.95], when: {optim.name: sgd}}
  schedule.pct_start: {uniform: [0.1, 0.4], when: {schedule.name: onecycle}}
  accumulate: {int: [1, 4]}
tune: {num_samples: 12, seed: 3}
"""
BASE = "epochs: 3\nschedule: {name: onecycle}\nmodel: {backbone: resnet18, weights: null, backbone_weights: null}\n"


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def sample(space, n: int, optuna_params: list | None = None) -> list[dict]:
    """The configs of ``n`` trials, as the sampler returns them; Optuna's own names go to ``optuna_params``."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=space.tune.seed))
    sampler = SpaceSampler(space)
    trials = []
    for i in range(n):
        trial = study.ask()
        trials.append(sampler(trial))
        if optuna_params is not None:
            optuna_params.append(dict(trial.params))
        study.tell(trial, float(i % 3))
    return trials


def test_first_trial_is_the_torchvision_baseline(space_file):
    space = load_search_space(space_file)
    first = sample(space, 1)[0]
    assert first[TRIAL_KIND_KEY] == "baseline"
    cfg = space.trial_config(first, name="b")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.02, 0.9, 1e-4)
    assert cfg.schedule.name == "multistep" and cfg.schedule.milestones == BASELINE_RECIPE["schedule.milestones"]
    assert cfg.model.backbone == "resnet18" and cfg.epochs == 3  # everything else comes from the base


def test_conditionals_and_alternatives(space_file):
    space = load_search_space(space_file)
    optuna_params: list[dict] = []
    trials = sample(space, 12, optuna_params)[1:]
    assert all(t[TRIAL_KIND_KEY] == "search" for t in trials)
    names = {t["optim.name"] for t in trials}
    assert names == {"sgd", "adamw"}
    for t, ot in zip(trials, optuna_params[1:]):
        cfg = space.trial_config(t, name="t")
        assert not any("|" in k for k in t)  # one name for users: the config key
        assert cfg.optim.lr == t["optim.lr"]
        if cfg.optim.name == "sgd":  # Optuna keeps one parameter per alternative range
            assert "optim.momentum" in t and ot["optim.lr|1"] == t["optim.lr"] and 1e-2 <= cfg.optim.lr <= 5e-2
        else:
            assert "optim.momentum" not in t and ot["optim.lr|0"] == t["optim.lr"] and 1e-4 <= cfg.optim.lr <= 1e-3
        assert "schedule.pct_start" in t  # the base schedule is onecycle
        assert 1 <= cfg.accumulate <= 4 and isinstance(cfg.accumulate, int)


def test_seeded_search_is_reproducible(space_file):
    space = load_search_space(space_file)
    assert sample(space, 6) == sample(space, 6)


def test_overrides_reach_base_and_tune(space_file):
    space = load_search_space(space_file, ["epochs=7", "tune.num_samples=5", "tune.asha.grace_period=2"])
    assert space.base.epochs == 7
    assert space.tune.num_samples == 5 and space.tune.asha.grace_period == 2


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("optim.name: {choice: [sgd, rmsprop]}", "search.optim.name value 'rmsprop'"),
        ("model.freeze: {choice: [none, most]}", "'roi'"),
        ("optim.lr: {loguniform: [0, 1]}", "loguniform bounds must be > 0"),
        ("optim.lr: {uniform: [0.1, 0.01]}", "low must be <= high"),
        ("optim.lr: {choice: [0.1], uniform: [0.1, 0.2]}", "exactly one of"),
        ("optim.lrr: {choice: [0.1]}", "optim.lrr: unknown key"),
        ("optim.momentum: {uniform: [0.8, 0.9], when: {optimizer: sgd}}", "names 'optimizer'"),
    ],
)
def test_bad_spaces_name_the_key(tmp_path, search, message):
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "bad.yaml"
    path.write_text(f"base: base.yaml\nsearch:\n  {search}\n")
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_unknown_sections_and_settings(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "a.yaml").write_text("base: base.yaml\nsearches: {}\n")
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_search_space(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("base: base.yaml\ntune: {samples: 3}\n")
    with pytest.raises(ConfigError, match="tune.samples|samples: unknown key"):
        load_search_space(tmp_path / "b.yaml")


def test_shipped_search_spaces_validate():
    spaces = {p.stem: load_search_space(p) for p in (REPO / "search_spaces").glob("*.yaml")}
    assert {"quickstart", "onecycle"} <= set(spaces)
    onecycle = spaces["onecycle"]
    searched = set(onecycle.search)
    assert {"optim.name", "optim.lr", "schedule.name", "model.freeze", "model.backbone", "accumulate",
            "batch_size", "optim.weight_decay"} <= searched
    assert onecycle.base.data.kind == "coco" and onecycle.base.model.num_keypoints == 23
    assert spaces["quickstart"].base.data.kind == "synthetic"


def test_conditions_are_sampled_after_what_they_name(tmp_path):
    """A dimension listed before the one its when: names still sees the sampled value."""
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "space.yaml"
    path.write_text(
        "base: base.yaml\nsearch:\n"
        "  optim.lr:\n"
        "    - {loguniform: [1.0e-4, 1.0e-3], when: {optim.name: adamw}}\n"
        "    - {loguniform: [1.0e-2, 5.0e-2], when: {optim.name: sgd}}\n"
        "  optim.momentum: {uniform: [0.8, 0.9], when: {optim.name: sgd}}\n"
        "  optim.name: {choice: [sgd, adamw]}\n"
        "tune: {baseline: false}\n"
    )
    space = load_search_space(path)
    trials = sample(space, 16)
    assert {t["optim.name"] for t in trials} == {"sgd", "adamw"}
    for t in trials:
        low, high = (1e-2, 5e-2) if t["optim.name"] == "sgd" else (1e-4, 1e-3)
        assert low <= t["optim.lr"] <= high
        assert ("optim.momentum" in t) == (t["optim.name"] == "sgd")


def test_conditions_in_a_cycle_are_refused(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "space.yaml"
    path.write_text(
        "base: base.yaml\nsearch:\n"
        "  optim.name: {choice: [sgd, adamw], when: {accumulate: 2}}\n"
        "  accumulate: {int: [1, 2], when: {optim.name: sgd}}\n"
    )
    with pytest.raises(ConfigError, match="cycle"):
        load_search_space(path)


def shipped_trials(name: str, n: int = 80) -> list:
    """``n`` random (not TPE) trials of a shipped space as validated configs with their params."""
    space = load_search_space(REPO / "search_spaces" / f"{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampler = SpaceSampler(space)
    out = []
    for i in range(n):
        trial = study.ask()
        config = sampler(trial)
        out.append((config, space.trial_config(config, name=f"t{i}")))
        study.tell(trial, 0.0)
    return out[1:]  # trial 0 is the baseline


def test_onecycle_space_never_freezes_a_coco_fpn_on_resnet152():
    trials = shipped_trials("onecycle")
    pairs = {(cfg.model.backbone, cfg.model.freeze) for _, cfg in trials}
    assert not pairs & {("resnet152", "fpn"), ("resnet152", "roi")}
    assert {("resnet50", "fpn"), ("resnet50", "roi"), ("resnet152", "backbone")} <= pairs


@pytest.mark.parametrize("name", ["onecycle", "quickstart"])
def test_momentum_is_searched_only_where_the_optimizer_keeps_it(name):
    trials = shipped_trials(name)
    searched = [cfg for params, cfg in trials if "optim.momentum" in params]
    assert searched and all(cfg.optim.name == "sgd" and not cfg.schedule.cycle_momentum for cfg in searched)
    for params, cfg in trials:
        if cfg.optim.name == "sgd" and not cfg.schedule.cycle_momentum:
            assert "optim.momentum" in params
    if name == "onecycle":
        assert any(cfg.schedule.cycle_momentum for _, cfg in trials)
        assert all(cfg.schedule.name == "onecycle" for _, cfg in trials if cfg.schedule.cycle_momentum)


# --- malformed space files: each refused naming the file, the key and what it must be ---------


def space_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def refusal(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(RayposeError) as err:
        load_search_space(path, overrides)
    assert str(path) in str(err.value)
    return str(err.value)


def test_a_search_key_given_twice_names_both_lines(tmp_path):
    path = space_with(tmp_path, "base: base.yaml\nsearch:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-3]}\n"
                                "  accumulate: {int: [1, 4]}\n  optim.lr: {loguniform: [1.0e-2, 5.0e-2]}\n")
    text = refusal(path)
    assert "'search.optim.lr' is given twice, on line 3 and line 5" in text


@pytest.mark.parametrize(("text", "message"), [
    ("base: base.yaml\nsearch:\n  - optim.lr: {choice: [0.1]}\n", "search must be a mapping"),
    ("base: base.yaml\nsearch: optim.lr\n", "search must be a mapping"),
    ("base: base.yaml\ntune: 5\n", "tune must be a mapping"),
    ("base: base.yaml\ntune: [1]\n", "tune must be a mapping"),
    ("base: [a]\n", "base must be"),
    ("base: base.yaml\nsearch:\n  optim.lr: 0.1\n", "search.optim.lr: must be a distribution"),
    ("base: base.yaml\nsearch:\n  optim.lr: [0.1, 0.2]\n", "search.optim.lr[0]: must be a distribution"),
    ("base: base.yaml\nsearch:\n  optim.lr: {uniform: [0.1, 0.2], when: sgd}\n", "search.optim.lr.when"),
    ("base: base.yaml\ntune: {asha: 3}\n", "tune.asha: must be a mapping"),
])
def test_sections_of_the_wrong_shape_are_refused(tmp_path, text, message):
    assert message in refusal(space_with(tmp_path, text))


@pytest.mark.parametrize(("tune", "key"), [("trial_cpus: .inf", "tune.trial_cpus"), ("trial_cpus: .nan", "tune.trial_cpus"),
                                           ("asha: {reduction_factor: .inf}", "tune.asha.reduction_factor"),
                                           ("trial_resources: {on_demand: .inf}", "tune.trial_resources.on_demand")])
def test_tune_numbers_must_be_finite(tmp_path, tune, key):
    text = refusal(space_with(tmp_path, f"base: base.yaml\ntune: {{{tune}}}\n"))
    assert f"{key}: must be a finite number" in text


@pytest.mark.parametrize("dist", ["{uniform: [0.1, .inf]}", "{loguniform: [1.0e-4, .nan]}"])
def test_distribution_bounds_must_be_finite(tmp_path, dist):
    text = refusal(space_with(tmp_path, f"base: base.yaml\nsearch:\n  optim.lr: {dist}\n"))
    assert "search.optim.lr." in text and "finite" in text


def test_a_trial_cpus_override_of_inf_is_refused(space_file):
    assert "tune.trial_cpus" in refusal(space_file, ["tune.trial_cpus=inf"])


@pytest.mark.parametrize(("when", "message"), [
    # searched: the dimension's choices
    ("{optim.name: SGD}", "'SGD'"),
    ("{schedule.cycle_momentum: 'false'}", "'false'"),
    ("{accumulate: 7}", "7"),
    ("{optim.weight_decay: 0.01}", "continuous"),
    # not searched: the setting's own values
    ("{schedule.name: Onecycle}", "'onecycle'"),
    ("{amp: 'no'}", "amp"),
    ("{epochs: -1}", "epochs"),
])
def test_when_values_that_can_never_hold_are_refused(tmp_path, when, message):
    path = space_with(tmp_path, (
        "base: base.yaml\nsearch:\n  optim.name: {choice: [sgd, adamw]}\n"
        "  schedule.cycle_momentum: {choice: [false, true]}\n  accumulate: {int: [1, 4]}\n"
        "  optim.weight_decay: {loguniform: [1.0e-5, 1.0e-3]}\n"
        f"  optim.momentum: {{uniform: [0.8, 0.9], when: {when}}}\n"
    ))
    text = refusal(path)
    assert "search.optim.momentum" in text and "when" in text and message in text


def test_a_when_on_a_dimension_that_may_be_skipped_accepts_the_base_value(tmp_path):
    # optim.momentum is searched for SGD only; otherwise the trial keeps the base's 0.9
    path = space_with(tmp_path, (
        "base: base.yaml\nsearch:\n  optim.name: {choice: [sgd, adamw]}\n"
        "  optim.momentum: {choice: [0.8, 0.95], when: {optim.name: sgd}}\n"
        "  optim.weight_decay: {loguniform: [1.0e-5, 1.0e-3], when: {optim.momentum: 0.9}}\n"
    ))
    assert "optim.weight_decay" in load_search_space(path).search
    path.write_text(path.read_text().replace("optim.momentum: 0.9}", "optim.momentum: 0.7}"))
    assert "0.7" in refusal(path) and "0.8" in refusal(path)


def test_a_valid_when_samples_its_dimension(tmp_path):
    path = space_with(tmp_path, (
        "base: base.yaml\nsearch:\n  optim.name: {choice: [sgd, adamw]}\n"
        "  schedule.cycle_momentum: {choice: [false, true]}\n"
        "  optim.momentum: {uniform: [0.8, 0.9], when: {optim.name: sgd, schedule.cycle_momentum: false}}\n"
        "tune: {baseline: false}\n"
    ))
    trials = sample(load_search_space(path), 20)
    assert any("optim.momentum" in t for t in trials)


@pytest.mark.parametrize("key", ["name", "storage_path", "mlflow.run_name", "mlflow.experiment"])
def test_settings_a_trial_does_not_take_from_the_search_are_refused(tmp_path, key):
    text = refusal(space_with(tmp_path, f"base: base.yaml\nsearch:\n  {key}: {{choice: [a, b]}}\n"))
    assert f"search.{key}" in text and "cannot be searched" in text


@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".hidden", "..", ""])
def test_the_study_name_must_be_a_plain_folder_name(tmp_path, name):
    path = space_with(tmp_path, f"base: base.yaml\ntune: {{name: {name!r}}}\n")
    assert "tune.name" in refusal(path) and "plain folder name" in refusal(path)
    ok = space_with(tmp_path, "base: base.yaml\n")
    assert "tune.name" in refusal(ok, [f"tune.name={name!r}"])


def test_home_is_expanded_in_the_tune_storage_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    space = load_search_space(space_with(tmp_path, "base: base.yaml\ntune: {storage_path: ~/raypose-runs}\n"))
    assert space.tune.storage_path == str(tmp_path / "home" / "raypose-runs")
    assert space.tune_dir.startswith(str(tmp_path / "home"))
    remote = load_search_space(space_with(tmp_path, "base: base.yaml\ntune: {storage_path: 's3://b/~x'}\n"))
    assert remote.tune.storage_path == "s3://b/~x"
