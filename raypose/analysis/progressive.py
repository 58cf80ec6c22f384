"""Progressive correction (Ronchi & Perona, ICCV 2017): how much AP each error type costs.

Starting from the original detections, errors are corrected cumulatively, and COCO keypoint AP
(OKS 0.50:0.05:0.95, and at 0.5) is measured after each step:

1. ``miss``, 2. ``swap``, 3. ``inversion``, 4. ``jitter``: the keypoints of detections matched
   at OKS >= 0.1 are moved as :func:`raypose.analysis.error_types.corrected_keypoints` says;
5. ``score``: optimal rescoring (:mod:`raypose.analysis.rescoring`);
6. ``background_fp``: background false positives are removed;
7. ``false_negative``: missed people are ignored.

The gain of a step is its AP minus the previous step's: the largest gain is the error to attack
first. Beside that run, each error type is also corrected on its own, from the original
detections (coco-analyze's ``errorsAPImpact.py``): its gain is its AP minus the original AP
(for coco-analyze's ``false_neg``, minus the AP without background false positives, as there).

The convention (:mod:`raypose.analysis.conventions`) decides the area range, the corrections,
the rescoring and the background steps: raypose's removes the detections matched at no OKS
threshold, then ignores the people matched at none; coco-analyze's ignores, at each threshold,
the detections unmatched at that threshold, then the people unmatched at it or a lower one.
Evaluation is :mod:`raypose.evaluation.fast` (bit-identical to pycocotools) with 20 detections
per image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from raypose.analysis.conventions import RAYPOSE, Convention
from raypose.analysis.data import (
    MAX_DETS,
    AnalysisInput,
    Pairs,
    reorder_pairs,
    select_detections,
    select_pairs,
    update_pairs,
    with_scores,
)
from raypose.analysis.error_types import (
    ALL_AREA,
    OKS_THRESHOLDS,
    KeypointErrors,
    background_false_positives,
    classify_keypoints,
    corrected_keypoints,
    false_negatives,
    localisation_matches,
    match_detections,
)
from raypose.analysis.rescoring import optimal_scores
from raypose.evaluation.fast import CategoryData, MatchResult, accumulate, pair_oks

logger = logging.getLogger(__name__)

KEYPOINT_STEPS: tuple[str, ...] = ("miss", "swap", "inversion", "jitter")
REC_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # pycocotools' recThrs


@dataclass
class EvalSummary:
    """COCO keypoint AP for one set of detections (one area range, 20 detections per image)."""

    ap: float  # mean precision over OKS 0.50:0.95 and 101 recall points; -1 without ground truth
    ap50: float
    ap75: float
    recall: float  # recall at 20 detections, averaged over OKS thresholds
    precision: np.ndarray = field(repr=False)  # (T, R) interpolated precision, -1 where undefined


@dataclass
class ProgressiveStep:
    name: str  # canonical step key (raypose.analysis.conventions.STEP_KEYS)
    label: str  # the convention's label
    result: EvalSummary
    gain_ap: float  # AP minus the reference step's (NaN if either is undefined)
    gain_ap50: float
    relative_to: str = ""  # the step the gain is measured from


@dataclass
class Stage:
    """One step of the cumulative run: its detections, their OKS pairs and its evaluation.

    For coco-analyze's per-threshold background steps ``data`` is the rescored data: what they
    ignore differs by OKS threshold and is applied inside the evaluation.
    """

    name: str
    data: CategoryData
    pairs: Pairs  # every same-image pair's OKS
    result: EvalSummary
    match: MatchResult | None = field(default=None, repr=False)  # its matching at the OKS thresholds


@dataclass
class ProgressiveResult:
    steps: list[ProgressiveStep]  # the cumulative run
    isolated: list[ProgressiveStep]  # each error type corrected on its own
    errors: KeypointErrors  # classification of the original detections
    background_fp: np.ndarray  # (N,) original detections matched at no OKS threshold
    false_negative: np.ndarray  # (G,) people who count, matched at no OKS threshold (original)
    convention: Convention = RAYPOSE
    background_per_threshold: list[dict] = field(default_factory=list)  # coco-analyze's counts


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _gain(value: float, previous: float) -> float:
    """AP difference; NaN when either AP is undefined (-1: no regular ground truth left)."""
    return value - previous if value >= 0 and previous >= 0 else float("nan")


def _summary(precision: np.ndarray, recall: np.ndarray) -> EvalSummary:
    """From (T, R) precision and (T,) recall."""
    return EvalSummary(
        ap=_mean_valid(precision),
        ap50=_mean_valid(precision[0]),
        ap75=_mean_valid(precision[5]),
        recall=_mean_valid(recall),
        precision=precision,
    )


def summarize_match(data: CategoryData, result: MatchResult) -> EvalSummary:
    """pycocotools' ``accumulate`` + AP of one matching (one area range)."""
    precision, recall, _ = accumulate(data, result, REC_THRESHOLDS, [MAX_DETS])
    return _summary(precision[:, :, 0, 0], recall[:, 0, 0])


def evaluate_category(
    data: CategoryData, sigmas: np.ndarray, area: np.ndarray = ALL_AREA, pairs: Pairs | None = None
) -> EvalSummary:
    """COCO keypoint AP of ``data``, identical to pycocotools' ``stats[0]``, ``stats[1]``, ``stats[2]``
    (with ``area`` (1, 2) as its "all" range; ``pairs``: the OKS pairs, computed when None)."""
    return summarize_match(data, match_detections(data, sigmas, OKS_THRESHOLDS, area, pairs))


def per_threshold_background(data: CategoryData, result: MatchResult) -> tuple[EvalSummary, EvalSummary]:
    """coco-analyze's background steps on one matching at the OKS thresholds.

    Returns:
        ``(no_fp, no_fn)``: AP when, at each threshold, the detections unmatched at it are
        ignored; and when, in addition, the people unmatched at it or at a lower threshold are
        (``cocoanalyze.py``'s ``_summarize_bckgd_errors``: precision is then 1 and recall too).
    """
    no_fp = replace(result, dt_ignore=result.dt_ignore | ~result.dt_matched)
    fp_summary = summarize_match(data, no_fp)
    missed_so_far = np.logical_or.accumulate(~_found(data, result), axis=0)  # (T, G)
    precision = np.empty((len(OKS_THRESHOLDS), len(REC_THRESHOLDS)))
    recall = np.empty(len(OKS_THRESHOLDS))
    for t in range(len(OKS_THRESHOLDS)):
        one = MatchResult(
            dt_gt=no_fp.dt_gt[:, t : t + 1],
            dt_matched=no_fp.dt_matched[:, t : t + 1],
            dt_ignore=no_fp.dt_ignore[:, t : t + 1],
            gt_ignore=no_fp.gt_ignore | missed_so_far[t][None, :],
        )
        p, r, _ = accumulate(data, one, REC_THRESHOLDS, [MAX_DETS])
        precision[t], recall[t] = p[0, :, 0, 0], r[0, 0, 0]
    return fp_summary, _summary(precision, recall)


def background_counts(data: CategoryData, result: MatchResult) -> list[dict]:
    """Per OKS threshold, coco-analyze's numbers of false positives (detections unmatched at it)
    and false negatives (annotations, crowds and ignored people included, matched by none)."""
    found = _found(data, result)
    return [
        {
            "oks": round(float(oks), 2),
            "false_positives": int(np.count_nonzero(~result.dt_matched[0, t])),
            "false_negatives": int(np.count_nonzero(~found[t])),
        }
        for t, oks in enumerate(OKS_THRESHOLDS)
    ]


def _found(data: CategoryData, result: MatchResult) -> np.ndarray:
    """(T, G) whether some detection is matched to each ground truth at each threshold."""
    found = np.zeros((result.dt_gt.shape[1], len(data.gt_ids)), dtype=bool)
    for t in range(result.dt_gt.shape[1]):
        hit = result.dt_gt[0, t]
        found[t, hit[hit >= 0]] = True
    return found


def classify_input(
    inp: AnalysisInput, convention: Convention = RAYPOSE, pairs: Pairs | None = None
) -> KeypointErrors:
    """Classify the keypoints of ``inp``'s detections matched at OKS >= 0.1 (under ``convention``)."""
    matched = localisation_matches(inp.data, inp.sigmas, inp.num_labelled, convention, pairs)
    return classify_keypoints(inp.data, matched, inp.schema, convention)


class _Run:
    """The stages of one analysis; every stage reuses the original detections' OKS pairs, and
    recomputes only the pairs of the detections it moved."""

    def __init__(self, inp: AnalysisInput, errors: KeypointErrors, convention: Convention, pairs: Pairs):
        self.inp, self.errors, self.convention, self.pairs = inp, errors, convention, pairs
        self.sigmas = inp.sigmas
        self.keypoint_sigmas = convention.keypoint_sigmas(inp.schema)
        self.original = self.evaluate("original", inp.data, pairs)

    def evaluate(self, name: str, data: CategoryData, pairs: Pairs) -> Stage:
        result = match_detections(data, self.sigmas, OKS_THRESHOLDS, self.convention.area, pairs)
        return Stage(name, data, pairs, summarize_match(data, result), result)

    def corrected(self, name: str, types: tuple[str, ...]) -> Stage:
        """The original detections with the errors of ``types`` corrected."""
        data = self.inp.data
        kpts = corrected_keypoints(data, self.errors, self.keypoint_sigmas, types, self.convention)
        changed = (kpts != data.dt_kpts).any(axis=(1, 2))
        moved = replace(data, dt_kpts=kpts)
        return self.evaluate(name, moved, update_pairs(self.pairs, moved, self.sigmas, changed))

    def rescored(self, stage: Stage) -> Stage:
        scores = optimal_scores(stage.data, stage.pairs, self.convention, self.keypoint_sigmas)
        moved, order = with_scores(stage.data, scores)
        return self.evaluate("score", moved, reorder_pairs(stage.pairs, order))

    def without_background_fp(self, stage: Stage) -> Stage:
        """raypose: the detections matched at no threshold removed (:func:`background_false_positives`)."""
        keep = ~background_false_positives(stage.match)
        return self.evaluate(
            "background_fp", select_detections(stage.data, keep), select_pairs(stage.pairs, keep)
        )

    def without_missed(self, stage: Stage) -> Stage:
        """raypose: the people matched at no threshold ignored (:func:`false_negatives`)."""
        missed = false_negatives(stage.data, stage.match)
        data = replace(stage.data, gt_ignore=stage.data.gt_ignore | missed)
        return self.evaluate("false_negative", data, stage.pairs)

    def background(self, stage: Stage) -> tuple[Stage, Stage]:
        """The two background steps after ``stage``, one after the other."""
        if self.convention.background == "per-threshold":
            no_fp, no_fn = per_threshold_background(stage.data, stage.match)
            return (
                Stage("background_fp", stage.data, stage.pairs, no_fp),
                Stage("false_negative", stage.data, stage.pairs, no_fn),
            )
        no_fp = self.without_background_fp(stage)
        return no_fp, self.without_missed(no_fp)

    def cumulative(self) -> list[Stage]:
        stages = [self.original]
        for n in range(1, len(KEYPOINT_STEPS) + 1):
            stages.append(self.corrected(KEYPOINT_STEPS[n - 1], KEYPOINT_STEPS[:n]))
        stages.append(self.rescored(stages[-1]))
        stages.extend(self.background(stages[-1]))
        return stages

    def isolated(self) -> list[tuple[Stage, Stage]]:
        """``(stage, reference stage)`` for each error type corrected alone, from the original."""
        out = [(self.corrected(step, (step,)), self.original) for step in KEYPOINT_STEPS]
        out.append((self.rescored(self.original), self.original))
        if self.convention.background == "per-threshold":
            no_fp, no_fn = self.background(self.original)
            return [*out, (no_fp, self.original), (no_fn, no_fp)]
        no_fp = self.without_background_fp(self.original)
        return [*out, (no_fp, self.original), (self.without_missed(self.original), self.original)]


def correction_stages(
    inp: AnalysisInput, errors: KeypointErrors, convention: Convention = RAYPOSE, pairs: Pairs | None = None
) -> list[Stage]:
    """The cumulative run's stages, starting with ``original`` (``inp.data``), each evaluated.

    Args:
        errors: the classification of ``inp.data``'s detections (:func:`classify_input`).
        pairs: every same-image pair's OKS of ``inp.data`` (computed when None).
    """
    pairs = pair_oks(inp.data, inp.sigmas) if pairs is None else pairs
    return _Run(inp, errors, convention, pairs).cumulative()


def _step(stage: Stage, ref: Stage, convention: Convention) -> ProgressiveStep:
    res, prev = stage.result, ref.result
    return ProgressiveStep(
        stage.name,
        convention.label_of(stage.name),
        res,
        _gain(res.ap, prev.ap),
        _gain(res.ap50, prev.ap50),
        ref.name,
    )


def progressive_correction(
    inp: AnalysisInput,
    errors: KeypointErrors | None = None,
    convention: Convention = RAYPOSE,
    pairs: Pairs | None = None,
) -> ProgressiveResult:
    """Run the cumulative corrections and each error type alone, measuring AP (module docstring).

    Args:
        errors: the classification of ``inp.data`` under ``convention`` (computed when None).
        pairs: every same-image pair's OKS of ``inp.data`` (computed when None).
    """
    pairs = pair_oks(inp.data, inp.sigmas) if pairs is None else pairs
    errors = classify_input(inp, convention, pairs) if errors is None else errors
    run = _Run(inp, errors, convention, pairs)
    stages = run.cumulative()
    steps = [_step(stage, stages[max(n - 1, 0)], convention) for n, stage in enumerate(stages)]
    for s in steps:
        logger.info("progressive correction %-15s AP %.4f  AP50 %.4f", s.name, s.result.ap, s.result.ap50)
    score = next(stage for stage in stages if stage.name == "score")
    original = run.original.match
    return ProgressiveResult(
        steps=steps,
        isolated=[_step(stage, ref, convention) for stage, ref in run.isolated()],
        errors=errors,
        background_fp=background_false_positives(original),
        false_negative=false_negatives(inp.data, original),
        convention=convention,
        background_per_threshold=background_counts(score.data, score.match),
    )
