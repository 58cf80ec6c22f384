"""Plots of keypoint evaluation results: PR curves per OKS threshold and per-keypoint AP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from raypose.io import atomic_path, write_json_atomic  # noqa: E402

if TYPE_CHECKING:
    from raypose.evaluation.cocoeval import KeypointEvalResult

logger = logging.getLogger(__name__)


def plot_pr_curves(result: KeypointEvalResult, path: str | Path) -> Path:
    """Precision vs recall (area "all", 20 detections), one line per OKS threshold; atomic PNG.

    Thresholds with no ground truth (precision -1) are skipped.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        recall = result.recall_thresholds
        colors = plt.cm.viridis(
            [i / max(len(result.oks_thresholds) - 1, 1) for i in range(len(result.oks_thresholds))]
        )
        for i, t in enumerate(result.oks_thresholds):
            precision = result.precision[i, :, 0, 0, -1]
            if (precision < 0).all():
                continue
            ap = precision[precision > -1].mean()
            ax.plot(recall, precision, color=colors[i], label=f"OKS {t:.2f} (AP {ap:.3f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.set_title(f"Keypoint PR curves (AP {result.stats.get('AP', -1):.3f})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_per_keypoint_ap(result: KeypointEvalResult, path: str | Path) -> Path:
    """Bar chart of per-keypoint AP (and AP50) from ``result.per_keypoint``; atomic PNG."""
    names = list(result.per_keypoint)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.38 * len(names) + 1.5), 4.2), dpi=100)
    try:
        xs = range(len(names))
        ap = [result.per_keypoint[n]["AP"] for n in names]
        ap50 = [result.per_keypoint[n]["AP50"] for n in names]
        ax.bar([x - 0.2 for x in xs], ap50, width=0.4, label="AP50", color="#9ecae1")
        ax.bar([x + 0.2 for x in xs], ap, width=0.4, label="AP", color="#3182bd")
        ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=8)
        ax.set(ylabel="AP (single-keypoint OKS)", ylim=(0, 1))
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


EVAL_REPORT_FILES = ("metrics.json", "pr_curves.png", "per_keypoint_ap.png")  # what write_eval_report writes


def write_eval_report(result: KeypointEvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``pr_curves.png`` and (with a per-keypoint breakdown)
    ``per_keypoint_ap.png`` into ``out_dir``; returns their paths by name."""
    out_dir = Path(out_dir)
    paths = {
        "metrics": write_json_atomic(out_dir / "metrics.json", result.to_dict(), indent=2),
        "pr_curves": plot_pr_curves(result, out_dir / "pr_curves.png"),
    }
    if result.per_keypoint:
        paths["per_keypoint_ap"] = plot_per_keypoint_ap(result, out_dir / "per_keypoint_ap.png")
    logger.info("wrote evaluation report to %s", out_dir)
    return paths
