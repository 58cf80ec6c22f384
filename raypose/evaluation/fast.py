"""A vectorised drop-in for pycocotools' keypoint ``COCOeval.evaluate`` + ``accumulate``.

pycocotools loops in Python over images, area ranges, OKS thresholds, detections and ground
truths. This module does the same greedy matching with numpy, batched over all images at once
(one step per detection rank, at most ``maxDets`` steps), and gives bit-identical
``precision``/``recall``/``scores`` arrays, hence identical summary numbers:

* OKS comes from :func:`raypose.evaluation.oks.oks_pairs` (same float operations and order);
* detections are sorted per image with a stable sort on ``-score`` and cut to ``maxDets[-1]``;
* a detection takes, among the ground truths still free (crowds never stop being free), the one
  with the highest OKS >= threshold, the LAST one on ties; regular ground truths are tried before
  ignored ones (crowd, ``num_keypoints == 0``, outside the area range) and win if any qualifies;
* a detection matched to a ground truth whose id is 0 counts as unmatched, as in pycocotools;
* accumulation concatenates images in ``imgIds`` order and sorts with a stable mergesort.

:class:`FastKeypointCOCOeval` subclasses ``COCOeval`` (``summarize()`` is pycocotools' own) but
does not fill ``evalImgs``. The array-level functions (:func:`prepare_category`, :func:`match`,
:func:`accumulate`) are also used for the per-keypoint breakdown.
"""

from __future__ import annotations

import copy
import datetime
import logging
from dataclasses import dataclass, replace

import numpy as np
from pycocotools.cocoeval import COCOeval

from raypose.evaluation.oks import oks_pairs

logger = logging.getLogger(__name__)


@dataclass
class CategoryData:
    """One category's ground truths and kept detections, flattened over the evaluated images.

    Ground truths are ordered by image, then file order; detections by image, then by score
    (stable, highest first), cut to ``max_det`` per image. Keypoints are ``(x, y, v)`` pixels.
    """

    num_images: int
    gt_img: np.ndarray  # (G,) int, image position in the evaluated id list
    gt_kpts: np.ndarray  # (G, K, 3)
    gt_boxes: np.ndarray  # (G, 4) xywh
    gt_areas: np.ndarray  # (G,)
    gt_crowd: np.ndarray  # (G,) bool: may be matched by several detections
    gt_ignore: np.ndarray  # (G,) bool: crowd or num_keypoints == 0
    gt_crowd_ignore: np.ndarray  # (G,) bool: ignored for being a crowd (truthy iscrowd)
    gt_ids: np.ndarray  # (G,) annotation ids (0 counts as "no match" in pycocotools)
    dt_img: np.ndarray  # (N,) int
    dt_rank: np.ndarray  # (N,) int, rank inside its image
    dt_kpts: np.ndarray  # (N, K, 3)
    dt_areas: np.ndarray  # (N,)
    dt_scores: np.ndarray  # (N,)
    dt_ids: np.ndarray  # (N,) result ids (from loadRes)


@dataclass
class MatchResult:
    """Greedy matching for every area range ``a`` and OKS threshold ``t``.

    ``dt_gt[a, t, n]``: index into the category's ground truths, or -1; ``dt_matched``: pycocotools'
    ``dtMatches != 0``; ``dt_ignore``: pycocotools' ``dtIgnore``; ``gt_ignore[a, g]``: ``gtIgnore``.
    """

    dt_gt: np.ndarray  # (A, T, N) int
    dt_matched: np.ndarray  # (A, T, N) bool
    dt_ignore: np.ndarray  # (A, T, N) bool
    gt_ignore: np.ndarray  # (A, G) bool


def _keypoint_array(anns: list[dict], num_kpts: int) -> np.ndarray:
    if not anns:
        return np.zeros((0, num_kpts, 3), dtype=np.float64)
    return np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), num_kpts, 3)


def prepare_category(
    coco_gt, coco_dt, img_ids: list, cat_id: int, max_det: int, num_kpts: int
) -> CategoryData:
    """Collect one category's annotations for ``img_ids`` (sorted unique) as :class:`CategoryData`."""
    # Same selection as COCOeval._prepare: imgToAnns order, then looked up by id in .anns.
    gts = [
        coco_gt.anns[a["id"]]
        for i in img_ids
        for a in coco_gt.imgToAnns.get(i, ())
        if a["category_id"] == cat_id
    ]
    dts = [
        coco_dt.anns[a["id"]]
        for i in img_ids
        for a in coco_dt.imgToAnns.get(i, ())
        if a["category_id"] == cat_id
    ]
    position = {img_id: n for n, img_id in enumerate(img_ids)}
    dt_img = np.array([position[d["image_id"]] for d in dts], dtype=np.int64)
    dt_scores = np.array([d["score"] for d in dts], dtype=np.float64)
    order = np.lexsort((-dt_scores, dt_img))  # stable: ties keep file order, like mergesort
    dt_img, dt_scores = dt_img[order], dt_scores[order]
    starts = np.searchsorted(dt_img, dt_img, side="left")
    rank = np.arange(len(dt_img)) - starts
    keep = rank < max_det
    kept = [dts[i] for i in order[keep]]
    return CategoryData(
        num_images=len(img_ids),
        gt_img=np.array([position[g["image_id"]] for g in gts], dtype=np.int64),
        gt_kpts=_keypoint_array(gts, num_kpts),
        gt_boxes=np.asarray([g["bbox"] for g in gts], dtype=np.float64).reshape(-1, 4),
        gt_areas=np.array([g["area"] for g in gts], dtype=np.float64),
        gt_crowd=np.array([int(g["iscrowd"]) != 0 for g in gts], dtype=bool),
        gt_ignore=np.array(
            [(g["num_keypoints"] == 0) or bool("iscrowd" in g and g["iscrowd"]) for g in gts], dtype=bool
        ),
        gt_crowd_ignore=np.array([bool("iscrowd" in g and g["iscrowd"]) for g in gts], dtype=bool),
        gt_ids=np.array([g["id"] for g in gts], dtype=np.float64),
        dt_img=dt_img[keep],
        dt_rank=rank[keep],
        dt_kpts=_keypoint_array(kept, num_kpts),
        dt_areas=np.array([d["area"] for d in kept], dtype=np.float64),
        dt_scores=dt_scores[keep],
        dt_ids=np.array([d["id"] for d in kept], dtype=np.float64),
    )


def select_keypoint(data: CategoryData, k: int) -> CategoryData:
    """The single-keypoint projection used for per-keypoint AP.

    Only keypoint ``k`` is kept; a ground truth is ignored when it is a crowd or does not label
    ``k`` (its ``num_keypoints`` becomes ``v_k > 0``), so OKS reduces to keypoint ``k``'s ks.
    """
    return replace(
        data,
        gt_kpts=data.gt_kpts[:, k : k + 1],
        dt_kpts=data.dt_kpts[:, k : k + 1],
        gt_ignore=data.gt_crowd_ignore | (data.gt_kpts[:, k, 2] <= 0),
    )


def same_image_pairs(data: CategoryData) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) index pair of the same image, each (P,), grouped by detection."""
    gt_count = np.bincount(data.gt_img, minlength=data.num_images)
    gt_start = np.cumsum(gt_count) - gt_count
    per_dt = gt_count[data.dt_img]
    pair_dt = np.repeat(np.arange(len(data.dt_img)), per_dt)
    offsets = np.arange(len(pair_dt)) - np.repeat(np.cumsum(per_dt) - per_dt, per_dt)
    pair_gt = gt_start[data.dt_img][pair_dt] + offsets
    return pair_dt, pair_gt


def pair_oks(
    data: CategoryData, sigmas: np.ndarray, min_oks: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OKS for every (kept detection, ground truth) pair in the same image.

    Args:
        min_oks: keep only the pairs with OKS >= this (exact values; matching at thresholds
            >= ``min_oks`` never looks at the others). A rounding-tolerant float64 estimate picks
            the pairs first, so the exact, order-preserving OKS is computed for those only.

    Returns:
        ``(pair_dt, pair_gt, oks)``, each (P,): detection index, ground-truth index, OKS.
    """
    pair_dt, pair_gt = same_image_pairs(data)
    if min_oks is not None and min_oks > 0 and len(pair_dt):
        near = _may_reach(data, pair_dt, pair_gt, sigmas, min_oks)
        pair_dt, pair_gt = pair_dt[near], pair_gt[near]
        estimate = _oks_estimate(data, pair_dt, pair_gt, sigmas)
        likely = estimate >= min_oks - 1e-9
        pair_dt, pair_gt = pair_dt[likely], pair_gt[likely]
    oks = oks_pairs(
        data.dt_kpts[pair_dt],
        data.gt_kpts[pair_gt],
        data.gt_boxes[pair_gt],
        data.gt_areas[pair_gt],
        sigmas,
    )
    if min_oks is not None:
        keep = oks >= min_oks
        pair_dt, pair_gt, oks = pair_dt[keep], pair_gt[keep], oks[keep]
    return pair_dt, pair_gt, oks


def _may_reach(
    data: CategoryData, pair_dt: np.ndarray, pair_gt: np.ndarray, sigmas: np.ndarray, min_oks: float
) -> np.ndarray:
    """(P,) False where a pair cannot reach ``min_oks`` (> 0), from boxes alone.

    OKS is a mean of ``exp(-e_k)`` over the labelled keypoints, so OKS >= m needs some labelled k
    with ``d_k^2 <= -ln(m) * 2 * (2 sigma_k)^2 * (area + eps)``; ``d_k`` is at least the gap between
    the box of the detection's keypoints and the box of the person's labelled keypoints. People
    with no labelled keypoint are always kept.
    """
    # Contiguous copies first: reductions along a stride-3 axis are several times slower.
    dt_x, dt_y = np.ascontiguousarray(data.dt_kpts[:, :, 0]), np.ascontiguousarray(data.dt_kpts[:, :, 1])
    dt_box = np.stack([dt_x.min(1), dt_y.min(1), dt_x.max(1), dt_y.max(1)], axis=1)  # (N, 4)
    visible = data.gt_kpts[:, :, 2] > 0
    gx, gy = data.gt_kpts[:, :, 0], data.gt_kpts[:, :, 1]
    gt_box = np.stack(  # (G, 4); +-inf (an empty box, never "far") for people with nothing labelled
        [
            np.where(visible, gx, np.inf).min(1),
            np.where(visible, gy, np.inf).min(1),
            np.where(visible, gx, -np.inf).max(1),
            np.where(visible, gy, -np.inf).max(1),
        ],
        axis=1,
    )
    d, g = dt_box[pair_dt], gt_box[pair_gt]
    gap_x = np.maximum(0.0, np.maximum(g[:, 0] - d[:, 2], d[:, 0] - g[:, 2]))
    gap_y = np.maximum(0.0, np.maximum(g[:, 1] - d[:, 3], d[:, 1] - g[:, 3]))
    max_var = float(np.max((np.asarray(sigmas, dtype=np.float64) * 2) ** 2))
    reach = -np.log(min_oks) * 2 * max_var * (data.gt_areas[pair_gt] + np.spacing(1))
    with np.errstate(invalid="ignore"):  # inf - inf for people with nothing labelled
        near = gap_x**2 + gap_y**2 <= reach * (1 + 1e-6)
    return near | ~visible.any(axis=1)[pair_gt]


def _oks_estimate(data: CategoryData, pair_dt: np.ndarray, pair_gt: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of each pair up to rounding (~1e-15): masked mean instead of pycocotools' compacted sum.

    Pairs whose person labels nothing get +inf (always kept: their exact OKS is cheap).
    """
    visible = data.gt_kpts[:, :, 2][pair_gt] > 0  # (P, K); x and y gathered as planes, not (P, K, 3)
    dx = data.dt_kpts[:, :, 0][pair_dt] - data.gt_kpts[:, :, 0][pair_gt]
    dy = data.dt_kpts[:, :, 1][pair_dt] - data.gt_kpts[:, :, 1][pair_gt]
    dx *= dx
    dy *= dy
    dx += dy
    dx /= (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    dx /= ((data.gt_areas[pair_gt] + np.spacing(1)) * 2)[:, None]
    np.negative(dx, out=dx)
    np.exp(dx, out=dx)
    dx[~visible] = 0.0
    count = visible.sum(axis=1)
    return np.where(count > 0, dx.sum(axis=1) / np.maximum(count, 1), np.inf)


def _outside(areas: np.ndarray, area_rngs: np.ndarray) -> np.ndarray:
    lo, hi = area_rngs[:, 0:1], area_rngs[:, 1:2]
    return (areas[None, :] < lo) | (areas[None, :] > hi)


def match(
    data: CategoryData,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    area_rngs: np.ndarray,
    oks_thrs: np.ndarray,
) -> MatchResult:
    """pycocotools' ``evaluateImg`` greedy matching, for all images, areas and thresholds at once.

    Only pairs with OKS >= the lowest threshold can match; detections without such a pair never
    take a ground truth, so they are left out of the greedy loop (which keeps its order).
    """
    area_rngs = np.asarray(area_rngs, dtype=np.float64).reshape(-1, 2)
    num_a, num_t, num_dt = len(area_rngs), len(oks_thrs), len(data.dt_img)
    gt_ignore = data.gt_ignore[None, :] | _outside(data.gt_areas, area_rngs)
    dt_gt = np.full((num_a, num_t, num_dt), -1, dtype=np.int64)
    thresholds = np.minimum(np.asarray(oks_thrs, dtype=np.float64), 1 - 1e-10)

    pair_dt, pair_gt, oks = pairs
    if num_t and len(oks):
        usable = oks >= thresholds.min()
        candidates = (pair_dt[usable], pair_gt[usable], oks[usable])
        # Rank among the image's candidate detections (detections are sorted by image, then score).
        cand_dt = np.unique(candidates[0])
        cand_img = data.dt_img[cand_dt]
        cand_rank = np.arange(len(cand_dt)) - np.searchsorted(cand_img, cand_img, side="left")
        rank_of = np.full(num_dt, -1, dtype=np.int64)
        rank_of[cand_dt] = cand_rank
        gt_count = np.bincount(data.gt_img, minlength=data.num_images)
        cand_count = np.bincount(cand_img, minlength=data.num_images)
        both = np.flatnonzero(cand_count > 0)
        # Bucket images by ground-truth count (powers of two) so padding stays small.
        bucket_of = np.ceil(np.log2(np.maximum(gt_count[both], 1))).astype(np.int64)
        for b in np.unique(bucket_of):
            images = both[bucket_of == b]
            _match_bucket(data, candidates, rank_of, cand_count, images, gt_ignore, thresholds, dt_gt)

    matched_any = dt_gt >= 0
    safe = np.where(matched_any, dt_gt, 0)
    gt_id_nonzero = data.gt_ids[safe] != 0 if len(data.gt_ids) else np.zeros_like(matched_any)
    dt_matched = matched_any & gt_id_nonzero
    a_idx = np.arange(num_a)[:, None, None]
    dt_ignore = matched_any & (gt_ignore[a_idx, safe] if len(data.gt_ids) else matched_any)
    dt_outside = _outside(data.dt_areas, area_rngs)[:, None, :]
    dt_ignore |= ~dt_matched & dt_outside
    return MatchResult(dt_gt=dt_gt, dt_matched=dt_matched, dt_ignore=dt_ignore, gt_ignore=gt_ignore)


def _match_bucket(data, pairs, rank_of, cand_count, images, gt_ignore, thresholds, dt_gt) -> None:
    """Greedy matching of the images in one bucket; writes ``dt_gt`` in place.

    ``rank_of[d]`` is detection d's rank among its image's candidate detections (-1: none).
    """
    pair_dt, pair_gt, oks = pairs
    num_img = data.num_images
    gt_count = np.bincount(data.gt_img, minlength=num_img)
    gt_start = np.cumsum(gt_count) - gt_count
    # Images with more candidates first, so rank r only touches a prefix of the rows.
    images = images[np.argsort(-cand_count[images], kind="stable")]
    rows = np.full(num_img, -1, dtype=np.int64)
    rows[images] = np.arange(len(images))
    num_rows, width, depth = len(images), int(gt_count[images].max()), int(cand_count[images].max())

    # Layout (width, areas, thresholds, rows): the reductions over a row's ground truths run over the
    # leading axis, i.e. elementwise across contiguous slices, not along a tiny last axis.
    in_bucket = rows[data.dt_img[pair_dt]] >= 0
    p_dt, p_gt = pair_dt[in_bucket], pair_gt[in_bucket]
    p_row = rows[data.dt_img[p_dt]]
    table = np.full((depth, width, num_rows), -np.inf)
    table[rank_of[p_dt], p_gt - gt_start[data.gt_img[p_gt]], p_row] = oks[in_bucket]
    det_at = np.zeros((depth, num_rows), dtype=np.int64)
    det_at[rank_of[p_dt], p_row] = p_dt

    cols = np.arange(width)
    valid = cols[:, None] < gt_count[images][None, :]  # (width, rows)
    gt_index = np.where(valid, gt_start[images][None, :] + cols[:, None], 0)
    ignore = gt_ignore[:, gt_index].transpose(1, 0, 2)  # (width, A, rows)
    ignored = ignore & valid[:, None]
    regular = ~ignore & valid[:, None]
    reusable = data.gt_crowd[gt_index] | ~valid  # padding is never "taken"
    num_a, num_t = gt_ignore.shape[0], len(thresholds)
    taken = np.zeros((width, num_a, num_t, num_rows), dtype=bool)
    counts = cand_count[images]
    for r in range(depth):
        n = int(np.count_nonzero(counts > r))
        o = table[r, :, :n][:, None, None, :]  # (width, 1, 1, n)
        free = ~(taken[..., :n] & ~reusable[:, None, None, :n])
        good = free & (o >= thresholds[None, None, :, None])
        first = good & regular[:, :, None, :n]
        cand = np.where(first.any(0), first, good & ignored[:, :, None, :n])
        value = np.where(cand, o, -np.inf)
        best = cand & (value == value.max(0))
        m = np.zeros((num_a, num_t, n), dtype=np.int64)
        for w in range(1, width):  # the last index wins ties, as in pycocotools
            m[best[w]] = w
        has = cand.any(0)
        a_i, t_i, row_i = np.nonzero(has)
        taken[m[a_i, t_i, row_i], a_i, t_i, row_i] = True
        dt_gt[:, :, det_at[r, :n]] = np.where(has, gt_index[m, np.arange(n)], -1)


def accumulate(
    data: CategoryData, result: MatchResult, rec_thrs: np.ndarray, max_dets: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pycocotools' ``accumulate`` for one category.

    Returns:
        ``precision`` (T, R, A, M), ``recall`` (T, A, M), ``scores`` (T, R, A, M); -1 where the
        area range has no regular ground truth.
    """
    num_a, num_t, _ = result.dt_gt.shape
    num_r, num_m = len(rec_thrs), len(max_dets)
    precision = -np.ones((num_t, num_r, num_a, num_m))
    recall = -np.ones((num_t, num_a, num_m))
    scores = -np.ones((num_t, num_r, num_a, num_m))
    for m, max_det in enumerate(max_dets):
        keep = np.flatnonzero(data.dt_rank < max_det)
        order = keep[np.argsort(-data.dt_scores[keep], kind="mergesort")]
        sorted_scores = data.dt_scores[order]
        nd = len(order)
        for a in range(num_a):
            npig = np.count_nonzero(result.gt_ignore[a] == 0)
            if npig == 0:
                continue
            matched = result.dt_matched[a][:, order]  # (T, nd)
            counted = ~result.dt_ignore[a][:, order]
            tp = np.cumsum(matched & counted, axis=1).astype(dtype=float)
            fp = np.cumsum(~matched & counted, axis=1).astype(dtype=float)
            # pycocotools' per-threshold arithmetic, all thresholds at once (elementwise identical).
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            recall[:, a, m] = rc[:, -1] if nd else 0
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(num_t):
                inds = np.searchsorted(rc[t], rec_thrs, side="left")
                # pycocotools fills recall thresholds up to the first one past the curve's end.
                ok = inds < nd
                precision[t, :, a, m] = np.where(ok, pr[t, np.minimum(inds, nd - 1)], 0.0) if nd else 0.0
                scores[t, :, a, m] = np.where(ok, sorted_scores[np.minimum(inds, nd - 1)], 0.0) if nd else 0.0
    return precision, recall, scores


class FastKeypointCOCOeval(COCOeval):
    """``COCOeval(iouType="keypoints")`` with vectorised ``evaluate`` and ``accumulate``.

    Same constructor and params; ``summarize()`` and ``stats`` are pycocotools' own. ``evalImgs``
    stays empty; per-category data and matches are kept in ``self.category_data`` and
    ``self.matches`` (dicts keyed by category id).
    """

    def __init__(self, cocoGt=None, cocoDt=None, iouType: str = "keypoints"):  # noqa: N803
        if iouType != "keypoints":
            raise ValueError("FastKeypointCOCOeval only evaluates keypoints")
        super().__init__(cocoGt, cocoDt, iouType)
        self.category_data: dict[int, CategoryData] = {}
        self.matches: dict[int, MatchResult] = {}
        self.pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def evaluate(self) -> None:
        p = self.params
        if not p.useCats:
            raise ValueError("FastKeypointCOCOeval needs params.useCats = 1")
        p.imgIds = list(np.unique(p.imgIds))
        p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        sigmas = np.asarray(p.kpt_oks_sigmas, dtype=np.float64)
        self.category_data, self.matches, self.pairs = {}, {}, {}
        for cat_id in p.catIds:
            data = prepare_category(self.cocoGt, self.cocoDt, p.imgIds, cat_id, p.maxDets[-1], len(sigmas))
            pairs = pair_oks(data, sigmas, min_oks=float(np.min(p.iouThrs)))
            self.category_data[cat_id] = data
            self.pairs[cat_id] = pairs
            self.matches[cat_id] = match(data, pairs, np.asarray(p.areaRng), p.iouThrs)
        self.evalImgs = []
        self._paramsEval = copy.deepcopy(p)

    def accumulate(self, p=None) -> None:
        p = self.params if p is None else p
        num_t, num_r, num_k = len(p.iouThrs), len(p.recThrs), len(p.catIds)
        num_a, num_m = len(p.areaRng), len(p.maxDets)
        precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
        recall = -np.ones((num_t, num_k, num_a, num_m))
        scores = -np.ones((num_t, num_r, num_k, num_a, num_m))
        for k, cat_id in enumerate(p.catIds):
            pr, rc, sc = accumulate(self.category_data[cat_id], self.matches[cat_id], p.recThrs, p.maxDets)
            precision[:, :, k] = pr
            recall[:, k] = rc
            scores[:, :, k] = sc
        self.eval = {
            "params": p,
            "counts": [num_t, num_r, num_k, num_a, num_m],
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "precision": precision,
            "recall": recall,
            "scores": scores,
        }
