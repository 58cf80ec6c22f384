"""The whole error analysis of one (ground truth, detections) pair, and its JSON summary.

:func:`compute_analysis` runs the classification, the progressive correction (cumulative and
each error type alone), per-detection and per-image OKS, and lists background false positives
and missed people; :func:`summary_dict` turns the result into the JSON written as ``summary.json``.

The convention (:mod:`raypose.analysis.conventions`) decides the error counts, the corrections,
the AP steps and the lists of background false positives and missed people; per-detection OKS,
the per-image score and the worst-image ranking use COCO's own matching (all areas, people who
count) in both, so the gallery shows the same images whichever convention is asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raypose.analysis.conventions import DIFFERENCES, RAYPOSE, Convention
from raypose.analysis.data import AnalysisInput
from raypose.analysis.error_types import (
    ALL_AREA,
    ERROR_TYPES,
    GOOD_KS,
    JITTER_KS,
    LOC_OKS_THRESHOLD,
    OKS_THRESHOLDS,
    KeypointErrors,
    best_oks,
    image_oks,
    match_detections,
    matched_oks,
    matched_regular_gt,
    oks_loss_share,
)
from raypose.analysis.progressive import (
    REC_THRESHOLDS,
    ProgressiveResult,
    ProgressiveStep,
    classify_input,
    progressive_correction,
)
from raypose.evaluation.fast import CategoryData, pair_oks, same_image_pairs

logger = logging.getLogger(__name__)

DEFAULT_WORST = 100
OVERLAP_IOU = 0.1  # a background false positive whose box overlaps a person this much "overlaps a person"


@dataclass
class AnalysisResult:
    """Everything :func:`summary_dict` and the report need; arrays follow ``inp.data``'s order."""

    inp: AnalysisInput
    errors: KeypointErrors  # under the convention
    progressive: ProgressiveResult
    det_matched: np.ndarray  # (N,) person who counts matched at OKS >= 0.1 (COCO's matching); -1 if none
    det_oks: np.ndarray  # (N,) OKS with the ground truth matched at OKS >= 0.1; NaN if none
    det_best_oks: np.ndarray  # (N,) highest OKS with any regular person of the image (0 if none)
    det_ignored: np.ndarray  # (N,) matched to an ignored ground truth (crowd / no keypoints)
    det_best_iou: np.ndarray  # (N,) highest box IoU with any regular person of the image (0 if none)
    image_oks: np.ndarray  # (I,) the image score: raypose.analysis.error_types.image_oks
    worst: np.ndarray  # image positions, worst first
    oks_loss_share: np.ndarray  # (K,)
    mean_ks: np.ndarray  # (K,)
    oracle: dict[str, Any] | None = field(default=None)


def compute_analysis(
    inp: AnalysisInput, worst: int = DEFAULT_WORST, convention: Convention = RAYPOSE
) -> AnalysisResult:
    """Run the error analysis (CPU, numpy); ``worst`` is how many images to rank worst-first."""
    data, sigmas = inp.data, inp.sigmas
    pairs = pair_oks(data, sigmas)  # every same-image pair, shared by all the steps
    loc = match_detections(data, sigmas, [LOC_OKS_THRESHOLD], ALL_AREA, pairs)
    matched = matched_regular_gt(data, loc)
    ignored = (loc.dt_gt[0, 0] >= 0) & (matched < 0)
    errors = classify_input(inp, convention, pairs)
    progressive = progressive_correction(inp, errors, convention, pairs)
    det_oks = matched_oks(data, sigmas, matched)
    det_best, _ = best_oks(data, sigmas, pairs)
    per_image = image_oks(data, det_oks, matched, ignored)
    has_content = (np.bincount(data.gt_img, minlength=data.num_images) > 0) | (
        np.bincount(data.dt_img, minlength=data.num_images) > 0
    )
    # worst first; ties by image id. Images with neither people nor detections have nothing to show.
    order = np.lexsort((inp.image_ids, per_image))
    order = order[has_content[order]][:worst]
    share, mean_ks = oks_loss_share(errors)
    logger.info("error analysis (%s convention): %s", convention.name, errors.counts())
    return AnalysisResult(
        inp=inp,
        errors=errors,
        progressive=progressive,
        det_matched=matched,
        det_oks=det_oks,
        det_best_oks=det_best,
        det_ignored=ignored,
        det_best_iou=best_box_iou(data),
        image_oks=per_image,
        worst=order,
        oks_loss_share=share,
        mean_ks=mean_ks,
    )


def best_box_iou(data: CategoryData) -> np.ndarray:
    """(N,) each detection's highest box IoU with a regular person of its image; 0 if none.

    A detection's box is the extent of all its keypoints (the box the gallery draws), a person's
    is the annotation's ``bbox``; both in original-image pixels.
    """
    pair_dt, pair_gt = same_image_pairs(data)
    regular = ~data.gt_ignore[pair_gt]
    pair_dt, pair_gt = pair_dt[regular], pair_gt[regular]
    x, y = data.dt_kpts[:, :, 0], data.dt_kpts[:, :, 1]
    dt_box = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1) if x.size else np.zeros((len(x), 4))
    gt_box = np.concatenate([data.gt_boxes[:, :2], data.gt_boxes[:, :2] + data.gt_boxes[:, 2:]], 1)
    a, b = dt_box[pair_dt], gt_box[pair_gt]
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    best = np.zeros(len(data.dt_img))
    np.maximum.at(best, pair_dt, iou)
    return best


def image_score_parts(result: AnalysisResult) -> tuple[np.ndarray, np.ndarray]:
    """The two sums in each image's score (:func:`raypose.analysis.error_types.image_oks`).

    Returns:
        ``(matched_oks_sum, unmatched_score_sum)``, each (I,): the OKS of the detections matched
        at OKS >= 0.1 to a person who counts, and the scores of the detections matched to nobody
        (those matched to an ignored person count in neither).
    """
    data = result.inp.data
    matched = result.det_matched >= 0
    unmatched = ~matched & ~result.det_ignored
    num_img = data.num_images
    oks_sum = np.bincount(data.dt_img[matched], weights=result.det_oks[matched], minlength=num_img)
    fp_mass = np.bincount(data.dt_img[unmatched], weights=data.dt_scores[unmatched], minlength=num_img)
    return oks_sum, fp_mass


def _num(value: float) -> float | None:
    value = float(value)
    return None if not np.isfinite(value) else round(value, 6)


def _step_dict(step: ProgressiveStep, convention: Convention) -> dict[str, Any]:
    return {
        "step": convention.name_of(step.name),
        "label": step.label,
        "ap": _num(step.result.ap),
        "ap50": _num(step.result.ap50),
        "ap75": _num(step.result.ap75),
        "recall": _num(step.result.recall),
        "gain_ap": _num(step.gain_ap),
        "gain_ap50": _num(step.gain_ap50),
        "relative_to": convention.name_of(step.relative_to),
    }


def _progressive_dict(progressive: ProgressiveResult) -> list[dict[str, Any]]:
    return [_step_dict(s, progressive.convention) for s in progressive.steps]


def _isolated_dict(progressive: ProgressiveResult) -> list[dict[str, Any]]:
    return [_step_dict(s, progressive.convention) for s in progressive.isolated]


def _pr_curves(progressive: ProgressiveResult) -> dict[str, Any]:
    def mean_over_t(p: np.ndarray) -> list[float]:
        masked = np.where(p > -1, p, np.nan)
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(masked, axis=0) if np.isfinite(masked).any() else np.full(p.shape[1], -1.0)
        return [round(float(v), 6) if np.isfinite(v) else -1.0 for v in mean]

    name = progressive.convention.name_of
    return {
        "recall_thresholds": [round(float(r), 2) for r in REC_THRESHOLDS],
        "oks_thresholds": [round(float(t), 2) for t in OKS_THRESHOLDS],
        "oks50": {
            name(s.name): [round(float(v), 6) for v in s.result.precision[0]] for s in progressive.steps
        },
        "mean_over_oks": {name(s.name): mean_over_t(s.result.precision) for s in progressive.steps},
        "original_per_oks": {
            f"{t:.2f}": [round(float(v), 6) for v in progressive.steps[0].result.precision[i]]
            for i, t in enumerate(OKS_THRESHOLDS)
        },
    }


def _convention_dict(convention: Convention) -> dict[str, Any]:
    return {
        "name": convention.name,
        "area_range": list(convention.area_range),
        "differences": [
            {"item": letter, "what": what, "raypose": ours, "coco-analyze": theirs}
            for letter, what, ours, theirs in DIFFERENCES
        ],
    }


def background_fp_rows(result: AnalysisResult) -> list[dict[str, Any]]:
    """Background false positives, highest score first."""
    inp, data = result.inp, result.inp.data
    idx = np.flatnonzero(result.progressive.background_fp)
    idx = idx[np.argsort(-data.dt_scores[idx], kind="stable")]
    return [
        {
            "image_id": int(inp.image_ids[data.dt_img[n]]),
            "detection_index": int(inp.dt_file_index[n]),
            "score": _num(data.dt_scores[n]),
            "best_oks": _num(result.det_best_oks[n]),
            "best_iou": _num(result.det_best_iou[n]),
            "overlaps_person": bool(result.det_best_iou[n] >= OVERLAP_IOU),
        }
        for n in idx
    ]


def false_negative_rows(result: AnalysisResult) -> list[dict[str, Any]]:
    """Missed people (regular ground truths matched at no OKS threshold), largest first."""
    inp, data = result.inp, result.inp.data
    idx = np.flatnonzero(result.progressive.false_negative)
    idx = idx[np.argsort(-data.gt_areas[idx], kind="stable")]
    return [
        {
            "image_id": int(inp.image_ids[data.gt_img[g]]),
            "annotation_id": int(data.gt_ids[g]),
            "num_keypoints": int(np.count_nonzero(data.gt_kpts[g, :, 2] > 0)),
            "area": _num(data.gt_areas[g]),
        }
        for g in idx
    ]


def per_detection_rows(result: AnalysisResult) -> list[dict[str, Any]]:
    """One row per kept detection: image, file position, score, OKS (with the person matched at
    OKS >= 0.1, and the best with any person), best box IoU with a person, matched ground truth,
    and whether it is a background false positive under the convention (the report's list)."""
    inp, data = result.inp, result.inp.data
    matched = result.det_matched
    background = result.progressive.background_fp
    return [
        {
            "image_id": int(inp.image_ids[data.dt_img[n]]),
            "detection_index": int(inp.dt_file_index[n]),
            "score": _num(data.dt_scores[n]),
            "oks": _num(result.det_oks[n]),
            "best_oks": _num(result.det_best_oks[n]),
            "best_iou": _num(result.det_best_iou[n]),
            "matched_annotation_id": int(data.gt_ids[matched[n]]) if matched[n] >= 0 else None,
            "background_fp": bool(background[n]),
        }
        for n in range(len(data.dt_img))
    ]


def summary_dict(result: AnalysisResult) -> dict[str, Any]:
    """The JSON summary: ``errors``, ``per_keypoint``, ``progressive``, ``worst`` and more."""
    inp, data = result.inp, result.inp.data
    names = inp.schema.names
    counts = result.errors.counts()
    people = np.bincount(data.gt_img[~data.gt_ignore], minlength=data.num_images)
    dets = np.bincount(data.dt_img, minlength=data.num_images)
    oks_sum, fp_mass = image_score_parts(result)
    out: dict[str, Any] = {
        "ground_truth": inp.gt_source,
        "detections": inp.dt_source,
        "num_keypoints": inp.schema.num_keypoints,
        "keypoint_names": list(names),
        "num_images": int(data.num_images),
        "num_people": int(np.count_nonzero(~data.gt_ignore)),
        "num_detections": int(len(data.dt_img)),
        "convention": _convention_dict(result.progressive.convention),
        "thresholds": {"good_ks": GOOD_KS, "jitter_ks": JITTER_KS, "localisation_oks": LOC_OKS_THRESHOLD},
        "evaluation": _progressive_dict(result.progressive)[0],
        "errors": counts,
        "error_fractions": {k: (_num(v / max(sum(counts.values()), 1))) for k, v in counts.items()},
        "per_keypoint": result.errors.counts_per_keypoint(names),
        "oks_loss_share": {n: _num(v) for n, v in zip(names, result.oks_loss_share)},
        "mean_ks": {n: _num(v) for n, v in zip(names, result.mean_ks)},
        "progressive": _progressive_dict(result.progressive),
        "isolated": _isolated_dict(result.progressive),
        "background_per_threshold": result.progressive.background_per_threshold,
        "pr_curves": _pr_curves(result.progressive),
        "worst": [int(inp.image_ids[i]) for i in result.worst],
        "worst_images": [
            {
                "image_id": int(inp.image_ids[i]),
                "file_name": inp.file_names[i],
                "image_score": _num(result.image_oks[i]),
                "matched_oks_sum": _num(oks_sum[i]),
                "num_people": int(people[i]),
                "unmatched_score_sum": _num(fp_mass[i]),
                "num_detections": int(dets[i]),
            }
            for i in result.worst
        ],
        "per_image": [
            {"image_id": int(inp.image_ids[i]), "image_score": _num(result.image_oks[i])}
            for i in range(data.num_images)
        ],
        "background_false_positives": background_fp_rows(result),
        "false_negatives": false_negative_rows(result),
        "error_types": list(ERROR_TYPES),
    }
    if result.oracle is not None:
        out["oracle"] = result.oracle
    return out
