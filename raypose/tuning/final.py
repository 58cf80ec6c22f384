"""The search's final stage: the best checkpoint on the full validation set, error analysis,
and a ``best/`` folder (checkpoint, config, detections, metrics, report). No Ray, no MLflow here:
the caller logs what this returns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from raypose.checkpoint import CHECKPOINT_FILE, load_model_from_checkpoint
from raypose.data.dataset import KeypointDataset, collate_fn
from raypose.evaluation.cocoeval import evaluate_keypoints, outputs_to_coco_results, write_eval_report
from raypose.io import write_json_atomic, write_text_atomic
from raypose.storage import fetch_file
from raypose.training.config import TrainConfig, save_resolved_config
from raypose.training.loop import predict_loader
from raypose.tuning.trials import TrialResult, epochs_saved

log = logging.getLogger(__name__)


def evaluate_full_validation(checkpoint: Path, config: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """Predict the whole validation set (no ``val_limit``) and evaluate; writes detections and report."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_model_from_checkpoint(checkpoint, device)
    data = config.data
    val = KeypointDataset(data.path(data.val_ann), data.path(data.val_images), train=False)
    loader = DataLoader(val, batch_size=config.eval_batch_size, collate_fn=collate_fn, num_workers=data.loader_workers)
    outputs, ids = predict_loader(model, loader, device, amp=config.amp,
                                  on_batch=lambda i: log.info("final evaluation: batch %d/%d", i + 1, len(loader)))
    dets = outputs_to_coco_results(outputs, ids)
    dets_path = write_json_atomic(out_dir / "detections.json", dets)
    result = evaluate_keypoints(data.path(data.val_ann), dets, per_keypoint=True)
    write_eval_report(result, out_dir / "evaluation")
    return {"stats": result.stats, "detections": str(dets_path), "num_images": len(val)}


def run_error_analysis(config: TrainConfig, dets_path: str, out_dir: Path, worst: int) -> dict[str, Any]:
    from raypose.analysis.data import load_analysis_input
    from raypose.analysis.report import write_report
    from raypose.analysis.summary import compute_analysis

    data = config.data
    analysis = compute_analysis(load_analysis_input(data.path(data.val_ann), dets_path), worst=worst)
    files = write_report(analysis, out_dir, images_dir=data.path(data.val_images))
    return {k: str(v) for k, v in files.items()}


def final_stage(
    best: TrialResult, baseline: TrialResult | None, config: TrainConfig, out_dir: Path,
    trials: list[TrialResult], analyze: bool = True, worst: int = 100,
) -> dict[str, Any]:
    """Write ``out_dir`` (``best/``) and return the study summary (also in ``metrics.json``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = fetch_file(f"{best.best_checkpoint}/{CHECKPOINT_FILE}", out_dir / CHECKPOINT_FILE)
    save_resolved_config(config, out_dir / "config.yaml")
    evaluation = evaluate_full_validation(ckpt, config, out_dir)
    summary: dict[str, Any] = {
        "best_trial": best.trial_id,
        "best_config": best.params,
        "best_epoch": best.best_epoch,
        "search_oks_map": best.best_oks_map,
        "validation": evaluation["stats"],
        "validation_images": evaluation["num_images"],
        "baseline_trial": baseline.trial_id if baseline else None,
        "baseline_oks_map": baseline.best_oks_map if baseline else None,
        "gain_over_baseline": (best.best_oks_map - (baseline.best_oks_map or 0.0)) if baseline else None,
        "trials": len(trials),
        "trial_epochs_saved": epochs_saved(trials, config.epochs),
    }
    if analyze:
        summary["analysis"] = run_error_analysis(config, evaluation["detections"], out_dir / "analysis", worst)
    write_json_atomic(out_dir / "metrics.json", summary, indent=2)
    write_text_atomic(out_dir / "report.md", study_report(summary, trials))
    return summary


def study_report(summary: dict[str, Any], trials: list[TrialResult]) -> str:
    """A Markdown summary: the result, then one line per trial, best first."""
    lines = [
        f"# Study result: trial {summary['best_trial']}",
        "",
        f"- oks_map during the search: {summary['search_oks_map']:.4f} (epoch {summary['best_epoch']})",
        f"- full validation AP: {summary['validation']['AP']:.4f} (AP50 {summary['validation']['AP50']:.4f}) "
        f"on {summary['validation_images']} images",
    ]
    if summary["baseline_trial"]:
        base = summary["baseline_oks_map"]
        lines.append(f"- torchvision default recipe (trial {summary['baseline_trial']}): "
                     f"{base if base is None else f'{base:.4f}'}; gain {summary['gain_over_baseline']:+.4f}")
    lines += [f"- trial-epochs saved by early stopping: {summary['trial_epochs_saved']:.0%}", "",
              "| trial | kind | epochs | best oks_map | error | params |", "|---|---|---|---|---|---|"]
    for t in sorted(trials, key=lambda t: -(t.best_oks_map if t.best_oks_map is not None else -1)):
        score = "-" if t.best_oks_map is None else f"{t.best_oks_map:.4f}"
        error = (t.error or "")[:60].replace("|", "/").replace("\n", " ")
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"| {t.trial_id} | {t.kind} | {t.epochs} | {score} | {error} | {params} |")
    return "\n".join(lines) + "\n"
