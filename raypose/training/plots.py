"""Training curves as PNG: losses and OKS metrics per epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from raypose.io import atomic_path  # noqa: E402

LOSS_CURVES = ("train_loss", "loss_keypoint", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
METRIC_CURVES = ("oks_map", "oks_ap50", "oks_ap75", "oks_ar")


def plot_history(history: Sequence[dict], path: str | os.PathLike, extra_losses: dict[str, Sequence[float]] | None = None) -> Path:
    """Two panels: losses per epoch (log scale) and OKS metrics per epoch; written atomically.

    ``extra_losses`` adds curves to the loss panel (e.g. ``{"val_loss": [...]}``).
    """
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [m["epoch"] for m in history]
    for key in LOSS_CURVES:
        values = [m.get(key) for m in history]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, values, marker="o", ms=3, label=key, lw=2 if key == "train_loss" else 1)
    for key, values in (extra_losses or {}).items():
        ax_loss.plot(epochs[: len(values)], values, marker="s", ms=3, label=key, lw=2, ls="--")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses", yscale="log")
    ax_loss.legend(fontsize=7)
    for key in METRIC_CURVES:
        values = [m.get(key) for m in history]
        if any(v is not None for v in values):
            ax_metric.plot(epochs, values, marker="o", ms=3, label=key)
    ax_metric.set(xlabel="epoch", ylabel="OKS metric", title="validation OKS", ylim=(0, 1))
    ax_metric.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
