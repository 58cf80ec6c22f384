"""Optimal rescoring, the paper's scoring step, in the two conventions (convention d).

* raypose (:func:`one_to_one_scores`): in each image the detections are assigned one-to-one to
  the people who count, maximising total OKS (Hungarian); an assigned detection's score becomes
  its OKS, the others score 0 (or, in images with ignored people, their best OKS to an ignored
  person scaled below every assigned score);
* coco-analyze (:func:`max_oks_scores` then :func:`soft_nms_scores`): every detection scores its
  best OKS with a person who counts in the area range, then, image by image, Gaussian soft-NMS
  decays each remaining detection by ``exp(-oks^2 / 0.5)`` of its OKS with the one just kept
  (``cocoanalyze.py``'s ``_soft_nms``, operation for operation).

Scores are (N,) arrays aligned with ``data``'s detections.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from raypose.analysis.conventions import Convention
from raypose.analysis.data import Pairs
from raypose.evaluation.fast import CategoryData

_EPS = np.spacing(1)
_SOFT_NMS_SIGMA = 0.5  # coco-analyze's value ("a hyperparameter from soft_nms paper")
_PAIR_BLOCK = 100_000  # detection pairs per block of the soft-NMS OKS (bounds the (P, K) temporaries)
_MAX_CELLS = 4_000_000  # soft-NMS factors held at once (images x width^2 floats, 32 MB)


def optimal_scores(
    data: CategoryData, pairs: Pairs, convention: Convention, sigmas: np.ndarray
) -> np.ndarray:
    """The convention's optimal scores for ``data``'s detections.

    Args:
        pairs: every same-image pair's OKS (``fast.pair_oks`` without ``min_oks``).
        sigmas: (K,) the convention's keypoint sigmas, for soft-NMS.
    """
    if convention.rescoring == "one-to-one":
        return one_to_one_scores(data, pairs)
    return soft_nms_scores(data, max_oks_scores(data, pairs, convention.area), sigmas)


def one_to_one_scores(data: CategoryData, pairs: Pairs) -> np.ndarray:
    """raypose's rescoring (module docstring); ``pairs`` are every same-image pair's OKS in
    :func:`raypose.evaluation.fast.same_image_pairs`' order (``fast.pair_oks`` without ``min_oks``)."""
    _, _, oks = pairs
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
        scores[dt_start[img] : dt_start[img] + n_dt] = image_one_to_one_scores(matrix, ignored)
    return scores


def image_one_to_one_scores(oks: np.ndarray, ignored: np.ndarray) -> np.ndarray:
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


def max_oks_scores(data: CategoryData, pairs: Pairs, area: np.ndarray) -> np.ndarray:
    """Each detection's best OKS with a person who counts (not ignored, area inside ``area``
    (1, 2)), 0 where its image has none: coco-analyze's ``dtIousMax``."""
    pair_dt, pair_gt, oks = pairs
    areas = data.gt_areas[pair_gt]
    counts = ~data.gt_ignore[pair_gt] & (areas >= area[0, 0]) & (areas <= area[0, 1])
    best = np.zeros(len(data.dt_img))
    np.maximum.at(best, pair_dt[counts], oks[counts])
    return best


def soft_nms_scores(data: CategoryData, scores: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """coco-analyze's soft-NMS of ``scores`` (N,), all images at once.

    In each image, repeatedly: sort the remaining detections by score (stable, so ties keep the
    previous order, first ``data``'s order), keep the first, multiply every other remaining score
    by ``exp(-oks^2 / 0.5)`` with ``oks`` their OKS with the kept one: all K points, the mean of
    the two keypoint boxes' areas as area, ``sigmas`` (K,) the convention's.
    """
    out = np.asarray(scores, dtype=np.float64).copy()
    count = np.bincount(data.dt_img, minlength=data.num_images)
    images = np.flatnonzero(count > 1)  # a lone detection keeps its score
    if not len(images):
        return out
    width = int(count[images].max())
    chunk = max(1, _MAX_CELLS // width**2)
    for start in range(0, len(images), chunk):
        _soft_nms_images(data, images[start : start + chunk], width, out, sigmas)
    return out


def _soft_nms_images(
    data: CategoryData, images: np.ndarray, width: int, scores: np.ndarray, sigmas: np.ndarray
) -> None:
    """Soft-NMS of the detections of ``images`` (positions, each with 2+ detections), all images at
    once, one kept detection per image and step; writes ``scores`` (N,) in place."""
    rows = len(images)
    row_of = np.full(data.num_images, -1, dtype=np.int64)
    row_of[images] = np.arange(rows)
    dets = np.flatnonzero(row_of[data.dt_img] >= 0)
    row, slot = row_of[data.dt_img[dets]], data.dt_rank[dets]
    factors = _decay_factors(data, dets, row, rows, width, sigmas)  # (rows, width, width)
    score = np.full((rows, width), -np.inf)
    score[row, slot] = scores[dets]
    alive = np.zeros((rows, width), dtype=bool)
    alive[row, slot] = True
    position = np.tile(np.arange(width), (rows, 1))  # place in the list as last sorted
    r = np.arange(rows)
    for _ in range(width):
        left = alive.any(axis=1)
        order = np.lexsort((np.where(alive, position, width), np.where(alive, -score, np.inf)), axis=-1)
        position[r[:, None], order] = np.arange(width)[None, :]
        kept = order[:, 0]
        alive[r[left], kept[left]] = False
        decay = alive & left[:, None]
        score[decay] = score[decay] * factors[r, kept][decay]
    scores[dets] = score[row, slot]


def _decay_factors(
    data: CategoryData, dets: np.ndarray, row: np.ndarray, rows: int, width: int, sigmas: np.ndarray
) -> np.ndarray:
    """(rows, width, width) soft-NMS factors ``exp(-oks^2 / 0.5)`` between the detections ``dets``
    (row ``row`` each, column its rank in its image) of the same image, ``oks`` as coco-analyze's
    soft-NMS computes it: all K points, the mean of the two keypoint boxes' areas."""
    out = np.ones((rows, width, width))
    count = np.bincount(data.dt_img, minlength=data.num_images)
    later = count[data.dt_img[dets]] - data.dt_rank[dets] - 1  # detections after each one in its image
    starts = np.cumsum(later) - later
    # detections are sorted by image, so the ones after detection n in its image are n + 1, n + 2, ...
    first = np.repeat(dets, later)
    second = first + np.arange(len(first)) - np.repeat(starts, later) + 1
    pair_row = np.repeat(row, later)
    x, y = np.ascontiguousarray(data.dt_kpts[:, :, 0]), np.ascontiguousarray(data.dt_kpts[:, :, 1])
    box_area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    num_k = x.shape[1]
    for start in range(0, len(first), _PAIR_BLOCK):
        block = slice(start, start + _PAIR_BLOCK)
        i, j = first[block], second[block]
        dx, dy = x[j] - x[i], y[j] - y[i]
        e = (dx**2 + dy**2) / variances / ((0.5 * (box_area[i] + box_area[j]))[:, None] + _EPS) / 2
        oks = np.sum(np.exp(-e), axis=1) / num_k  # row sums over contiguous K: numpy's 1-D order
        factor = _scalar_decay(oks).astype(np.float64)
        out[pair_row[block], data.dt_rank[i], data.dt_rank[j]] = factor
        out[pair_row[block], data.dt_rank[j], data.dt_rank[i]] = factor
    return out


# coco-analyze computes the factor on numpy scalars, whose ``** 2`` is libm's pow (not x * x: the
# two differ by an ulp now and then); the same libm calls, value by value, keep its scores exact.
_scalar_decay = np.frompyfunc(lambda oks: math.exp(-(math.pow(oks, 2.0) / _SOFT_NMS_SIGMA)), 1, 1)
