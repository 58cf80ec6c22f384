"""The study's report: importances from Optuna's fANOVA, the trials' curves, the one-sentence
summary. Pure: no Ray, no MLflow."""

from __future__ import annotations

import logging
import warnings

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
from PIL import Image

from raypose.tuning.final import study_report, study_sentence
from raypose.tuning.importance import key_distribution, param_importances
from raypose.tuning.plots import plot_importances, plot_optuna_study, plot_trial_curves, trial_curves_figure
from raypose.tuning.space import Distribution
from raypose.tuning.trials import TrialResult, pick_best

SEARCH = {
    "optim.name": [Distribution(choice=["sgd", "adamw"])],
    "optim.lr": [
        Distribution(loguniform=(3e-4, 3e-3), when={"optim.name": "adamw"}),
        Distribution(loguniform=(3e-3, 3e-2), when={"optim.name": "sgd"}),
    ],
    "optim.weight_decay": [Distribution(uniform=(0.0, 0.1))],
    "model.freeze": [Distribution(choice=["none", "backbone"])],
}


def trials_where_freezing_decides(n: int, seed: int = 0) -> list[TrialResult]:
    """Search trials whose score depends on model.freeze only (plus a little noise)."""
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        name = ["sgd", "adamw"][i % 2]
        freeze = ["none", "backbone"][(i // 2) % 2]
        lr = float(np.exp(rng.uniform(np.log(3e-4), np.log(3e-3)))) * (10 if name == "sgd" else 1)
        score = (0.5 if freeze == "none" else 0.1) + rng.normal(0, 0.01)
        params = {"optim.name": name, "optim.lr": lr, "optim.weight_decay": float(rng.uniform(0, 0.1)),
                  "model.freeze": freeze}
        trials.append(TrialResult(f"t{i}", "search", params, epochs=4, best_oks_map=score, best_epoch=4,
                                  best_checkpoint="/x", history=((2, score / 2), (4, score))))
    return trials


def test_key_distribution_is_the_union_of_a_keys_alternatives():
    lr = key_distribution(SEARCH["optim.lr"])
    assert (lr.low, lr.high, lr.log) == (3e-4, 3e-2, True)
    assert key_distribution(SEARCH["optim.name"]).choices == ("sgd", "adamw")
    assert key_distribution([Distribution(choice=[1]), Distribution(uniform=(0.0, 1.0))]) is None


def test_importances_find_the_setting_that_decides_the_score():
    trials = trials_where_freezing_decides(40)
    baseline = TrialResult("base", "baseline", {"optim.name": "sgd", "optim.lr": 0.02}, best_oks_map=0.9)
    imp = param_importances([*trials, baseline], SEARCH)
    assert imp.trials == 40  # the baseline is not a point of the space
    assert next(iter(imp.values)) == "model.freeze"
    assert imp.values["model.freeze"] > 0.5
    assert sum(imp.values.values()) == pytest.approx(1.0)
    assert imp.note is None


def test_few_trials_give_importances_with_a_note_and_too_few_give_none():
    imp = param_importances(trials_where_freezing_decides(5), SEARCH)
    assert imp is not None and imp.trials == 5 and next(iter(imp.values)) == "model.freeze"
    assert "only 5 search trials" in imp.note
    assert param_importances(trials_where_freezing_decides(2), SEARCH) is None


def test_a_setting_no_trial_varied_is_listed_as_unrated():
    trials = [TrialResult(t.trial_id, "search", {**t.params, "optim.name": "adamw"}, best_oks_map=t.best_oks_map)
              for t in trials_where_freezing_decides(8)]
    imp = param_importances(trials, SEARCH)
    assert imp.unrated == {"optim.name": "the same in every trial"} and "optim.name" not in imp.values


def test_a_setting_only_some_trials_have_is_not_rated():
    search = {**SEARCH, "optim.momentum": [Distribution(uniform=(0.8, 0.95), when={"optim.name": "sgd"})]}
    trials = [TrialResult(t.trial_id, "search", {**t.params, **({"optim.momentum": 0.9} if t.params["optim.name"] == "sgd" else {})},
                          best_oks_map=t.best_oks_map) for t in trials_where_freezing_decides(8)]
    imp = param_importances(trials, search)
    assert imp.unrated == {"optim.momentum": "only some trials have it"} and len(imp.values) == 4


def test_plots_are_written(tmp_path):
    trials = trials_where_freezing_decides(6)
    trials.append(TrialResult("base", "baseline", {}, epochs=4, best_oks_map=0.2, history=((1, 0.1), (2, 0.2))))
    trials.append(TrialResult("failed", "search", {}, error="boom"))  # no curve: skipped
    path = plot_trial_curves(trials, tmp_path / "curves.png", best_id="t0")
    assert Image.open(path).size[0] > 400
    imp = param_importances(trials, SEARCH)
    assert Image.open(plot_importances(imp, tmp_path / "imp.png")).size[1] > 100


def test_curves_legend_names_every_setting_below_the_axes_and_no_line_hides_another():
    """A tiny run's trials all stay at 0, on the baseline's line: each must still be seen and named."""
    zeros = ((1, 0.0), (2, 0.0), (3, 0.0))
    long = {"optim.name": "adamw", "optim.lr": 0.002, "optim.weight_decay": 0.0512345, "optim.schedule": "onecycle",
            "model.freeze": "backbone", "data.augment.scale_jitter": 0.25}
    trials = [TrialResult("base", "baseline", {}, history=zeros),
              *(TrialResult(f"t{i}", "search", {**long, "optim.lr": 0.002 * (i + 1)}, history=zeros) for i in range(4)),
              TrialResult("t9", "search", {"optim.name": "sgd", "optim.lr": 0.02}, history=((1, 0.3), (2, 0.4))),
              TrialResult("failed", "search", {"optim.lr": 0.1}, error="boom")]
    fig = trial_curves_figure(trials, best_id="t9")
    try:
        ax = fig.axes[0]
        lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
        assert sorted(lines) == ["base", "t0", "t1", "t2", "t3", "t9"]  # the failed trial has no curve
        searched = [lines[i] for i in ("t0", "t1", "t2", "t3", "t9")]
        assert all(line.get_zorder() > lines["base"].get_zorder() for line in searched)
        assert all(line.get_linewidth() < lines["base"].get_linewidth() for line in searched)  # base peeks out
        assert len({line.get_marker() for line in searched}) == 5
        assert len({line.get_color() for line in searched}) == 5 and lines["t9"].get_color() == "#d62728"
        assert ax.get_ylim()[0] < 0  # a curve at 0 is not half clipped by the axes' edge

        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(texts) == 6 and texts[0] == "base (torchvision default recipe)"
        assert texts[-1] == "t9 (best): optim.name=sgd, optim.lr=0.02"
        assert texts[1].startswith("t0: optim.name=adamw, optim.lr=0.002, optim.weight_decay=0.0512,")
        assert all("optim.lr=" in t for t in texts[1:])
        assert "data.augment.scale_jitter=0.25" in texts[1]  # full key names, wrapped between settings
        assert all(len(row) <= 75 for t in texts for row in t.splitlines()) and "\n" in texts[1]

        fig.canvas.draw()
        legend_box, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend_box.y1 < axes_box.y0  # below the axes: it covers no line
    finally:
        plt.close(fig)


def test_the_curves_image_holds_the_legend_below(tmp_path):
    few = Image.open(plot_trial_curves(trials_where_freezing_decides(2), tmp_path / "few.png", best_id="t0"))
    many = Image.open(plot_trial_curves(trials_where_freezing_decides(16), tmp_path / "many.png", best_id="t0"))
    assert many.size[1] > few.size[1] + 60  # the same axes, and 8 rows of legend below them instead of 2


def optuna_study(values: list[float]) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for value in values:
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr": value / 100, "optim.name": "adamw" if value > 0.3 else "sgd"},
            distributions={"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                           "optim.name": optuna.distributions.CategoricalDistribution(["sgd", "adamw"])},
            value=value))
    return study


def test_optuna_plots_are_written_without_experimental_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        paths = plot_optuna_study(optuna_study([0.1, 0.4, 0.2, 0.5]), tmp_path / "plots")
    assert [p.name for p in paths] == ["optuna_history.png", "optuna_slice.png"]
    assert all(Image.open(p).size[0] > 400 for p in paths)


def test_optuna_plots_skip_what_too_few_trials_cannot_show(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="raypose.tuning.plots"):
        assert plot_optuna_study(optuna_study([]), tmp_path) == []
        assert "optuna_history.png: not drawn" in caplog.text and "0 complete trial" in caplog.text
        caplog.clear()
        assert [p.name for p in plot_optuna_study(optuna_study([0.3]), tmp_path)] == ["optuna_history.png"]
        assert "optuna_slice.png: not drawn" in caplog.text and "1 complete trial" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna_history.png"]


def summary(best_ap: float, baseline_ap: float | None, best="t1", baseline="t0") -> dict:
    return {
        "best_trial": best, "best_config": {"optim.name": "adamw", "optim.lr": 0.00123}, "best_epoch": 4,
        "search_oks_map": 0.5, "validation": {"AP": best_ap, "AP50": 0.9}, "validation_images": 60,
        "baseline_trial": baseline, "baseline_oks_map": 0.2, "gain_over_baseline": 0.3,
        "baseline_validation": None if baseline_ap is None else {"AP": baseline_ap},
        "trial_epochs_saved": 0.25,
    }


def test_the_sentence_compares_the_best_recipe_with_the_default_on_full_validation():
    text = study_sentence(summary(0.45, 0.21))
    assert text.startswith("The search's best recipe (trial t1: optim.name=adamw, optim.lr=0.00123)")
    assert "OKS AP 0.450, 0.240 above torchvision's default recipe (0.210)" in text
    assert "0.050 below" in study_sentence(summary(0.20, 0.25))
    assert "no searched recipe beat" in study_sentence(summary(0.3, 0.3, best="t0"))
    assert "no default-recipe trial" in study_sentence(summary(0.3, None, baseline=None))


def test_report_shows_sentence_curves_and_importances():
    trials = trials_where_freezing_decides(6)
    imp = param_importances(trials, SEARCH)
    report = study_report(summary(0.45, 0.21), trials, imp)
    lines = report.splitlines()
    assert lines[2].startswith("The search's best recipe")
    assert "![oks_map per epoch of every trial](trial_curves.png)" in report
    assert "![importances](importances.png)" in report and "| model.freeze |" in report
    assert "Note: only 6 search trials" in report
    assert "full validation AP 0.2100" in report
    assert "too few to rate" in study_report(summary(0.45, 0.21), trials[:2], None)


def test_report_lists_the_checkpoint_bytes_each_trial_keeps():
    trials = trials_where_freezing_decides(2)
    kept = {"t0": 471_000_000, "t1": 1_418, "base": 0}
    report = study_report({**summary(0.45, 0.21), "checkpoint_bytes": kept}, trials, None)
    section = report.split("## Checkpoints kept in storage", 1)[1]
    assert "471.0 MB in all" in section
    assert section.index("| t0 | 471.0 |") < section.index("| t1 | 0.0 |") < section.index("| base | 0.0 |")
    assert "Checkpoints kept" not in study_report(summary(0.45, 0.21), trials, None)  # not measured: no section


def test_ties_go_to_the_baseline_then_the_lowest_trial_id_whatever_the_order():
    """All-zero OKS (a tiny model's first epochs) ties every trial: a resumed study must pick
    the same best as the first run did, whose checkpoints are the only ones left."""
    tied = [TrialResult(i, kind, {}, best_oks_map=0.0, best_checkpoint="/x")
            for i, kind in (("b2", "search"), ("a9", "search"), ("c1", "baseline"))]
    for order in (tied, tied[::-1], tied[1:] + tied[:1]):
        best, baseline = pick_best(order)
        assert best.trial_id == "c1" and baseline.trial_id == "c1"
    searched = [t for t in tied if t.kind == "search"]
    assert pick_best(searched)[0].trial_id == "a9" and pick_best(searched[::-1])[0].trial_id == "a9"
    better = TrialResult("z0", "search", {}, best_oks_map=0.1, best_checkpoint="/x")
    assert pick_best([*tied, better])[0].trial_id == "z0"


def test_sentence_and_report_give_body_and_foot_ap_next_to_the_23_point_ap():
    scored = {**summary(0.45, 0.21), "validation": {"AP": 0.45, "AP50": 0.9, "body_ap": 0.52, "foot_ap": 0.31}}
    assert "OKS AP 0.450 (body AP 0.520, foot AP 0.310), 0.240 above" in study_sentence(scored)
    report = study_report(scored, trials_where_freezing_decides(2), None)
    assert "on 60 images; body AP 0.520, foot AP 0.310 (body: COCO's 17 points and sigmas" in report
    no_feet = {**scored, "validation": {**scored["validation"], "foot_ap": -1.0}}
    assert "foot AP -)" in study_sentence(no_feet)


def test_a_held_out_report_says_which_images_scored_what():
    held = {**summary(0.45, 0.21), "held_out": True, "validation_images": 30,
            "validation_source": "the 30 validation images past data.val_limit (30), which the search never scored"}
    assert "reaches OKS AP 0.450 on 30 held-out images, 0.240 above" in study_sentence(held)
    report = study_report(held, trials_where_freezing_decides(2), None)
    assert "- held-out AP: 0.4500 (AP50 0.9000) on 30 images" in report and "held-out AP 0.2100" in report
    assert "reported on the 30 validation images past data.val_limit (30)" in report
