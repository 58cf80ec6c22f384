"""Which searched settings mattered: Optuna's fANOVA over a study's finished trials.

The trials are replayed into an in-memory Optuna study (one distribution per config key: the
union of a key's ``when:`` alternatives, so ``optim.lr`` is one parameter whatever the optimizer)
and rated with :class:`optuna.importance.FanovaImportanceEvaluator` (a seeded random forest, then
the share of the score's variance each setting explains). fANOVA rates the settings every trial
has; one that only some trials have (momentum only for SGD) is listed as not rated. PED-ANOVA,
Optuna's default, handles those, but on a few dozen trials it compares a handful of top trials
with the rest and rated a setting that had no effect above the one that decided the score
(``tests/tuning/test_study_report.py``), so it is not used. The baseline is left out: its recipe
is not a point of the space. Pure: Optuna, no Ray, no MLflow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from raypose.tuning.trials import TrialResult

MIN_TRIALS = 3  # fewer scored search trials: no importances at all
FEW_TRIALS = 10  # fewer: a forest fitted on a handful of points; the report says to read them as hints


@dataclass(frozen=True)
class Importances:
    """``values``: config key -> share of importance (they sum to 1), most important first;
    ``unrated``: searched keys not rated and why; ``note``: why to read them with care, or None."""

    values: dict[str, float]
    trials: int
    unrated: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def key_distribution(alternatives: list[Any]) -> BaseDistribution | None:
    """One Optuna distribution covering every alternative of a searched key (space
    :class:`~raypose.tuning.space.Distribution` objects), or None when they mix kinds."""
    if all(d.choice is not None for d in alternatives):
        choices = list(dict.fromkeys(v for d in alternatives for v in d.choice))
        return CategoricalDistribution(choices)
    if all(d.int_range is not None for d in alternatives):
        return IntDistribution(min(d.int_range[0] for d in alternatives), max(d.int_range[1] for d in alternatives))
    bounds = [d.uniform or d.loguniform for d in alternatives]
    if any(b is None for b in bounds):
        return None
    log_scale = all(d.loguniform is not None for d in alternatives)
    return FloatDistribution(min(b[0] for b in bounds), max(b[1] for b in bounds), log=log_scale)


def param_importances(trials: list[TrialResult], search: dict[str, list[Any]]) -> Importances | None:
    """Importances of the searched keys for the search trials' best ``oks_map``.

    Trials stopped early count with the score they reached, as the searcher saw them. Returns
    None with fewer than :data:`MIN_TRIALS` scored search trials.
    """
    scored = [t for t in trials if t.kind == "search" and t.best_oks_map is not None]
    if len(scored) < MIN_TRIALS:
        return None
    distributions = {key: dist for key, alts in search.items() if (dist := key_distribution(alts)) is not None}
    varied, unrated = [], {}
    for key in search:
        values = [str(t.params[key]) for t in scored if key in t.params]
        if key not in distributions:
            unrated[key] = "its alternatives mix kinds of distribution"
        elif not values:
            unrated[key] = "no trial has it"
        elif len(values) < len(scored):
            unrated[key] = "only some trials have it"
        elif len(set(values)) < 2:
            unrated[key] = "the same in every trial"
        else:
            varied.append(key)
    note = None
    if len(scored) < FEW_TRIALS:
        note = (f"only {len(scored)} search trials: a forest fitted on so few points shows what these trials "
                "suggest, not what the settings do; read these importances as hints")
    if not varied:
        return Importances({}, len(scored), unrated, note)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for t in scored:
        params = {k: _as_param(v, distributions[k]) for k, v in t.params.items() if k in distributions}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, value=t.best_oks_map,
        ))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings
        values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)
    return Importances({k: float(v) for k, v in values.items()}, len(scored), unrated, note)


def _as_param(value: Any, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return value
    if isinstance(dist, IntDistribution):
        return int(value)
    return min(max(float(value), dist.low), dist.high)


def importance_lines(imp: Importances | None) -> list[str]:
    """The report's Markdown section: a table of importances, then the note."""
    lines = ["## Which searched settings mattered", ""]
    if imp is None:
        return lines + [f"Fewer than {MIN_TRIALS} search trials were scored: too few to rate the settings.", ""]
    lines.append(f"fANOVA (Optuna): the share of the best oks_map's variance over {imp.trials} search trials that "
                 "each setting explains; the baseline is left out, trials stopped early count with the score they reached.")
    lines.append("")
    if imp.values:
        lines += ["![importances](importances.png)", "", "| setting | importance |", "|---|---|"]
        lines += [f"| {key} | {value:.2f} |" for key, value in imp.values.items()]
        lines.append("")
    if imp.unrated:
        lines += ["Not rated: " + "; ".join(f"{k} ({why})" for k, why in imp.unrated.items()) + ".", ""]
    if imp.note:
        lines += [f"Note: {imp.note}.", ""]
    return lines
