"""Training curves as PNG: losses and OKS metrics per epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from raypose.io import save_png  # noqa: E402

LOSS_CURVES = ("train_loss", "loss_keypoint", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
METRIC_CURVES = ("oks_map", "oks_ap50", "oks_ap75", "oks_ar")


def plot_history(
    history: Sequence[dict],
    path: str | os.PathLike,
    extra_losses: dict[str, tuple[Sequence[int], Sequence[float]]] | None = None,
    metric_title: str = "validation OKS",
) -> Path:
    """Two panels: losses per epoch (log scale) and OKS metrics per epoch; written atomically.

    Missing values are skipped. ``extra_losses`` adds ``name: (epochs, values)`` curves to the
    loss panel (e.g. a validation loss measured every few epochs).
    """
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for key in LOSS_CURVES:
        xs, ys = _series(history, key)
        if xs:
            ax_loss.plot(xs, ys, marker="o", ms=3, label=key, lw=2 if key == "train_loss" else 1)
    for key, (xs, ys) in (extra_losses or {}).items():
        ax_loss.plot(xs, ys, marker="s", ms=3, label=key, lw=2, ls="--")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses", yscale="log")
    ax_loss.legend(fontsize=7)
    for key in METRIC_CURVES:
        xs, ys = _series(history, key)
        if xs:
            ax_metric.plot(xs, ys, marker="o", ms=3, label=key)
    ax_metric.set(xlabel="epoch", ylabel="OKS metric", title=metric_title, ylim=(0, 1))
    ax_metric.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return Path(path)


def _series(history: Sequence[dict], key: str) -> tuple[list, list]:
    pairs = [(m["epoch"], m[key]) for m in history if m.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]
