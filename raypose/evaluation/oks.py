"""Object Keypoint Similarity (OKS), vectorised, with exactly pycocotools' ``computeOks`` semantics.

Conventions: keypoints are ``(x, y, v)`` in original-image pixels, ``v`` in {0, 1, 2}; boxes are
COCO ``[x, y, w, h]``; ``sigmas`` are pycocotools' (annotator std / 10, see
:mod:`raypose.schema`); ``area`` is the ground-truth segment area in pixels^2.

For a detection ``d`` and ground truth ``g`` with labelled keypoints ``L = {k : v_k > 0}``::

    e_k   = ((x_dk - x_gk)^2 + (y_dk - y_gk)^2) / (2 sigma_k)^2 / (area_g + eps) / 2
    OKS   = mean over k in L of exp(-e_k)

When ``g`` has no labelled keypoint (crowd regions, people with ``num_keypoints == 0``) the distance
is measured to the ground-truth box enlarged by its own size on every side (``[x - w, x + 2w]``),
and the mean runs over all K keypoints, as pycocotools does. The floating-point operations are
done in the same order as pycocotools' loop (including its summation order), so the values are
bit-identical; :mod:`raypose.evaluation.fast` relies on that for identical mAP.
"""

from __future__ import annotations

import numpy as np

_EPS = np.spacing(1)


def _variances(sigmas: np.ndarray) -> np.ndarray:
    return (np.asarray(sigmas, dtype=np.float64) * 2) ** 2


def keypoint_similarity(
    dt_xy: np.ndarray, gt_xy: np.ndarray, gt_area: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """Per-keypoint similarity ``ks = exp(-d^2 / (2 sigma)^2 / (area + eps) / 2)``.

    Args:
        dt_xy: (D, K, 2) detected keypoint positions, pixels.
        gt_xy: (G, K, 2) ground-truth keypoint positions, pixels.
        gt_area: (G,) ground-truth areas, pixels^2.
        sigmas: (K,) pycocotools sigmas.

    Returns:
        (D, G, K) ks values in [0, 1]; visibility is not applied (callers mask with ``v > 0``).
    """
    dt_xy = np.asarray(dt_xy, dtype=np.float64)
    gt_xy = np.asarray(gt_xy, dtype=np.float64)
    dx = dt_xy[:, None, :, 0] - gt_xy[None, :, :, 0]
    dy = dt_xy[:, None, :, 1] - gt_xy[None, :, :, 1]
    area = np.asarray(gt_area, dtype=np.float64)[None, :, None]
    e = (dx**2 + dy**2) / _variances(sigmas) / (area + _EPS) / 2
    return np.exp(-e)


def oks_pairs(
    dt_kpts: np.ndarray,
    gt_kpts: np.ndarray,
    gt_boxes_xywh: np.ndarray,
    gt_areas: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """OKS of P (detection, ground truth) pairs, row ``p`` pairing ``dt_kpts[p]`` with ``gt_kpts[p]``.

    Args:
        dt_kpts: (P, K, 3) detected keypoints (only x, y are used).
        gt_kpts: (P, K, 3) ground-truth keypoints ``(x, y, v)``.
        gt_boxes_xywh: (P, 4) ground-truth boxes ``[x, y, w, h]``.
        gt_areas: (P,) ground-truth areas.
        sigmas: (K,) pycocotools sigmas.

    Returns:
        (P,) float64 OKS, bit-identical to pycocotools' ``computeOks`` for the same pair.
    """
    dt_kpts = np.asarray(dt_kpts, dtype=np.float64)
    gt_kpts = np.asarray(gt_kpts, dtype=np.float64)
    boxes = np.asarray(gt_boxes_xywh, dtype=np.float64).reshape(-1, 4)
    areas = np.asarray(gt_areas, dtype=np.float64).reshape(-1)
    num_pairs, num_kpts = dt_kpts.shape[:2]
    if dt_kpts.shape[1:] != (num_kpts, 3) or gt_kpts.shape != dt_kpts.shape:
        raise ValueError(f"keypoint arrays must both be (P, K, 3); got {dt_kpts.shape} and {gt_kpts.shape}")
    if len(sigmas) != num_kpts:
        raise ValueError(f"{len(sigmas)} sigmas for {num_kpts} keypoints")
    out = np.zeros(num_pairs, dtype=np.float64)
    if num_pairs == 0:
        return out
    xd, yd = dt_kpts[..., 0], dt_kpts[..., 1]
    visible = gt_kpts[..., 2] > 0
    num_visible = np.count_nonzero(visible, axis=1)
    labelled = num_visible > 0

    dx = xd - gt_kpts[..., 0]
    dy = yd - gt_kpts[..., 1]
    # No labelled keypoint: distance to the box enlarged by its size (pycocotools' "ignore region").
    nl = ~labelled
    if nl.any():
        bx, by, bw, bh = (boxes[nl, i][:, None] for i in range(4))
        x0, x1 = bx - bw, bx + bw * 2
        y0, y1 = by - bh, by + bh * 2
        xdn, ydn = xd[nl], yd[nl]
        dx[nl] = np.maximum(0.0, x0 - xdn) + np.maximum(0.0, xdn - x1)
        dy[nl] = np.maximum(0.0, y0 - ydn) + np.maximum(0.0, ydn - y1)
    e = (dx**2 + dy**2) / _variances(sigmas) / (areas + _EPS)[:, None] / 2

    if nl.any():
        out[nl] = np.sum(np.exp(-e[nl]), axis=1) / num_kpts
    # pycocotools sums exp(-e) over the compacted visible entries; gather them into contiguous
    # (rows, n) blocks per visible count n so numpy sums them in the very same order.
    for n in np.unique(num_visible[labelled]):
        rows = np.flatnonzero(num_visible == n)
        cols = np.nonzero(visible[rows])[1].reshape(len(rows), n)
        compact = e[rows[:, None], cols]
        out[rows] = np.sum(np.exp(-compact), axis=1) / n
    return out


def oks_matrix(
    dt_kpts: np.ndarray,
    gt_kpts: np.ndarray,
    gt_boxes_xywh: np.ndarray,
    gt_areas: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """OKS between every detection and every ground truth of one image.

    Args:
        dt_kpts: (D, K, 3) detected keypoints ``(x, y, score-or-v)``; only x, y are used.
        gt_kpts: (G, K, 3) ground-truth keypoints ``(x, y, v)``; ``v > 0`` means labelled.
        gt_boxes_xywh: (G, 4) ground-truth boxes ``[x, y, w, h]`` (used when nothing is labelled).
        gt_areas: (G,) ground-truth areas, pixels^2.
        sigmas: (K,) pycocotools sigmas.

    Returns:
        (D, G) float64 OKS, identical to pycocotools' ``computeOks`` (which additionally sorts
        and truncates the detections; this function keeps the given order).
    """
    dt = np.asarray(dt_kpts, dtype=np.float64)
    gt = np.asarray(gt_kpts, dtype=np.float64)
    num_dt, num_gt = len(dt), len(gt)
    if num_dt == 0 or num_gt == 0:
        return np.zeros((num_dt, num_gt), dtype=np.float64)
    dt_idx = np.repeat(np.arange(num_dt), num_gt)
    gt_idx = np.tile(np.arange(num_gt), num_dt)
    boxes = np.asarray(gt_boxes_xywh, dtype=np.float64).reshape(-1, 4)
    areas = np.asarray(gt_areas, dtype=np.float64).reshape(-1)
    values = oks_pairs(dt[dt_idx], gt[gt_idx], boxes[gt_idx], areas[gt_idx], sigmas)
    return values.reshape(num_dt, num_gt)


def keypoint_similarity_pairs(
    dt_xy: np.ndarray, gt_xy: np.ndarray, gt_area: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """Per-keypoint similarity of P matched pairs (row ``p`` pairs ``dt_xy[p]`` with ``gt_xy[p]``).

    Args:
        dt_xy: (P, K, 2) detected positions, pixels; gt_xy: (P, K, 2); gt_area: (P,) pixels^2.

    Returns:
        (P, K) ks values, same formula as :func:`keypoint_similarity`.
    """
    dt_xy = np.asarray(dt_xy, dtype=np.float64)
    gt_xy = np.asarray(gt_xy, dtype=np.float64)
    dx = dt_xy[..., 0] - gt_xy[..., 0]
    dy = dt_xy[..., 1] - gt_xy[..., 1]
    area = np.asarray(gt_area, dtype=np.float64).reshape(-1, 1)
    return np.exp(-((dx**2 + dy**2) / _variances(sigmas) / (area + _EPS) / 2))
