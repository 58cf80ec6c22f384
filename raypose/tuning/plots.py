"""A study's plots as PNG: every trial's oks_map over epochs, the settings' importances, and
Optuna's own optimization history and slice plots."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from raypose.io import save_png  # noqa: E402
from raypose.tuning.importance import Importances  # noqa: E402
from raypose.tuning.trials import TrialResult  # noqa: E402

logger = logging.getLogger(__name__)

# Hollow markers of different shapes: trials whose curves coincide (all at 0 in a tiny run's first
# epochs) still show one marker per trial, nested rather than hidden under each other.
MARKERS = ("o", "s", "^", "D", "v", "P", "<", ">", "X", "h", "*", "p")
BEST_COLOR = "#d62728"
LEGEND_WIDTH = 70  # characters per legend line before an entry wraps (at a ", " between settings)


def plot_trial_curves(trials: list[TrialResult], path: str | os.PathLike, best_id: str | None = None) -> Path:
    """Write :func:`trial_curves_figure` as a PNG at ``path``; return the path."""
    fig = trial_curves_figure(trials, best_id)
    legend = fig.axes[0].get_legend()
    # The legend is left out of the figure's layout (the axes keep their size): name it to "tight"
    # so that the image grows to hold it.
    save_png(fig, path, bbox_inches="tight", bbox_extra_artists=[legend] if legend else None)
    plt.close(fig)
    return Path(path)


def trial_curves_figure(trials: list[TrialResult], best_id: str | None = None) -> Figure:
    """oks_map per evaluated epoch, one line per trial, with a legend below the axes naming each
    trial's settings (``optim.lr=0.002``).

    The baseline is thick, black, dashed and drawn beneath every trial, so a trial on the same
    values (all at 0, say) lies on top of it and both stay visible; the best trial is red and on
    top. Each trial has its own marker shape; trials stopped early end where they stopped (x).
    Trials without a curve (errored before their first evaluation) are left out.
    """
    drawn = [t for t in trials if t.history]
    searched = sorted((t for t in drawn if t.kind != "baseline"), key=lambda t: t.trial_id == best_id)
    baselines = [t for t in drawn if t.kind == "baseline"]
    ncol = 1 if len(drawn) <= 6 else 2
    fig, ax = plt.subplots(figsize=(9 if ncol == 2 else 7, 4.2))
    max_epoch = max((e for t in drawn for e, _ in t.history), default=1)
    colors = _trial_colors(len(searched))
    for t in baselines:
        _plot_curve(ax, t, max_epoch, color="black", lw=3.5, ls="--", zorder=2, label=_legend_label(t, best_id))
    for i, t in enumerate(searched):
        best = t.trial_id == best_id
        # Sizes shrink with i so that markers at the same point nest instead of covering each other.
        _plot_curve(ax, t, max_epoch, color=BEST_COLOR if best else colors[i % len(colors)],
                    lw=2.0 if best else 1.3, zorder=4 if best else 3, marker=MARKERS[i % len(MARKERS)],
                    ms=9 - 4 * i / max(1, len(searched) - 1), mfc="none", mew=1.2,
                    label=_legend_label(t, best_id))
    top = max(0.05, min(1.0, 1.15 * max((s for t in drawn for _, s in t.history), default=0)))
    # Below 0 a little: a curve at 0 would otherwise be half clipped by the axes' edge.
    ax.set(xlabel="epoch", ylabel="oks_map (search validation subset)", title="trials: oks_map per epoch",
           ylim=(-0.03 * top, top))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, zorder=0)
    if drawn:
        legend = ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, frameon=False)
        legend.set_in_layout(False)  # the axes keep their size; the saved image grows to hold the legend
    fig.tight_layout()
    return fig


def _trial_colors(n: int) -> list:
    """Matplotlib's qualitative colours without the best trial's red and the baseline's black-grey."""
    if n <= 8:
        return [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i not in (3, 7)]
    return [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (6, 7, 14, 15)]


def _plot_curve(ax: Any, trial: TrialResult, max_epoch: int, **style: Any) -> None:
    epochs, scores = zip(*trial.history)
    (line,) = ax.plot(epochs, scores, **style)
    line.set_gid(trial.trial_id)  # tests (and readers of an SVG) find a trial's line by its id
    if epochs[-1] < max_epoch:
        ax.plot(epochs[-1], scores[-1], marker="x", ms=8, color=line.get_color(), zorder=5, label="_stopped")


def _legend_label(trial: TrialResult, best_id: str | None) -> str:
    """``t3 (best): optim.name=adamw, optim.lr=0.002``, wrapped between settings at LEGEND_WIDTH."""
    head = trial.trial_id + (" (torchvision default recipe)" if trial.kind == "baseline" else "")
    head += " (best)" if trial.trial_id == best_id else ""  # the baseline too, where no trial beat it
    settings = [f"{k}={_value_text(v)}" for k, v in trial.params.items()]
    if not settings:
        return head
    lines = [f"{head}: {settings[0]}"]
    for item in settings[1:]:
        if len(lines[-1]) + 2 + len(item) <= LEGEND_WIDTH:
            lines[-1] += f", {item}"
        else:
            lines[-1] += ","
            lines.append(f"    {item}")
    return "\n".join(lines)


def _value_text(value: Any) -> str:
    """A setting's value as report.md's table writes it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_importances(imp: Importances, path: str | os.PathLike) -> Path:
    """One horizontal bar per rated setting, most important on top."""
    keys = list(imp.values)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(keys) + 1.4))
    ax.barh(keys, [imp.values[k] for k in keys], color="#4c72b0")
    ax.set(xlabel="importance (share)", xlim=(0, 1),
           title=f"fANOVA importances, {imp.trials} trials" + (" (few trials)" if imp.note else ""))
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return Path(path)


def plot_optuna_study(study: optuna.Study, folder: str | os.PathLike, target_name: str = "oks_map") -> list[Path]:
    """Write Optuna's own plots of ``study`` into ``folder``: ``optuna_history.png`` (each trial's
    value and the best so far) and ``optuna_slice.png`` (value against each parameter), the value
    named ``target_name`` on their axes.

    A plot the study cannot fill is skipped, with the reason logged: both with no complete trial,
    the slice plot with only one (a single point per parameter says nothing). Returns the paths
    written, in that order.
    """
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots = {"optuna_history.png": (optuna_plots.plot_optimization_history, 1),
             "optuna_slice.png": (optuna_plots.plot_slice, 2)}
    written = []
    for name, (plot, needed) in plots.items():
        if len(complete) < needed:
            logger.info("%s: not drawn, study %r has %d complete trial(s) and the plot needs %d",
                        name, study.study_name, len(complete), needed)
            continue
        if name == "optuna_slice.png" and not any(t.params for t in complete):
            logger.info("%s: not drawn, no complete trial of study %r has parameters", name, study.study_name)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a parameter only one trial drew (an alternative's range) has identical x limits
            warnings.filterwarnings("ignore", "Attempting to set identical low and high xlims", UserWarning)
            axes = plot(study, target_name=target_name)
        fig = np.atleast_1d(axes).flat[0].figure  # plot_slice gives an array of axes for 2+ parameters
        # "tight": plot_optimization_history puts its legend outside the axes, on the right.
        written.append(save_png(fig, Path(folder) / name, bbox_inches="tight"))
        plt.close(fig)
    return written
