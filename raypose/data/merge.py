"""Join CMU foot annotations onto COCO person annotations (17 + 6 = 23 keypoints).

CMU's foot data set re-annotates a subset of COCO people, keyed by the COCO annotation id.
The real files are inconsistent, and each quirk is handled here:

* the train file carries 23 points per annotation (body + foot), the val file only the 6 foot
  points: the foot points are always the last 6;
* ``categories`` may be one dict instead of a list;
* ``num_keypoints`` may be stale: it is recomputed from the merged visibilities.

Every merged point must be three finite numbers ``(x, y, v)`` with ``v`` in {0, 1, 2}: a NaN
would be written as the non-standard JSON token ``NaN``, and a ``v`` of 7 would count as labelled.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass, field

from raypose.data.annotations import (
    INT64_MAX,
    INT64_MIN,
    person_category,
    require_list,
    validate_keypoint_file,
)
from raypose.errors import InputError
from raypose.io import atomic_path, check_output_file, load_json
from raypose.schema import COCO17, COCO23, FOOT_NAMES

logger = logging.getLogger(__name__)

NUM_FOOT = len(FOOT_NAMES)
NUM_BODY = COCO17.num_keypoints
MAX_IDS_IN_MESSAGE = 10


@dataclass
class MergeReport:
    """Counts of one merge: people in both files, only in COCO, only in the foot file."""

    matched: int
    coco_only: int
    foot_only: int
    images: int
    unmatched_foot_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.matched} people matched, {self.coco_only} COCO-only (foot points set to 0), "
            f"{self.foot_only} foot-only (dropped), {self.images} images"
        )


def _foot_points(ann: dict, foot_name: str) -> list:
    keypoints = ann.get("keypoints")
    if not isinstance(keypoints, list) or len(keypoints) not in (3 * NUM_FOOT, 3 * (NUM_BODY + NUM_FOOT)):
        got = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
        raise InputError(
            f"{foot_name}: annotation {ann.get('id')} (image {ann.get('image_id')}): expected "
            f"{3 * NUM_FOOT} (6 foot points) or {3 * (NUM_BODY + NUM_FOOT)} (23 points) keypoint values, got {got}"
        )
    where = f"{foot_name}: annotation {ann.get('id')} (image {ann.get('image_id')})"
    _check_points(keypoints, FOOT_NAMES, where, first=len(keypoints) - 3 * NUM_FOOT)
    return keypoints[-3 * NUM_FOOT :]


def _index_by_id(annotations: list, name: str) -> dict[int, dict]:
    by_id: dict[int, dict] = {}
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict) or ann.get("id") is None:
            raise InputError(f"{name}: annotation #{n} (by position) is not an object with an 'id'")
        for key in ("id", "image_id"):
            value = ann.get(key)
            if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
                raise InputError(
                    f"{name}: annotation #{n} (by position): '{key}' must be an integer fitting int64, got {value!r:.40}"
                )
        if ann["id"] in by_id:
            raise InputError(f"{name}: duplicate annotation id {ann['id']}")
        by_id[ann["id"]] = ann
    return by_id


def _check_points(keypoints: list, names: tuple[str, ...], where: str, first: int = 0) -> None:
    """Every point ``names[k]`` at ``keypoints[first + 3k : first + 3k + 3]`` is (x, y, v): finite
    numbers, ``v`` in {0, 1, 2}.

    Raises:
        InputError: naming ``where`` (file and annotation id), the keypoint and the bad value.
    """
    for k, name in enumerate(names):
        i = first + 3 * k
        x, y, v = keypoints[i : i + 3]
        for offset, (field_name, value) in enumerate((("x", x), ("y", y), ("visibility", v))):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(
                    f"{where}: keypoints[{i + offset}] ({name} {field_name}) is "
                    f"{value!r}; every value must be a finite number (unlabelled points are 0, 0, 0)"
                )
        if v not in (0, 1, 2):
            raise InputError(
                f"{where}: keypoints[{i + 2}] ({name} visibility) is {v!r}; COCO visibility is "
                "0 (unlabelled), 1 (labelled, hidden) or 2 (labelled, visible)"
            )


def _count_labelled(keypoints: list) -> int:
    return sum(1 for v in keypoints[2::3] if v > 0)


def merge_foot(
    coco: dict, foot: dict, allow_unmatched: bool = False, coco_name: str = "", foot_name: str = ""
) -> tuple[dict, MergeReport]:
    """Append the 6 CMU foot points to each COCO person with the same annotation id.

    COCO people without a foot annotation get ``0, 0, 0`` for the 6 points. The result keeps the
    COCO file's images and people and has a single 23-keypoint person category.

    Raises:
        InputError: malformed input, a COCO person without 17 points, a point that is not three
            finite numbers with visibility 0, 1 or 2, a foot annotation whose
            image id differs from its COCO match, or foot ids without a COCO match (unless
            ``allow_unmatched``); the message names the file and the ids.
    """
    coco_name = coco_name or "<coco>"
    foot_name = foot_name or "<foot>"
    category = person_category(coco.get("categories") if isinstance(coco, dict) else None, coco_name)
    if len(category["keypoints"]) != NUM_BODY:
        raise InputError(
            f"{coco_name}: the person category has {len(category['keypoints'])} keypoints; "
            f"merge-foot expects the {NUM_BODY} COCO body points"
        )
    validate_keypoint_file(coco, coco_name)
    if not isinstance(foot, dict):
        raise InputError(
            f"{foot_name}: the top level must be a JSON object with 'annotations' and 'categories'"
        )
    person_category(foot.get("categories"), foot_name)
    coco_anns = require_list(coco, "annotations", coco_name)
    foot_by_id = _index_by_id(require_list(foot, "annotations", foot_name), foot_name)
    coco_ids = set(_index_by_id(coco_anns, coco_name))
    unmatched = sorted(i for i in foot_by_id if i not in coco_ids)
    if unmatched and not allow_unmatched:
        raise InputError(
            f"{foot_name}: {len(unmatched)} foot annotation ids have no COCO person in {coco_name}: "
            f"{unmatched[:MAX_IDS_IN_MESSAGE]}{' ...' if len(unmatched) > MAX_IDS_IN_MESSAGE else ''} "
            "(pass --allow-unmatched to drop them)"
        )
    merged_anns, matched = [], 0
    for ann in coco_anns:
        merged_anns.append(_merge_one(ann, foot_by_id.get(ann["id"]), coco_name, foot_name))
        matched += ann["id"] in foot_by_id
    out = {key: value for key, value in coco.items() if key not in ("annotations", "categories")}
    out["categories"] = [COCO23.coco_category(category["id"])]
    out["annotations"] = merged_anns
    report = MergeReport(
        matched=matched,
        coco_only=len(coco_anns) - matched,
        foot_only=len(unmatched),
        images=len(require_list(coco, "images", coco_name)),
        unmatched_foot_ids=unmatched,
    )
    return out, report


def _merge_one(ann: dict, foot_ann: dict | None, coco_name: str, foot_name: str) -> dict:
    keypoints = ann.get("keypoints")
    if not isinstance(keypoints, list) or len(keypoints) != 3 * NUM_BODY:
        got = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
        raise InputError(
            f"{coco_name}: annotation {ann['id']} (image {ann.get('image_id')}): expected "
            f"{3 * NUM_BODY} keypoint values, got {got}"
        )
    _check_points(
        keypoints, COCO17.names, f"{coco_name}: annotation {ann['id']} (image {ann.get('image_id')})"
    )
    if foot_ann is None:
        foot_points = [0] * (3 * NUM_FOOT)
    else:
        if foot_ann.get("image_id") != ann.get("image_id"):
            raise InputError(
                f"{foot_name}: annotation {ann['id']} is on image {foot_ann.get('image_id')} but the "
                f"COCO annotation with that id in {coco_name} is on image {ann.get('image_id')}"
            )
        foot_points = _foot_points(foot_ann, foot_name)
    merged = copy.copy(ann)  # shallow: only keypoints and num_keypoints are replaced
    merged["keypoints"] = list(keypoints) + list(foot_points)
    merged["num_keypoints"] = _count_labelled(merged["keypoints"])
    return merged


def merge_foot_files(
    coco_path: str | os.PathLike,
    foot_path: str | os.PathLike,
    out_path: str | os.PathLike,
    allow_unmatched: bool = False,
) -> MergeReport:
    """Merge two annotation files (see :func:`merge_foot`) and write the result atomically.

    Raises:
        ConfigError: ``out_path`` is a folder, or is one of the inputs (which stay untouched).
        InputError: as :func:`merge_foot`.
    """
    check_output_file(out_path, inputs=(coco_path, foot_path))
    coco = load_json(coco_path, what="COCO annotation file")
    foot = load_json(foot_path, what="foot annotation file")
    merged, report = merge_foot(coco, foot, allow_unmatched, str(coco_path), str(foot_path))
    if report.foot_only:
        logger.warning("%s: dropped %d foot annotations without a COCO person", foot_path, report.foot_only)
    with atomic_path(out_path) as tmp, open(tmp, "w") as f:
        json.dump(merged, f, allow_nan=False)  # NaN / Infinity are not JSON: never write them
    logger.info("wrote %s: %s", out_path, report.summary())
    return report
