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
from typing import Any

import numpy as np

from raypose.data.annotations import keypoint_annotations_from_dict, person_category
from raypose.errors import InputError
from raypose.evaluation.fast import CategoryData
from raypose.io import load_json
from raypose.schema import KeypointSchema, schema_for

logger = logging.getLogger(__name__)

MAX_DETS = 20  # COCO keypoint evaluation keeps the 20 best detections per image


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

    @property
    def sigmas(self) -> np.ndarray:
        return self.schema.sigmas


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
    """:func:`load_analysis_input` on already-loaded JSON (a COCO dict and a results list)."""
    # Validation (ids, keypoint counts, visibility values) with messages that name file and id.
    parsed = keypoint_annotations_from_dict(gt, gt_source)
    try:
        schema = schema_for(parsed.num_keypoints)
    except ValueError as e:
        raise InputError(f"{gt_source}: {e}") from None
    category_id = person_category(gt.get("categories"), gt_source)["id"]
    order = np.argsort(parsed.image_ids, kind="stable")
    image_ids = parsed.image_ids[order]
    position = {int(i): n for n, i in enumerate(image_ids.tolist())}
    data = _category_data(
        gt, dets, position, category_id, schema.num_keypoints, gt_source, dt_source, max_dets
    )
    data, kp_scores, file_index = data
    logger.info(
        "analysis input: %d images, %d ground-truth people, %d detections kept (max %d per image)",
        len(image_ids),
        len(data.gt_ids),
        len(data.dt_ids),
        max_dets,
    )
    return AnalysisInput(
        schema=schema,
        image_ids=image_ids,
        file_names=[str(n) for n in parsed.file_names[order]],
        widths=parsed.widths[order].astype(np.int64),
        heights=parsed.heights[order].astype(np.int64),
        data=data,
        dt_keypoint_scores=kp_scores,
        dt_file_index=file_index,
        gt_source=gt_source,
        dt_source=dt_source,
    )


def _gt_arrays(gt: dict, position: dict[int, int], category_id: Any, num_kpts: int) -> dict[str, np.ndarray]:
    anns = [a for a in gt["annotations"] if a.get("category_id", category_id) == category_id]
    img = np.array([position[int(a["image_id"])] for a in anns], dtype=np.int64)
    order = np.argsort(img, kind="stable")  # by image, then file order (pycocotools' imgToAnns)
    anns = [anns[i] for i in order]
    kpts = np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), num_kpts, 3)
    boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    areas = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], dtype=np.float64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    labelled = np.count_nonzero(kpts[:, :, 2] > 0, axis=1)
    num_labelled = np.array([a.get("num_keypoints", n) for a, n in zip(anns, labelled)], dtype=np.int64)
    return {
        "gt_img": img[order],
        "gt_kpts": kpts,
        "gt_boxes": boxes,
        "gt_areas": areas,
        "gt_crowd": crowd,
        "gt_ignore": crowd | (num_labelled == 0),
        "gt_crowd_ignore": crowd,
        "gt_ids": np.array([a["id"] for a in anns], dtype=np.float64),
    }


def _check_detection(det: Any, n: int, num_kpts: int, position: dict, dt_source: str) -> None:
    if not isinstance(det, dict):
        raise InputError(f"{dt_source}: detection #{n} is not an object")
    for key in ("image_id", "keypoints", "score"):
        if key not in det:
            raise InputError(f"{dt_source}: detection #{n} (image {det.get('image_id')}) has no {key!r}")
    if int(det["image_id"]) not in position:
        raise InputError(
            f"{dt_source}: detection #{n}: image_id {det['image_id']} is not in the ground-truth file; "
            "detections and ground truth must come from the same image set"
        )
    if len(det["keypoints"]) != 3 * num_kpts:
        raise InputError(
            f"{dt_source}: detection #{n} (image {det['image_id']}): {len(det['keypoints'])} keypoint values, "
            f"expected {3 * num_kpts} ({num_kpts} points x 3) to match the ground truth"
        )
    scores = det.get("keypoint_scores")
    if scores is not None and len(scores) != num_kpts:
        raise InputError(
            f"{dt_source}: detection #{n} (image {det['image_id']}): {len(scores)} keypoint_scores, "
            f"expected {num_kpts}"
        )


def _category_data(gt, dets, position, category_id, num_kpts, gt_source, dt_source, max_dets):
    if not isinstance(dets, list):
        raise InputError(f"{dt_source}: a COCO results file is a JSON list of detections")
    for n, det in enumerate(dets):
        _check_detection(det, n, num_kpts, position, dt_source)
    keep_cat = [n for n, d in enumerate(dets) if d.get("category_id", category_id) == category_id]
    dt_img = np.array([position[int(dets[n]["image_id"])] for n in keep_cat], dtype=np.int64)
    scores = np.array([dets[n]["score"] for n in keep_cat], dtype=np.float64)
    order = np.lexsort((-scores, dt_img))  # stable: ties keep file order, like mergesort
    dt_img, scores = dt_img[order], scores[order]
    rank = np.arange(len(dt_img)) - np.searchsorted(dt_img, dt_img, side="left")
    keep = rank < max_dets
    file_index = np.asarray(keep_cat, dtype=np.int64)[order][keep]
    kept = [dets[i] for i in file_index]
    kpts = np.asarray([d["keypoints"] for d in kept], dtype=np.float64).reshape(len(kept), num_kpts, 3)
    if not np.isfinite(kpts).all() or not np.isfinite(scores).all():
        raise InputError(f"{dt_source}: non-finite keypoint or score values")
    has_kp_scores = bool(kept) and all("keypoint_scores" in d for d in kept)
    kp_scores = np.asarray([d["keypoint_scores"] for d in kept], dtype=np.float64) if has_kp_scores else None
    data = CategoryData(
        num_images=len(position),
        **_gt_arrays(gt, position, category_id, num_kpts),
        dt_img=dt_img[keep],
        dt_rank=rank[keep],
        dt_kpts=kpts,
        dt_areas=_keypoint_extent_area(kpts),
        dt_scores=scores[keep],
        dt_ids=(file_index + 1).astype(np.float64),  # loadRes numbers results 1.. in file order
    )
    return data, kp_scores, file_index


def _keypoint_extent_area(kpts: np.ndarray) -> np.ndarray:
    """Area of the keypoints' bounding box, as pycocotools' ``loadRes`` gives keypoint results."""
    if len(kpts) == 0:
        return np.zeros(0, dtype=np.float64)
    x, y = kpts[:, :, 0], kpts[:, :, 1]
    return (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))


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
