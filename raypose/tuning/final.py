"""The search's final stage: the best checkpoint on the held-out images, error analysis, and a
``best/`` folder (checkpoint, config, detections, metrics, report). No Ray, no MLflow here: the
caller logs what this returns.

The search picks its best trial by the score on the validation images the trials evaluate (the
first ``data.val_limit``); reporting the pick on those same images would flatter it. The final
stage therefore reports on images the search never scored: ``data.test_ann`` when set, else
the validation images past ``data.val_limit`` (:func:`held_out_split`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from raypose.checkpoint import CHECKPOINT_FILE, load_model_from_checkpoint
from raypose.data.dataset import KeypointDataset, collate_fn
from raypose.data.prepare import image_ids
from raypose.evaluation.cocoeval import evaluate_keypoints, outputs_to_coco_results, write_eval_report
from raypose.inference_options import OPTION_NAMES, InferenceOptions
from raypose.io import write_json_atomic, write_text_atomic
from raypose.storage import fetch_file
from raypose.training.config import TrainConfig, save_resolved_config
from raypose.training.loop import predict_loader
from raypose.tuning.importance import Importances, importance_lines, param_importances
from raypose.tuning.plots import plot_importances, plot_trial_curves
from raypose.tuning.trials import TrialResult, epochs_saved

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """The images the final stage reports on: ``ann`` (a COCO file) with ``images`` (their folder)."""

    ann: Path
    images: Path
    held_out: bool  # False: no image was left out of the search's scoring (the number is the selection's own)
    description: str  # which images, in words (metrics.json, report.md)


def held_out_split(config: TrainConfig, out_dir: Path) -> HeldOut:
    """``data.test_ann`` when set; else the validation images past ``data.val_limit`` (in the
    order training reads them), written to ``out_dir/heldout_ann.json``; else, when the search
    scored every validation image, the whole validation set, marked as not held out."""
    data = config.data
    if data.test_ann is not None:
        return HeldOut(data.path(data.test_ann), data.path(data.test_images or data.val_images), True,
                       f"data.test_ann ({data.test_ann}), which the search never scored")
    val_ann, val_images, ordered, searched = _validation_order(config)
    if searched >= len(ordered):
        log.warning("the search scored all %d validation images: the final numbers are the selection's own "
                    "(optimistic); set data.val_limit below that, or data.test_ann, to hold images out", len(ordered))
        return HeldOut(val_ann, val_images, False,
                       f"all {len(ordered)} validation images, which the search scored too (no held-out images: "
                       "set data.val_limit or data.test_ann)")
    keep = set(ordered[searched:])
    path = _write_subset(val_ann, keep, out_dir / "heldout_ann.json")
    return HeldOut(path, val_images, True,
                   f"the {len(keep)} validation images past data.val_limit ({searched}), which the search never scored")


def _validation_order(config: TrainConfig) -> tuple[Path, Path, list[int], int]:
    """The validation file and folder, its image ids in the order training reads them, and how
    many of the first the search scores (``data.val_limit``, at most all)."""
    data = config.data
    val_ann, val_images = data.path(data.val_ann), data.path(data.val_images)
    ordered = image_ids(KeypointDataset(val_ann, val_images, train=False))
    return val_ann, val_images, ordered, min(data.val_limit or len(ordered), len(ordered))


def _write_subset(ann: Path, keep: set[int], path: Path) -> Path:
    """``ann`` cut to the images ``keep`` (and their annotations), written to ``path``."""
    full = json.loads(ann.read_text())
    return write_json_atomic(path, {**full, "images": [im for im in full["images"] if im["id"] in keep],
                                    "annotations": [a for a in full.get("annotations", []) if a["image_id"] in keep]})


def search_split(config: TrainConfig, out_dir: Path) -> HeldOut:
    """The validation images the search scored its trials on (the first ``data.val_limit``, in the
    order training reads them), written to ``out_dir/search_ann.json`` when that is not all of them:
    inference options are chosen here, never on the held-out images."""
    val_ann, val_images, ordered, searched = _validation_order(config)
    if searched >= len(ordered):
        return HeldOut(val_ann, val_images, False, f"all {len(ordered)} validation images")
    path = _write_subset(val_ann, set(ordered[:searched]), out_dir / "search_ann.json")
    return HeldOut(path, val_images, False,
                   f"the first {searched} validation images, which the search scored")


# Each inference option alone and all together; stock first, so a tie keeps stock.
CANDIDATES: tuple[tuple[str, ...], ...] = ((), *((name,) for name in OPTION_NAMES), OPTION_NAMES)


def predict_split(model, device, config: TrainConfig, split: HeldOut, options: InferenceOptions,
                   what: str) -> tuple[list[dict], int, float]:
    """Detections (COCO results) of ``model`` on ``split`` with ``options``, the image count, seconds per image."""
    val = KeypointDataset(split.ann, split.images, train=False)
    loader = DataLoader(val, batch_size=config.eval_batch_size, collate_fn=collate_fn,
                        num_workers=config.data.loader_workers)
    start = time.perf_counter()
    outputs, ids = predict_loader(model, loader, device, amp=config.amp, options=options,
                                  on_batch=lambda i: log.info("%s: batch %d/%d", what, i + 1, len(loader)))
    seconds = (time.perf_counter() - start) / max(len(val), 1)
    return outputs_to_coco_results(outputs, ids), len(val), seconds


def options_row(options: InferenceOptions, result, seconds: float) -> dict[str, Any]:
    return {"options": options.label(), "AP": result.stats["AP"], **result.parts, "s_per_image": seconds}


def candidate_options(config: TrainConfig) -> list[InferenceOptions]:
    """:data:`CANDIDATES` as options, with the config's thresholds."""
    return [InferenceOptions.from_names(names, rescore_thresh=config.inference.rescore_thresh,
                                        oks_nms_thresh=config.inference.oks_nms_thresh) for names in CANDIDATES]


def choose_inference_options(model, device, config: TrainConfig, search: HeldOut) -> tuple[InferenceOptions, list]:
    """Score every candidate set of options (stock, each alone, all together) on the search's
    images; return the best-scoring set (the earliest on a tie: stock first) and the rows."""
    rows, best, best_ap = [], None, -float("inf")
    for options in candidate_options(config):
        dets, _, seconds = predict_split(model, device, config, search, options, f"options {options.label()}")
        result = evaluate_keypoints(search.ann, dets, foot_sigmas=config.foot_sigmas)
        rows.append(options_row(options, result, seconds))
        if result.stats["AP"] > best_ap + 1e-9:
            best, best_ap = options, result.stats["AP"]
    return best, rows


def evaluate_full_validation(
    checkpoint: Path, config: TrainConfig, out_dir: Path, split: HeldOut, choose: HeldOut | None = None,
) -> dict[str, Any]:
    """Predict the images of ``split`` (:func:`held_out_split`) and evaluate; writes detections and report.

    With ``choose`` (the search's images), the inference options are chosen there
    (:func:`choose_inference_options`) and every candidate is reported on ``split`` as well;
    without it the config's own ``inference`` options are used.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_model_from_checkpoint(checkpoint, device)
    options, chosen_on, table, dets = config.inference, None, None, None
    if choose is not None:
        options, chosen_on = choose_inference_options(model, device, config, choose)
        table = []
        for candidate in candidate_options(config):
            found, num_images, seconds = predict_split(model, device, config, split, candidate,
                                                       f"held-out, options {candidate.label()}")
            table.append(options_row(candidate, evaluate_keypoints(split.ann, found, foot_sigmas=config.foot_sigmas),
                                     seconds))
            if candidate == options:
                dets = found  # the chosen options' detections: reported below, not predicted twice
    if dets is None:
        dets, num_images, _ = predict_split(model, device, config, split, options, "final evaluation")
    dets_path = write_json_atomic(out_dir / "detections.json", dets)
    result = evaluate_keypoints(split.ann, dets, per_keypoint=True, foot_sigmas=config.foot_sigmas)
    write_eval_report(result, out_dir / "evaluation")
    # stats: the 10 COCO numbers over all the schema's points, and body_ap/foot_ap for 23 points
    return {"stats": {**result.stats, **result.parts}, "detections": str(dets_path), "num_images": num_images,
            "inference": options.model_dump(), "options_search": chosen_on, "options_held_out": table}


def run_error_analysis(dets_path: str, out_dir: Path, worst: int, split: HeldOut) -> dict[str, Any]:
    from raypose.analysis.data import load_analysis_input
    from raypose.analysis.report import write_report
    from raypose.analysis.summary import compute_analysis

    analysis = compute_analysis(load_analysis_input(split.ann, dets_path), worst=worst)
    files = write_report(analysis, out_dir, images_dir=split.images)
    # relative to best/ (metrics.json's folder): out_dir is a temporary folder until best/ is uploaded
    return {k: Path(v).resolve().relative_to(out_dir.parent.resolve()).as_posix() for k, v in files.items()}


def final_stage(
    best: TrialResult, baseline: TrialResult | None, config: TrainConfig, out_dir: Path,
    trials: list[TrialResult], analyze: bool = True, worst: int = 100, search: dict[str, list] | None = None,
    checkpoint_bytes: dict[str, int] | None = None, inference_options: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir`` (``best/``) and return the study summary (also in ``metrics.json``).

    With ``inference_options`` the best checkpoint's inference options are chosen on the search's
    images and every candidate is reported on the held-out ones (``report.md``'s table); the
    baseline is evaluated with the same options, so the two recipes stay comparable.

    The best checkpoint, and the baseline's when it has one, are evaluated on the full
    validation set; ``search`` (the space's searched keys and their distributions) rates which
    settings mattered.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = fetch_file(f"{best.best_checkpoint}/{CHECKPOINT_FILE}", out_dir / CHECKPOINT_FILE)
    save_resolved_config(config, out_dir / "config.yaml")
    split = held_out_split(config, out_dir)
    choose = search_split(config, out_dir) if inference_options and split.held_out else None
    evaluation = evaluate_full_validation(ckpt, config, out_dir, split, choose)
    options = InferenceOptions(**evaluation["inference"])
    summary: dict[str, Any] = {
        "best_trial": best.trial_id,
        "best_config": best.params,
        "best_epoch": best.best_epoch,
        "search_oks_map": best.best_oks_map,
        "validation": evaluation["stats"],
        "validation_images": evaluation["num_images"],
        "held_out": split.held_out,  # whether those images were kept out of the search's scoring
        "validation_source": split.description,
        "inference": options.label(),  # the options the validation numbers were inferred with
        "inference_options": evaluation["inference"],
        "options_search": evaluation["options_search"],  # every candidate on the search's images (chosen there)
        "options_held_out": evaluation["options_held_out"],  # ... and on the held-out images (reported)
        "baseline_trial": baseline.trial_id if baseline else None,
        "baseline_oks_map": baseline.best_oks_map if baseline else None,
        "gain_over_baseline": (best.best_oks_map - (baseline.best_oks_map or 0.0)) if baseline else None,
        "baseline_validation": _baseline_validation(baseline, best, evaluation,
                                                    config.model_copy(update={"inference": options}), out_dir, split),
        "trials": len(trials),
        "trial_epochs_saved": epochs_saved(trials, config.epochs),
        "curves": {t.trial_id: [list(point) for point in t.history] for t in trials},  # [epoch, oks_map] pairs
        "checkpoint_bytes": checkpoint_bytes,  # what each trial's Train run keeps in storage
    }
    importances = param_importances(trials, search or {})
    summary["importances"] = dict(importances.values) if importances else None
    if importances and importances.values:
        plot_importances(importances, out_dir / "importances.png")
    plot_trial_curves(trials, out_dir / "trial_curves.png", best_id=best.trial_id)
    if analyze:
        summary["analysis"] = run_error_analysis(evaluation["detections"], out_dir / "analysis", worst, split)
    summary["sentence"] = study_sentence(summary)
    write_json_atomic(out_dir / "metrics.json", summary, indent=2)
    write_text_atomic(out_dir / "report.md", study_report(summary, trials, importances, folder=out_dir))
    return summary


def _baseline_validation(
    baseline: TrialResult | None, best: TrialResult, best_eval: dict[str, Any], config: TrainConfig, out_dir: Path,
    split: HeldOut,
) -> dict[str, float] | None:
    """The baseline's best checkpoint on the full validation set (its own config is the
    checkpoint's: the model and data are the study's), so both recipes are compared on the same images."""
    if baseline is None or not baseline.best_checkpoint:
        return None
    if baseline.trial_id == best.trial_id:
        return best_eval["stats"]
    folder = out_dir / "baseline"
    folder.mkdir(exist_ok=True)
    ckpt = fetch_file(f"{baseline.best_checkpoint}/{CHECKPOINT_FILE}", folder / CHECKPOINT_FILE)
    try:
        return evaluate_full_validation(ckpt, config, folder, split)["stats"]
    finally:
        ckpt.unlink(missing_ok=True)  # best/ keeps one checkpoint: the best's


def study_sentence(summary: dict[str, Any]) -> str:
    """What the search found, compared with the default recipe, in one sentence."""
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in summary["best_config"].items())
    ap = summary["validation"]["AP"]
    parts = _parts_text(summary["validation"])
    where = (f"OKS AP {ap:.3f}{f' ({parts})' if parts else ''} on {summary['validation_images']} held-out images"
             if summary.get("held_out") else f"full-validation OKS AP {ap:.3f}{f' ({parts})' if parts else ''}")
    if summary.get("inference") not in (None, "stock"):
        where += f" with inference options {summary['inference']}"
    found = f"The search's best recipe (trial {summary['best_trial']}: {params or 'the base config'}) reaches {where}"
    base = summary.get("baseline_validation")
    if summary["baseline_trial"] is None or base is None:
        return found + " (no default-recipe trial to compare with)."
    if summary["baseline_trial"] == summary["best_trial"]:
        return found + ": it is torchvision's default recipe itself, which no searched recipe beat."
    gain = ap - base["AP"]
    verdict = "above" if gain > 0 else "below"
    return found + f", {abs(gain):.3f} {verdict} torchvision's default recipe ({base['AP']:.3f}) on the same budget."


def _parts_text(stats: dict[str, float]) -> str:
    """``body AP 0.612, foot AP 0.431`` where the evaluation scored the parts (23 points), else ``""``."""
    if "body_ap" not in stats:
        return ""
    foot = stats.get("foot_ap")
    return f"body AP {stats['body_ap']:.3f}, foot AP {'-' if foot is None or foot < 0 else f'{foot:.3f}'}"


def inference_table_lines(summary: dict[str, Any]) -> list[str]:
    """The inference options table of ``report.md``: each candidate's AP on the search's images
    (where the options were chosen) and its AP, body AP, foot AP and seconds per image on the held-out ones."""
    search, held = summary.get("options_search"), summary.get("options_held_out")
    if not search or not held:
        return []

    def ap(value: float | None) -> str:
        return "-" if value is None or value < 0 else f"{value:.4f}"

    lines = ["", "## Inference options", "",
             f"Chosen on the search's validation images, reported on {summary.get('validation_source')}; "
             f"the validation numbers above use **{summary.get('inference')}**.", "",
             "| options | AP (search images) | AP (held out) | body AP | foot AP | s/image |",
             "|---|---|---|---|---|---|"]
    for chosen_row, row in zip(search, held):
        mark = " (chosen)" if row["options"] == summary.get("inference") else ""
        lines.append(f"| {row['options']}{mark} | {ap(chosen_row['AP'])} | {ap(row['AP'])} | "
                     f"{ap(row.get('body_ap'))} | {ap(row.get('foot_ap'))} | {row['s_per_image']:.3f} |")
    return lines + [""]


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def study_report(summary: dict[str, Any], trials: list[TrialResult], importances: Importances | None = None,
                 folder: Path | None = None) -> str:
    """A Markdown summary: the sentence, the result, the trials' curves, one line per trial (best
    first), then which settings mattered."""
    lines = [
        f"# Study result: trial {summary['best_trial']}",
        "",
        summary.get("sentence") or study_sentence(summary),
        "",
        f"- oks_map during the search: {summary['search_oks_map']:.4f} (epoch {summary['best_epoch']})",
        f"- {'held-out' if summary.get('held_out') else 'full validation'} AP: {summary['validation']['AP']:.4f} "
        f"(AP50 {summary['validation']['AP50']:.4f}) on {summary['validation_images']} images"
        + (f"; {parts} (body: COCO's 17 points and sigmas, torchvision's scale)"
           if (parts := _parts_text(summary["validation"])) else ""),
    ]
    if summary["baseline_trial"]:
        base = summary["baseline_oks_map"]
        full = summary.get("baseline_validation")
        lines.append(f"- torchvision default recipe (trial {summary['baseline_trial']}): oks_map "
                     f"{base if base is None else f'{base:.4f}'}, gain {summary['gain_over_baseline']:+.4f}"
                     + (f"; {'held-out' if summary.get('held_out') else 'full validation'} AP {full['AP']:.4f}"
                        if full else ""))
    if summary.get("validation_source"):
        lines.append(f"- chosen on the validation images the trials were scored on; reported on "
                     f"{summary['validation_source']}")
    lines += inference_table_lines(summary)
    lines += [f"- trial-epochs saved by early stopping: {summary['trial_epochs_saved']:.0%}", "",
              "![oks_map per epoch of every trial](trial_curves.png)", "",
              "| trial | kind | epochs | best oks_map | error | params |", "|---|---|---|---|---|---|"]
    for t in sorted(trials, key=lambda t: -(t.best_oks_map if t.best_oks_map is not None else -1)):
        score = "-" if t.best_oks_map is None else f"{t.best_oks_map:.4f}"
        error = (t.error or "")[:60].replace("|", "/").replace("\n", " ")
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        lines.append(f"| {t.trial_id} | {t.kind} | {t.epochs} | {score} | {error} | {params} |")
    kept = summary.get("checkpoint_bytes")
    if kept:
        lines += ["", "## Checkpoints kept in storage", "",
                  f"{sum(kept.values()) / 1e6:.1f} MB in all (best/ holds one more copy of the best):", "",
                  "| trial | MB |", "|---|---|",
                  *(f"| {trial} | {size / 1e6:.1f} |" for trial, size in sorted(kept.items(), key=lambda kv: -kv[1]))]
    lines += ["", *importance_lines(importances)]
    lines += error_analysis_lines(summary.get("analysis"), folder)
    return "\n".join(lines).rstrip() + "\n"


def error_analysis_lines(files: dict[str, str] | None, folder: Path | None = None) -> list[str]:
    """``report.md``'s error analysis section: each error type's AP gain corrected on its own
    beside the cumulative run, as a table and the two bar charts (files under ``analysis/``;
    ``files`` are relative to ``folder``, best/)."""
    summary_file = Path(folder or ".") / files.get("summary", "") if files else None
    if summary_file is None or not summary_file.is_file():
        return []
    from raypose.analysis.report import isolated_gain_lines

    analysis = json.loads(summary_file.read_text())
    return ["", "## Error analysis", "", *isolated_gain_lines(analysis), "",
            "![AP gain of each error type, cumulative](analysis/plots/progressive_gains.png) "
            "![AP gain of each error type on its own](analysis/plots/isolated_gains.png)", "",
            "The full report, with the worst images: `analysis/report.html`."]
