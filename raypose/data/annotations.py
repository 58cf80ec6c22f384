"""COCO keypoint annotation files parsed into numpy arrays.

A COCO keypoint file is a list of per-person dicts. Keeping ~260k such dicts alive in every
DataLoader worker costs gigabytes (and copy-on-write turns into copy-on-read because Python
touches reference counts), so :func:`load_keypoint_annotations` turns the file into a handful of
flat numpy arrays once and drops the dicts.

Coordinates: ``boxes_xywh`` is COCO's ``[x, y, w, h]`` and ``keypoints`` is ``(x, y, v)`` in
original-image pixels, ``v`` in {0, 1, 2}.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raypose.errors import InputError
from raypose.io import load_json

logger = logging.getLogger(__name__)

VALID_VISIBILITY = (0, 1, 2)


@dataclass
class KeypointAnnotations:
    """All people of one COCO keypoint file as numpy arrays (no per-person dicts)."""

    source: str  # file path (for error messages)
    num_keypoints: int
    image_ids: np.ndarray  # (I,) int64
    file_names: np.ndarray  # (I,) str (numpy unicode array)
    widths: np.ndarray  # (I,) int32
    heights: np.ndarray  # (I,) int32
    ann_ids: np.ndarray  # (P,) int64, persons sorted by image
    boxes_xywh: np.ndarray  # (P, 4) float32, COCO bbox
    keypoints: np.ndarray  # (P, K, 3) float32 (x, y, v)
    areas: np.ndarray  # (P,) float32
    iscrowd: np.ndarray  # (P,) bool
    image_offsets: np.ndarray  # (I+1,) int64: persons of image i are [offsets[i], offsets[i+1])

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_people(self) -> int:
        return len(self.ann_ids)

    def people_of(self, image_index: int) -> slice:
        """Slice into the per-person arrays for the image at ``image_index`` (not its id)."""
        return slice(int(self.image_offsets[image_index]), int(self.image_offsets[image_index + 1]))

    def index_of_image_id(self, image_id: int) -> int:
        """Position of the image with COCO id ``image_id``.

        Raises:
            InputError: no image has that id.
        """
        index = self._id_index().get(int(image_id))
        if index is None:
            raise InputError(f"{self.source}: no image with id {image_id}")
        return index

    def labelled_counts(self) -> np.ndarray:
        """Number of labelled keypoints (v > 0) per person, shape (P,) int64."""
        return (self.keypoints[:, :, 2] > 0).sum(axis=1)

    def _id_index(self) -> dict[int, int]:
        # Built lazily: only callers that look ids up pay for the dict.
        cache = self.__dict__.get("_id_cache")
        if cache is None:
            cache = {int(image_id): i for i, image_id in enumerate(self.image_ids.tolist())}
            self.__dict__["_id_cache"] = cache
        return cache

    def nbytes(self) -> int:
        """Bytes held by the arrays (what every DataLoader worker shares)."""
        arrays = (
            self.image_ids,
            self.file_names,
            self.widths,
            self.heights,
            self.ann_ids,
            self.boxes_xywh,
            self.keypoints,
            self.areas,
            self.iscrowd,
            self.image_offsets,
        )
        return int(sum(a.nbytes for a in arrays))


def person_category(categories: Any, source: str) -> dict:
    """The person category (the one with ``keypoints``) of a COCO ``categories`` field.

    CMU's foot files store ``categories`` as one dict instead of a list; both are accepted.

    Raises:
        InputError: no category has a ``keypoints`` list.
    """
    if isinstance(categories, dict):
        categories = [categories]
    if not isinstance(categories, list):
        raise InputError(f"{source}: 'categories' must be a list of dicts or one dict")
    for category in categories:
        if isinstance(category, dict) and isinstance(category.get("keypoints"), list):
            if "id" not in category:
                raise InputError(f"{source}: the keypoint category has no 'id'")
            return category
    raise InputError(
        f"{source}: no category with a 'keypoints' list; this is not a COCO keypoint annotation file"
    )


def require_list(data: dict, key: str, source: str) -> list:
    """``data[key]`` if it is a list, else an InputError naming the file and key."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: the top level must be a JSON object with 'images' and 'annotations'")
    value = data.get(key)
    if not isinstance(value, list):
        raise InputError(f"{source}: missing or non-list '{key}' field")
    return value


def _parse_images(images: list, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids, names, widths, heights = [], [], [], []
    for n, image in enumerate(images):
        try:
            ids.append(int(image["id"]))
            names.append(str(image["file_name"]))
            widths.append(int(image["width"]))
            heights.append(int(image["height"]))
        except (KeyError, TypeError, ValueError) as e:
            image_id = image.get("id", f"#{n}") if isinstance(image, dict) else f"#{n}"
            raise InputError(
                f"{source}: image {image_id}: needs integer 'id', 'width', 'height' and a 'file_name' ({e!r})"
            ) from None
    image_ids = np.asarray(ids, dtype=np.int64)
    if len(np.unique(image_ids)) != len(image_ids):
        values, counts = np.unique(image_ids, return_counts=True)
        raise InputError(f"{source}: duplicate image ids {values[counts > 1][:10].tolist()}")
    return (
        image_ids,
        np.asarray(names, dtype=str),
        np.asarray(widths, dtype=np.int32),
        np.asarray(heights, dtype=np.int32),
    )


def _parse_person(ann: dict, num_keypoints: int, source: str) -> tuple[list, list, float, bool]:
    ann_id = ann.get("id")
    keypoints = ann.get("keypoints")
    if not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints:
        got = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
        raise InputError(
            f"{source}: annotation {ann_id} (image {ann.get('image_id')}): expected {3 * num_keypoints} "
            f"keypoint values ({num_keypoints} points x 3), got {got}"
        )
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise InputError(
            f"{source}: annotation {ann_id} (image {ann.get('image_id')}): 'bbox' must be [x, y, w, h]"
        )
    area = ann.get("area")
    if area is None:  # COCO always has it; hand-made files may not
        area = float(bbox[2]) * float(bbox[3]) if _all_numbers(bbox) else 0.0
    return keypoints, bbox, area, bool(ann.get("iscrowd", 0))


def _all_numbers(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def keypoint_annotations_from_dict(
    data: dict, source: str = "<annotations>", expected_num_keypoints: int | None = None
) -> KeypointAnnotations:
    """Parse an already-loaded COCO keypoint dict; see :func:`load_keypoint_annotations`."""
    category = person_category(data.get("categories") if isinstance(data, dict) else None, source)
    num_keypoints = len(category["keypoints"])
    if expected_num_keypoints is not None and num_keypoints != expected_num_keypoints:
        raise InputError(
            f"{source}: the person category has {num_keypoints} keypoints, expected {expected_num_keypoints}"
            + (" (run `raypose data merge-foot` to add the 6 foot points)" if num_keypoints == 17 else "")
        )
    image_ids, file_names, widths, heights = _parse_images(require_list(data, "images", source), source)
    known_categories = _category_ids(data.get("categories"))
    image_index = {int(i): n for n, i in enumerate(image_ids.tolist())}

    rows, ann_ids, kps, boxes, areas, crowd = [], [], [], [], [], []
    for n, ann in enumerate(require_list(data, "annotations", source)):
        if not isinstance(ann, dict) or ann.get("id") is None:
            raise InputError(f"{source}: annotation #{n} (by position) is not an object with an 'id'")
        category_id = ann.get("category_id", category["id"])
        if category_id != category["id"]:
            if category_id in known_categories:
                continue  # another category (no keypoints): not a person
            raise InputError(
                f"{source}: annotation {ann['id']} (image {ann.get('image_id')}): unknown category_id "
                f"{category_id!r}; the file defines {sorted(known_categories)}"
            )
        row = image_index.get(ann.get("image_id"))
        if row is None:
            raise InputError(
                f"{source}: annotation {ann['id']}: image_id {ann.get('image_id')!r} is not in 'images'"
            )
        keypoints, bbox, area, is_crowd = _parse_person(ann, num_keypoints, source)
        rows.append(row)
        ann_ids.append(ann["id"])
        kps.append(keypoints)
        boxes.append(bbox)
        areas.append(area)
        crowd.append(is_crowd)
    return _assemble(
        source,
        num_keypoints,
        (image_ids, file_names, widths, heights),
        rows,
        ann_ids,
        kps,
        boxes,
        areas,
        crowd,
    )


def _category_ids(categories: Any) -> set:
    if isinstance(categories, dict):
        categories = [categories]
    return {c.get("id") for c in categories or [] if isinstance(c, dict)}


def _to_array(values: list, dtype: type, shape: tuple, source: str, what: str, ann_ids: list) -> np.ndarray:
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except (TypeError, ValueError):
        for ann_id, value in zip(ann_ids, values):
            try:
                np.asarray(value, dtype=dtype)
            except (TypeError, ValueError):
                raise InputError(f"{source}: annotation {ann_id}: non-numeric {what}: {value!r}") from None
        raise InputError(f"{source}: malformed {what}") from None


def _assemble(source, num_keypoints, images, rows, ann_ids, kps, boxes, areas, crowd) -> KeypointAnnotations:
    image_ids, file_names, widths, heights = images
    count = len(rows)
    keypoints = _to_array(kps, np.float32, (count, num_keypoints, 3), source, "keypoints", ann_ids)
    boxes_xywh = _to_array(boxes, np.float32, (count, 4), source, "bbox", ann_ids)
    areas_arr = _to_array(areas, np.float32, (count,), source, "area", ann_ids)
    ann_ids_arr = np.asarray(ann_ids, dtype=np.int64).reshape(count)
    _check_values(source, ann_ids_arr, keypoints, boxes_xywh)
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    counts = np.bincount(np.asarray(rows, dtype=np.int64), minlength=len(image_ids))
    offsets = np.zeros(len(image_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return KeypointAnnotations(
        source=source,
        num_keypoints=num_keypoints,
        image_ids=image_ids,
        file_names=file_names,
        widths=widths,
        heights=heights,
        ann_ids=ann_ids_arr[order],
        boxes_xywh=boxes_xywh[order],
        keypoints=keypoints[order],
        areas=areas_arr[order],
        iscrowd=np.asarray(crowd, dtype=bool).reshape(count)[order],
        image_offsets=offsets,
    )


def _check_values(source: str, ann_ids: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray) -> None:
    if len(np.unique(ann_ids)) != len(ann_ids):
        values, counts = np.unique(ann_ids, return_counts=True)
        raise InputError(f"{source}: duplicate annotation ids {values[counts > 1][:10].tolist()}")
    bad = ~np.isin(keypoints[:, :, 2], VALID_VISIBILITY).all(axis=1)
    bad |= ~np.isfinite(keypoints).all(axis=(1, 2)) | ~np.isfinite(boxes).all(axis=1)
    bad |= (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if bad.any():
        ids = ann_ids[bad][:10].tolist()
        raise InputError(
            f"{source}: annotations {ids} have a visibility outside {{0, 1, 2}}, a non-finite value or a "
            "negative box size; run `raypose data check` on the file for details"
        )


def load_keypoint_annotations(
    path: str | os.PathLike, expected_num_keypoints: int | None = None
) -> KeypointAnnotations:
    """Load a COCO keypoint annotation file into :class:`KeypointAnnotations`.

    Only the person category (the one with ``keypoints``) is kept; images without people stay
    (with an empty slice). ``categories`` may be a list or a single dict.

    Raises:
        InputError: missing or malformed file, wrong keypoint count, unknown category or image id,
            duplicate ids, bad visibility values; the message names the file and the id.
    """
    path = Path(path)
    data = load_json(path, what="annotation file")
    annotations = keypoint_annotations_from_dict(data, str(path), expected_num_keypoints)
    del data
    logger.info(
        "%s: %d images, %d people, %d keypoints",
        path,
        annotations.num_images,
        annotations.num_people,
        annotations.num_keypoints,
    )
    return annotations
