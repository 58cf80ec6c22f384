"""Progressive correction (Ronchi & Perona, ICCV 2017): how much AP each error type costs.

Starting from the original detections, errors are corrected cumulatively, and COCO keypoint AP
(OKS 0.50:0.05:0.95, and at 0.5) is measured after each step:

1. ``miss``, 2. ``swap``, 3. ``inversion``, 4. ``jitter``: the keypoints of detections matched
   at OKS >= 0.1 are moved as :func:`raypose.analysis.error_types.corrected_keypoints` says;
5. ``score``: optimal rescoring: in each image the detections are assigned one-to-one to the
   regular ground truths maximising total OKS (Hungarian), an assigned detection's score becomes
   its OKS, the others score 0 (or, in images with ignored people, their best OKS to an ignored
   person scaled below every assigned score);
6. ``background_fp``: detections matched at no OKS threshold are removed;
7. ``false_negative``: ground truths matched at no OKS threshold are ignored.

The gain of a step is its AP minus the previous step's: the largest gain is the error to attack
first. Evaluation is :mod:`raypose.evaluation.fast` (bit-identical to pycocotools) on the "all"
area range with 20 detections per image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from raypose.analysis.data import MAX_DETS, AnalysisInput, select_detections, with_scores
from raypose.analysis.error_types import (
    LOC_OKS_THRESHOLD,
    OKS_THRESHOLDS,
    KeypointErrors,
    background_false_positives,
    classify_keypoints,
    corrected_keypoints,
    false_negatives,
    match_detections,
    matched_regular_gt,
)
from raypose.evaluation.fast import CategoryData, accumulate, pair_oks

logger = logging.getLogger(__name__)

KEYPOINT_STEPS: tuple[str, ...] = ("miss", "swap", "inversion", "jitter")
STEP_LABELS: dict[str, str] = {
    "original": "Original",
    "miss": "Miss",
    "swap": "Swap",
    "inversion": "Inversion",
    "jitter": "Jitter",
    "score": "Optimal score",
    "background_fp": "Background FP",
    "false_negative": "False negatives",
}
REC_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # pycocotools' recThrs


@dataclass
class EvalSummary:
    """COCO keypoint AP for one set of detections ("all" areas, 20 detections per image)."""

    ap: float  # mean precision over OKS 0.50:0.95 and 101 recall points; -1 without ground truth
    ap50: float
    ap75: float
    recall: float  # recall at 20 detections, averaged over OKS thresholds
    precision: np.ndarray = field(repr=False)  # (T, R) interpolated precision, -1 where undefined


@dataclass
class ProgressiveStep:
    name: str
    label: str
    result: EvalSummary
    gain_ap: float  # AP minus the previous step's (NaN if either is undefined)
    gain_ap50: float


@dataclass
class ProgressiveResult:
    steps: list[ProgressiveStep]
    errors: KeypointErrors  # classification of the original detections
    background_fp: np.ndarray  # (N,) original detections matched at no OKS threshold
    false_negative: np.ndarray  # (G,) regular ground truths matched at no OKS threshold (original)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _gain(value: float, previous: float) -> float:
    """AP difference; NaN when either AP is undefined (-1: no regular ground truth left)."""
    return value - previous if value >= 0 and previous >= 0 else float("nan")


def evaluate_category(data: CategoryData, sigmas: np.ndarray) -> EvalSummary:
    """COCO keypoint AP of ``data``, identical to pycocotools' ``stats[0]``, ``stats[1]``, ``stats[2]``."""
    result = match_detections(data, sigmas, OKS_THRESHOLDS)
    precision, recall, _ = accumulate(data, result, REC_THRESHOLDS, [MAX_DETS])
    p = precision[:, :, 0, 0]
    return EvalSummary(
        ap=_mean_valid(p),
        ap50=_mean_valid(p[0]),
        ap75=_mean_valid(p[5]),
        recall=_mean_valid(recall[:, 0, 0]),
        precision=p,
    )


def optimal_scores(data: CategoryData, sigmas: np.ndarray) -> np.ndarray:
    """The rescoring that maximises AP for the given keypoints, per the paper (see module doc).

    Returns:
        (N,) new scores in [0, 1], aligned with ``data``'s detections.
    """
    pair_dt, pair_gt, oks = pair_oks(data, sigmas)
    scores = np.zeros(len(data.dt_img))
    dt_count = np.bincount(data.dt_img, minlength=data.num_images)
    gt_count = np.bincount(data.gt_img, minlength=data.num_images)
    dt_start = np.cumsum(dt_count) - dt_count
    gt_start = np.cumsum(gt_count) - gt_count
    pair_start = np.cumsum(dt_count * gt_count) - dt_count * gt_count
    for img in np.flatnonzero((dt_count > 0) & (gt_count > 0)):
        n_dt, n_gt = dt_count[img], gt_count[img]
        matrix = oks[pair_start[img] : pair_start[img] + n_dt * n_gt].reshape(n_dt, n_gt)
        ignored = data.gt_ignore[gt_start[img] : gt_start[img] + n_gt]
        scores[dt_start[img] : dt_start[img] + n_dt] = _image_optimal_scores(matrix, ignored)
    return scores


def _image_optimal_scores(oks: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """Scores for one image's detections given their (D, G) OKS matrix and which G are ignored."""
    scores = np.zeros(oks.shape[0])
    regular = oks[:, ~ignored]
    assigned = np.zeros(oks.shape[0], dtype=bool)
    if regular.shape[1]:
        rows, cols = linear_sum_assignment(regular, maximize=True)
        scores[rows] = regular[rows, cols]
        assigned[rows] = True
    if ignored.any() and not assigned.all():
        positive = scores[assigned & (scores > 0)]
        cap = max((positive.min() if positive.size else 1.0) - np.spacing(1), 0.0)
        rest = ~assigned
        scores[rest] = oks[rest][:, ignored].max(axis=1) * cap
    return scores


def correction_stages(inp: AnalysisInput, errors: KeypointErrors) -> list[tuple[str, CategoryData]]:
    """The data after each cumulative correction step, starting with ``("original", inp.data)``.

    Args:
        errors: the classification of ``inp.data``'s detections (:func:`classify_input`).
    """
    data, sigmas = inp.data, inp.sigmas
    stages: list[tuple[str, CategoryData]] = [("original", data)]
    for n in range(1, len(KEYPOINT_STEPS) + 1):
        kpts = corrected_keypoints(data, errors, sigmas, KEYPOINT_STEPS[:n])
        stages.append((KEYPOINT_STEPS[n - 1], replace(data, dt_kpts=kpts)))
    rescored, _ = with_scores(stages[-1][1], optimal_scores(stages[-1][1], sigmas))
    stages.append(("score", rescored))
    background = background_false_positives(match_detections(rescored, sigmas, OKS_THRESHOLDS))
    no_fp = select_detections(rescored, ~background)
    stages.append(("background_fp", no_fp))
    fn = false_negatives(no_fp, match_detections(no_fp, sigmas, OKS_THRESHOLDS))
    stages.append(("false_negative", replace(no_fp, gt_ignore=no_fp.gt_ignore | fn)))
    return stages


def classify_input(inp: AnalysisInput) -> KeypointErrors:
    """Classify the keypoints of ``inp``'s detections matched at OKS >= 0.1."""
    loc = match_detections(inp.data, inp.sigmas, [LOC_OKS_THRESHOLD])
    return classify_keypoints(inp.data, matched_regular_gt(inp.data, loc), inp.schema)


def progressive_correction(inp: AnalysisInput, errors: KeypointErrors | None = None) -> ProgressiveResult:
    """Run the cumulative corrections and measure AP after each (see the module docstring)."""
    errors = classify_input(inp) if errors is None else errors
    steps: list[ProgressiveStep] = []
    for name, stage in correction_stages(inp, errors):
        summary = evaluate_category(stage, inp.sigmas)
        prev = steps[-1].result if steps else summary
        steps.append(
            ProgressiveStep(
                name, STEP_LABELS[name], summary, _gain(summary.ap, prev.ap), _gain(summary.ap50, prev.ap50)
            )
        )
        logger.info("progressive correction %-15s AP %.4f  AP50 %.4f", name, summary.ap, summary.ap50)
    original = match_detections(inp.data, inp.sigmas, OKS_THRESHOLDS)
    return ProgressiveResult(
        steps=steps,
        errors=errors,
        background_fp=background_false_positives(original),
        false_negative=false_negatives(inp.data, original),
    )
