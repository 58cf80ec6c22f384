"""Ground truth and detections for error analysis, as flat numpy arrays in COCOeval's order.

The analysis works on :class:`raypose.evaluation.fast.CategoryData` (one category: the person),
built here straight from the JSON without pycocotools' ``loadRes`` copies, in exactly the order
pycocotools' ``COCOeval`` uses: images by sorted id, ground truths by image then file order,
detections by image then score (stable, highest first), cut to ``MAX_DETS`` per image. Keypoints
are float64 ``(x, y, v)`` in original-image pixels (ground truth ``v`` in {0, 1, 2}; a detection's
third value is whatever the file holds, usually 1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from raypose.errors import InputError
from raypose.evaluation.fast import CategoryData
from raypose.evaluation.inputs import category_data, detections_from_list, ground_truth_from_dict
from raypose.evaluation.oks import oks_pairs
from raypose.io import load_json
from raypose.schema import KeypointSchema, schema_for

logger = logging.getLogger(__name__)

MAX_DETS = 20  # COCO keypoint evaluation keeps the 20 best detections per image
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # (pair_dt, pair_gt, oks), each (P,): fast.pair_oks


@dataclass
class AnalysisInput:
    """Everything the analysis needs, aligned with ``data``'s ground-truth and detection order."""

    schema: KeypointSchema
    image_ids: np.ndarray  # (I,) int64, sorted; data.gt_img / data.dt_img index into it
    file_names: list[str]  # (I,)
    widths: np.ndarray  # (I,) int
    heights: np.ndarray  # (I,) int
    data: CategoryData
    dt_keypoint_scores: np.ndarray | None  # (N, K) per-keypoint scores, or None when the file has none
    dt_file_index: np.ndarray  # (N,) position of each kept detection in the detections file
    gt_source: str = "<ground truth>"
    dt_source: str = "<detections>"
    gt_num_labelled: np.ndarray | None = None  # (G,) the file's num_keypoints; None: count of v > 0

    @property
    def sigmas(self) -> np.ndarray:
        return self.schema.sigmas

    @property
    def num_labelled(self) -> np.ndarray:
        """(G,) each ground truth's ``num_keypoints`` (coco-analyze skips people where it is 0)."""
        if self.gt_num_labelled is not None:
            return self.gt_num_labelled
        return np.count_nonzero(self.data.gt_kpts[:, :, 2] > 0, axis=1)


def load_analysis_input(gt_path: str | os.PathLike, dets_path: str | os.PathLike) -> AnalysisInput:
    """Load a COCO keypoint ground-truth file and a COCO keypoint results file.

    Raises:
        InputError: a file is missing, malformed, or the two do not fit together (keypoint
            counts, unknown image ids); the message names the file and the id.
    """
    gt = load_json(gt_path, what="ground-truth file")
    dets = load_json(dets_path, what="detections file")
    return analysis_input_from_dicts(gt, dets, str(Path(gt_path)), str(Path(dets_path)))


def analysis_input_from_dicts(
    gt: dict,
    dets: list[dict],
    gt_source: str = "<ground truth>",
    dt_source: str = "<detections>",
    max_dets: int = MAX_DETS,
) -> AnalysisInput:
    """:func:`load_analysis_input` on already-loaded JSON (a COCO dict and a results list).

    The inputs are checked by :mod:`raypose.evaluation.inputs`, the same checks as ``raypose eval``.
    """
    truth = ground_truth_from_dict(gt, gt_source)
    try:
        schema = schema_for(truth.num_keypoints)
    except ValueError as e:
        raise InputError(f"{gt_source}: {e}") from None
    found = detections_from_list(dets, truth, dt_source)
    data, kept = category_data(truth, found, max_det=max_dets)
    logger.info(
        "analysis input: %d images, %d ground-truth people, %d detections kept (max %d per image)",
        len(truth.image_ids),
        len(data.gt_ids),
        len(data.dt_ids),
        max_dets,
    )
    return AnalysisInput(
        schema=schema,
        image_ids=truth.image_ids,
        file_names=truth.file_names,
        widths=truth.widths,
        heights=truth.heights,
        data=data,
        dt_keypoint_scores=None if found.keypoint_scores is None else found.keypoint_scores[kept],
        dt_file_index=found.file_index[kept],
        gt_source=gt_source,
        dt_source=dt_source,
        gt_num_labelled=truth.num_labelled.copy(),  # category_data keeps every person, in this order
    )


def select_detections(data: CategoryData, keep: np.ndarray) -> CategoryData:
    """Keep the detections where ``keep`` (N,) is true, re-ranking them inside their images."""
    return _rerank(
        replace(
            data,
            dt_img=data.dt_img[keep],
            dt_rank=data.dt_rank[keep],
            dt_kpts=data.dt_kpts[keep],
            dt_areas=data.dt_areas[keep],
            dt_scores=data.dt_scores[keep],
            dt_ids=data.dt_ids[keep],
        )
    )


def _rerank(data: CategoryData) -> CategoryData:
    data.dt_rank = np.arange(len(data.dt_img)) - np.searchsorted(data.dt_img, data.dt_img, side="left")
    return data


def with_scores(data: CategoryData, scores: np.ndarray) -> tuple[CategoryData, np.ndarray]:
    """New scores (N,) for the detections, re-sorted by image then score as COCOeval sorts them.

    Returns:
        ``(data, order)``: the re-sorted data and the permutation applied (new[i] = old[order[i]]).
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((-scores, data.dt_img))
    moved = replace(
        data,
        dt_img=data.dt_img[order],
        dt_kpts=data.dt_kpts[order],
        dt_areas=data.dt_areas[order],
        dt_scores=scores[order],
        dt_ids=data.dt_ids[order],
    )
    return _rerank(moved), order


def update_pairs(pairs: Pairs, data: CategoryData, sigmas: np.ndarray, changed: np.ndarray) -> Pairs:
    """Every same-image pair's OKS after the keypoints of the ``changed`` (N,) detections moved.

    ``pairs`` are all same-image pairs of the same detections before the move, as
    :func:`raypose.evaluation.fast.pair_oks` lists them; only the changed rows are recomputed
    (OKS of one pair does not depend on the others, so the values are those of a full pass).
    """
    pair_dt, pair_gt, oks = pairs
    rows = np.flatnonzero(changed[pair_dt])
    if not len(rows):
        return pairs
    oks = oks.copy()
    d, g = pair_dt[rows], pair_gt[rows]
    oks[rows] = oks_pairs(data.dt_kpts[d], data.gt_kpts[g], data.gt_boxes[g], data.gt_areas[g], sigmas)
    return pair_dt, pair_gt, oks


def reorder_pairs(pairs: Pairs, order: np.ndarray) -> Pairs:
    """``pairs`` for detections permuted by ``order`` (new[i] = old[order[i]], :func:`with_scores`),
    in :func:`raypose.evaluation.fast.same_image_pairs`' order (by detection, then ground truth)."""
    pair_dt, pair_gt, oks = pairs
    new_index = np.empty(len(order), dtype=np.int64)
    new_index[order] = np.arange(len(order))
    new_dt = new_index[pair_dt]
    sort = np.lexsort((pair_gt, new_dt))
    return new_dt[sort], pair_gt[sort], oks[sort]


def select_pairs(pairs: Pairs, keep: np.ndarray) -> Pairs:
    """``pairs`` of the detections where ``keep`` (N,) is true, renumbered as :func:`select_detections` does."""
    pair_dt, pair_gt, oks = pairs
    new_index = np.cumsum(keep) - 1
    rows = keep[pair_dt]
    return new_index[pair_dt[rows]], pair_gt[rows], oks[rows]
