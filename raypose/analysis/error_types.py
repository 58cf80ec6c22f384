"""Per-keypoint error classification (Ronchi & Perona, ICCV 2017), vectorised, for any keypoint count.

For each detection matched to a ground-truth person (greedy COCO matching at the localisation
threshold OKS >= 0.1), each keypoint ``k`` whose ground truth is labelled (``v > 0``) is compared,
by keypoint similarity ``ks = exp(-d^2 / (2 sigma_k)^2 / (area + eps) / 2)``, with

* its own ground truth's keypoint ``k`` (``own``),
* its own ground truth's left/right counterpart of ``k`` (``inv``, via the schema's flip pairs),
* keypoint ``k`` and its counterpart of every other person in the image (``other``, best of them);

a candidate whose ground-truth point is unlabelled does not count. The keypoint is then

* **good**: ``own`` is the best and ``own >= 0.85``;
* **jitter**: ``own`` is the best and ``0.5 <= own < 0.85``;
* **inversion**: ``inv >= 0.5`` and ``inv`` beats ``own`` (and is at least ``other``);
* **swap**: ``other >= 0.5`` and beats ``own`` and ``inv``;
* **miss**: all three are below 0.5.

Ties go to ``own`` first, then ``inv`` (so a centre point like the nose, its own counterpart, is
never an inversion). Keypoints of unmatched detections, of detections matched to ignored ground
truth (crowds, people without labelled keypoints), and of unlabelled ground-truth points are left
unclassified (``UNCLASSIFIED``).

That is raypose's convention; coco-analyze's (:mod:`raypose.analysis.conventions`, ``convention=``)
breaks ties own > other person > ``inv``, calls good only ``own > 0.85`` (a point at exactly 0.85
gets no category), also classifies detections matched to ignored people who have keypoints, and
moves corrected points to ``ks^(1/4)`` of the target.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from raypose.analysis.conventions import RAYPOSE, Convention
from raypose.analysis.data import Pairs
from raypose.evaluation.fast import CategoryData, MatchResult, match, pair_oks, same_image_pairs
from raypose.evaluation.oks import oks_pairs
from raypose.schema import KeypointSchema

UNCLASSIFIED, GOOD, JITTER, INVERSION, SWAP, MISS = -1, 0, 1, 2, 3, 4
ERROR_TYPES: tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
ERROR_CODE: dict[str, int] = {name: code for code, name in enumerate(ERROR_TYPES)}
JITTER_KS = 0.5  # below this a keypoint is a miss (or belongs to another candidate)
GOOD_KS = 0.85  # at or above this a keypoint on its own ground truth is good
LOC_OKS_THRESHOLD = 0.1  # detections matched at this OKS count as localisation errors, not background
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # exactly pycocotools' iouThrs
ALL_AREA = np.array([[0.0, 1e5**2]])  # pycocotools' "all" area range
_EPS = np.spacing(1)
# Corrected keypoints are put a hair closer than the target ks, so floating-point rounding never
# leaves a corrected point just below the threshold it was moved to.
_CORRECTION_SHRINK = 1.0 - 1e-6


@dataclass
class KeypointErrors:
    """Classification of every keypoint of every (kept) detection.

    Attributes:
        classes: (N, K) int8, one of GOOD..MISS, or UNCLASSIFIED.
        own_ks: (N, K) ks to the matched ground truth's same keypoint; -1 where nothing is compared
            (unmatched detection, unlabelled point).
        inv_ks: (N, K) ks to the matched ground truth's left/right counterpart; -1 where not labelled.
        other_ks: (N, K) best ks to a keypoint (same or counterpart) of another person; -1 if none.
        matched_gt: (N,) ground truth the keypoints are compared with (a person who counts; with
            coco-analyze's convention also an ignored one with keypoints), -1 if none.
    """

    classes: np.ndarray
    own_ks: np.ndarray
    inv_ks: np.ndarray
    other_ks: np.ndarray
    matched_gt: np.ndarray

    def counts(self) -> dict[str, int]:
        """Number of keypoints in each category, over all detections and keypoints."""
        return {name: int(np.count_nonzero(self.classes == code)) for code, name in enumerate(ERROR_TYPES)}

    def counts_per_keypoint(self, names: Iterable[str]) -> dict[str, dict[str, int]]:
        """``{keypoint name: {category: count}}``."""
        per_k = np.stack([np.count_nonzero(self.classes == code, axis=0) for code in range(len(ERROR_TYPES))])
        return {
            name: {cat: int(per_k[c, k]) for c, cat in enumerate(ERROR_TYPES)} for k, name in enumerate(names)
        }

    def best_wrong_ks(self) -> np.ndarray:
        """(N, K) the ks that made an inversion or swap (to the wrong point); 0 elsewhere."""
        out = np.zeros(self.classes.shape)
        inv = self.classes == INVERSION
        swap = self.classes == SWAP
        out[inv] = self.inv_ks[inv]
        out[swap] = self.other_ks[swap]
        return out


def pair_keypoint_similarity(
    dt_xy: np.ndarray, gt_xy: np.ndarray, gt_areas: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """ks of P paired people, keypoint by keypoint.

    Args:
        dt_xy: (P, K, 2) detected positions, pixels. gt_xy: (P, K, 2) ground-truth positions.
        gt_areas: (P,) ground-truth areas, pixels^2. sigmas: (K,) pycocotools sigmas.

    Returns:
        (P, K) ks in [0, 1] (visibility not applied), same float operations as pycocotools.
    """
    dx = dt_xy[..., 0] - gt_xy[..., 0]
    dy = dt_xy[..., 1] - gt_xy[..., 1]
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    return np.exp(-((dx**2 + dy**2) / variances / (gt_areas[:, None] + _EPS) / 2))


def match_detections(
    data: CategoryData,
    sigmas: np.ndarray,
    thresholds: Iterable[float],
    area: np.ndarray = ALL_AREA,
    pairs: Pairs | None = None,
) -> MatchResult:
    """pycocotools' greedy matching over one area range (default "all") at the given OKS thresholds.

    Args:
        area: (1, 2) area range in pixels^2.
        pairs: the OKS of ``data``'s same-image pairs (:func:`raypose.evaluation.fast.pair_oks`),
            all of them or at least those reaching the lowest threshold; computed when None.
    """
    thresholds = np.asarray(list(thresholds), dtype=np.float64)
    if pairs is None:
        pairs = pair_oks(data, sigmas, min_oks=float(thresholds.min()))
    return match(data, pairs, area, thresholds)


def matched_regular_gt(data: CategoryData, result: MatchResult, t: int = 0) -> np.ndarray:
    """(N,) ground-truth index each detection is matched to at threshold index ``t``; -1 if it is
    unmatched or matched to an ignored ground truth."""
    gt = result.dt_gt[0, t].copy()
    if len(data.gt_ids):
        gt[(gt >= 0) & data.gt_ignore[np.maximum(gt, 0)]] = -1
    return gt


def localisation_matches(
    data: CategoryData,
    sigmas: np.ndarray,
    gt_num_labelled: np.ndarray,
    convention: Convention = RAYPOSE,
    pairs: Pairs | None = None,
) -> np.ndarray:
    """(N,) the ground truth whose keypoints each detection's are classified against; -1 for none.

    Detections matched at OKS >= 0.1 over the convention's area range: to a person who counts
    (raypose), or to any person whose ``num_keypoints`` is not 0, ignored or not (coco-analyze).

    Args:
        gt_num_labelled: (G,) the ground-truth file's ``num_keypoints`` field.
    """
    loc = match_detections(data, sigmas, [LOC_OKS_THRESHOLD], convention.area, pairs)
    if not convention.classify_ignored:
        return matched_regular_gt(data, loc)
    gt = np.where(loc.dt_matched[0, 0], loc.dt_gt[0, 0], -1)
    gt[(gt >= 0) & (gt_num_labelled[np.maximum(gt, 0)] == 0)] = -1
    return gt


def _max_per_detection(num_dt: int, pair_dt: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(N, K) maximum of ``values`` (P, K) over each detection's pairs (``pair_dt`` sorted); -1 if none."""
    out = np.full((num_dt, values.shape[1]), -1.0)
    if len(pair_dt):
        dets, starts = np.unique(pair_dt, return_index=True)
        out[dets] = np.maximum.reduceat(values, starts, axis=0)
    return out


def classify_keypoints(
    data: CategoryData, matched_gt: np.ndarray, schema: KeypointSchema, convention: Convention = RAYPOSE
) -> KeypointErrors:
    """Classify every keypoint of every detection (see the module docstring).

    Args:
        data: ground truth and detections; keypoints ``(x, y, v)`` in pixels.
        matched_gt: (N,) ground-truth index per detection, -1 for none
            (:func:`localisation_matches`, or :func:`matched_regular_gt` at :data:`LOC_OKS_THRESHOLD`).
        schema: gives the sigmas and the left/right flip permutation.
        convention: tie order and good threshold; its sigmas (:meth:`Convention.keypoint_sigmas`).
    """
    num_dt, num_k = len(data.dt_img), schema.num_keypoints
    sigmas = convention.keypoint_sigmas(schema)
    flip = schema.flip_index
    pair_dt, pair_gt = same_image_pairs(data)
    dt_xy = data.dt_kpts[pair_dt, :, :2]
    gt_pts = data.gt_kpts[pair_gt]
    areas = data.gt_areas[pair_gt]
    labelled = gt_pts[:, :, 2] > 0
    ks = np.where(labelled, pair_keypoint_similarity(dt_xy, gt_pts[:, :, :2], areas, sigmas), -1.0)
    ks_flip = np.where(
        labelled[:, flip], pair_keypoint_similarity(dt_xy, gt_pts[:, flip, :2], areas, sigmas), -1.0
    )

    own_pair = matched_gt[pair_dt] == pair_gt
    own = np.full((num_dt, num_k), -1.0)
    inv = np.full((num_dt, num_k), -1.0)
    own[pair_dt[own_pair]] = ks[own_pair]
    inv[pair_dt[own_pair]] = ks_flip[own_pair]
    other_same = _max_per_detection(num_dt, pair_dt[~own_pair], ks[~own_pair])
    other_flip = _max_per_detection(num_dt, pair_dt[~own_pair], ks_flip[~own_pair])
    classes = _categories(own, inv, other_same, other_flip, convention)
    own[own < 0] = -1.0
    return KeypointErrors(
        classes=classes,
        own_ks=own,
        inv_ks=inv,
        other_ks=np.maximum(other_same, other_flip),
        matched_gt=matched_gt.copy(),
    )


def _categories(
    own: np.ndarray, inv: np.ndarray, other_same: np.ndarray, other_flip: np.ndarray, convention: Convention
) -> np.ndarray:
    """(N, K) int8 categories from the ks to each candidate (-1 where the candidate is unlabelled)."""
    other = np.maximum(other_same, other_flip)
    valid = own >= 0  # matched detection and labelled ground-truth point
    best = np.maximum(np.maximum(own, inv), other)
    own_best = (own >= inv) & (own >= other)
    if convention.tie_order == "own-inversion-other":
        inv_best = ~own_best & (inv >= other)
    else:
        # coco-analyze's argmax over its rows: own, other people's same point, own counterpart,
        # other people's counterpart; the first maximum wins
        inv_best = ~own_best & (inv > other_same) & (inv >= other_flip)
    good = own >= GOOD_KS if convention.good_includes_threshold else own > GOOD_KS
    classes = np.full(own.shape, UNCLASSIFIED, dtype=np.int8)
    classes[valid & own_best & good] = GOOD
    classes[valid & own_best & (own < GOOD_KS)] = JITTER
    classes[valid & inv_best] = INVERSION
    classes[valid & ~own_best & ~inv_best] = SWAP
    classes[valid & (best < JITTER_KS)] = MISS
    return classes


def corrected_keypoints(
    data: CategoryData,
    errors: KeypointErrors,
    sigmas: np.ndarray,
    types: Iterable[str],
    convention: Convention = RAYPOSE,
) -> np.ndarray:
    """Detection keypoints with the errors of ``types`` corrected, as in the paper.

    A corrected keypoint moves onto its own ground truth's point, shifted along x by the distance
    at which ks equals: 0.85 for jitter (it becomes good), 0.5 for a miss (it becomes jitter), and
    the ks it had to the wrong point for an inversion or swap (right point, same precision).
    coco-analyze's convention computes that distance with ``sigma^2`` where OKS has
    ``(2 sigma)^2``, so its points land at the fourth root of those ks (jitter 0.96, miss 0.84).

    Args:
        sigmas: (K,) the convention's keypoint sigmas (:meth:`Convention.keypoint_sigmas`).

    Returns:
        (N, K, 3) keypoints ``(x, y, v)``; points of other categories are unchanged.
    """
    codes = [ERROR_CODE[t] for t in types]
    target = np.zeros(errors.classes.shape)
    target[errors.classes == JITTER] = GOOD_KS
    target[errors.classes == MISS] = JITTER_KS
    wrong = errors.best_wrong_ks()
    swapped = np.isin(errors.classes, (INVERSION, SWAP))
    target[swapped] = wrong[swapped]
    fix = np.isin(errors.classes, [c for c in codes if c != GOOD])
    out = data.dt_kpts.copy()
    if not fix.any():
        return out
    d_idx, k_idx = np.nonzero(fix)
    g_idx = errors.matched_gt[d_idx]
    sigma = np.asarray(sigmas, dtype=np.float64)[k_idx]
    ks = target[d_idx, k_idx]
    if convention.landing_variance == "oks":
        area = data.gt_areas[g_idx] + _EPS
        ks = np.clip(ks, _EPS, 1.0)
        shift = np.sqrt(-np.log(ks) * 2.0 * area * (sigma * 2) ** 2) * _CORRECTION_SHRINK
    else:
        # cocoanalyze.py's arithmetic, operation for operation: the wrong point's ks nudged off 0
        # and 1, then sqrt(-log(ks) * 2 * area * sigma^2), the area without eps
        ks = ks + _EPS * (ks == 0) - _EPS * (ks == 1)
        shift = np.sqrt(-np.log(ks) * 2 * data.gt_areas[g_idx] * (sigma**2))
    out[d_idx, k_idx, 0] = data.gt_kpts[g_idx, k_idx, 0] + shift
    out[d_idx, k_idx, 1] = data.gt_kpts[g_idx, k_idx, 1]
    return out


def matched_oks(data: CategoryData, sigmas: np.ndarray, matched_gt: np.ndarray) -> np.ndarray:
    """(N,) OKS of each detection with its matched ground truth (pycocotools' OKS); NaN if unmatched."""
    out = np.full(len(data.dt_img), np.nan)
    has = np.flatnonzero(matched_gt >= 0)
    if len(has):
        g = matched_gt[has]
        out[has] = oks_pairs(data.dt_kpts[has], data.gt_kpts[g], data.gt_boxes[g], data.gt_areas[g], sigmas)
    return out


def best_oks(
    data: CategoryData, sigmas: np.ndarray, pairs: Pairs | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each detection's highest OKS with a regular ground truth of its image, and that index.

    Args:
        pairs: every same-image pair's OKS (:func:`raypose.evaluation.fast.pair_oks`); computed when None.

    Returns:
        ``(oks, gt)``, each (N,): 0 and -1 where the image has no regular ground truth.
    """
    pair_dt, pair_gt, oks = pair_oks(data, sigmas) if pairs is None else pairs
    regular = ~data.gt_ignore[pair_gt]
    pair_dt, pair_gt, oks = pair_dt[regular], pair_gt[regular], oks[regular]
    best = np.zeros(len(data.dt_img))
    np.maximum.at(best, pair_dt, oks)
    gt = np.full(len(data.dt_img), -1, dtype=np.int64)
    is_best = oks == best[pair_dt]
    gt[pair_dt[is_best][::-1]] = pair_gt[is_best][::-1]  # first best ground truth on ties
    gt[best <= 0] = -1
    return best, gt


def image_oks(
    data: CategoryData, det_oks: np.ndarray, matched_gt: np.ndarray, dt_ignored: np.ndarray
) -> np.ndarray:
    """One OKS-like score per image in [0, 1], low = bad; used to pick the worst images.

    ``sum(OKS of matched detections) / (regular people + sum(scores of unmatched detections))``:
    a missed person counts as OKS 0, and a false positive adds its confidence to the
    denominator, so confident hallucinations hurt more than low-score ones. An image without
    regular people scores ``1 / (1 + sum of its detections' scores)``.

    Args:
        det_oks: (N,) OKS with the matched ground truth (NaN if unmatched).
        matched_gt: (N,) regular ground truth matched at the localisation threshold, -1 if none.
        dt_ignored: (N,) detections matched to an ignored ground truth (they count for nothing).
    """
    num_img = data.num_images
    matched = matched_gt >= 0
    num = np.bincount(data.dt_img[matched], weights=det_oks[matched], minlength=num_img)
    unmatched = ~matched & ~dt_ignored
    fp_mass = np.bincount(data.dt_img[unmatched], weights=data.dt_scores[unmatched], minlength=num_img)
    people = np.bincount(data.gt_img[~data.gt_ignore], minlength=num_img).astype(np.float64)
    empty = people == 0
    return np.where(empty, 1.0, num) / (people + fp_mass + empty)


def background_false_positives(result: MatchResult) -> np.ndarray:
    """(N,) detections matched at no OKS threshold of ``result`` (and not ignored at any)."""
    return ~(result.dt_matched[0] | result.dt_ignore[0]).any(axis=0)


def false_negatives(data: CategoryData, result: MatchResult) -> np.ndarray:
    """(G,) ground truths who count in ``result``'s area range, matched at none of its OKS thresholds."""
    hit = np.zeros(len(data.gt_ids), dtype=bool)
    taken = result.dt_gt[0][result.dt_gt[0] >= 0]
    hit[taken] = True
    return ~hit & ~result.gt_ignore[0]


def oks_loss_share(errors: KeypointErrors) -> tuple[np.ndarray, np.ndarray]:
    """How much of the OKS lost by matched detections each keypoint type accounts for.

    A detection's OKS is the mean of its labelled keypoints' ks, so ``1 - OKS`` splits exactly
    into ``(1 - ks_k) / n_labelled`` per keypoint.

    Returns:
        ``(share, mean_ks)``, each (K,): share of the total OKS lost (sums to 1, or all 0 when
        nothing is lost) and the mean ks of each keypoint over matched detections (NaN if none).
    """
    valid = errors.own_ks >= 0
    n_labelled = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    loss = np.where(valid, (1.0 - errors.own_ks) / n_labelled, 0.0).sum(axis=0)
    total = loss.sum()
    share = loss / total if total > 0 else np.zeros_like(loss)
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean_ks = np.where(
            count > 0, np.where(valid, errors.own_ks, 0).sum(axis=0) / np.maximum(count, 1), np.nan
        )
    return share, mean_ks
