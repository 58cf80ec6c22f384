"""A study's plots as PNG: every trial's oks_map over epochs, and the settings' importances."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from raypose.io import save_png  # noqa: E402
from raypose.tuning.importance import Importances  # noqa: E402
from raypose.tuning.trials import TrialResult  # noqa: E402


def plot_trial_curves(trials: list[TrialResult], path: str | os.PathLike, best_id: str | None = None) -> Path:
    """oks_map per evaluated epoch, one line per trial: the baseline thick, black and dashed,
    the best trial thick; trials stopped early end where they stopped (marked with x)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    max_epoch = max((e for t in trials for e, _ in t.history), default=1)
    for t in sorted(trials, key=lambda t: (t.kind == "baseline", t.trial_id == best_id)):
        if not t.history:
            continue
        epochs, scores = zip(*t.history)
        if t.kind == "baseline":
            style = dict(color="black", lw=2.5, ls="--", label=f"{t.trial_id} torchvision default recipe", zorder=3)
        elif t.trial_id == best_id:
            style = dict(color="#d62728", lw=2.5, label=f"{t.trial_id} (best) {_short(t.params)}", zorder=4)
        else:
            style = dict(lw=1.2, alpha=0.8, label=f"{t.trial_id} {_short(t.params)}")
        (line,) = ax.plot(epochs, scores, marker="o", ms=3, **style)
        if epochs[-1] < max_epoch:
            ax.plot(epochs[-1], scores[-1], marker="x", ms=8, color=line.get_color(), zorder=5)
    ax.set(xlabel="epoch", ylabel="oks_map (search validation subset)", title="trials: oks_map per epoch",
           ylim=(0, max(0.05, min(1.0, 1.15 * max((s for t in trials for _, s in t.history), default=0)))))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return Path(path)


def _short(params: dict, limit: int = 60) -> str:
    """A trial's searched values in a legend: ``adamw 0.002 onecycle``."""
    text = " ".join(f"{v:.2g}" if isinstance(v, float) else str(v) for v in params.values())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
