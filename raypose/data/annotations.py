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
import math
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


PERSON = "person"  # COCO's name for the category with keypoints
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_IMAGE_SIDE = 100_000  # pixels: far above any photograph, far below what overflows int32 / float32 maths
MAX_COORDINATE = 10 * MAX_IMAGE_SIDE  # a keypoint further out than this is on no image


def person_category(categories: Any, source: str) -> dict:
    """The person category of a COCO ``categories`` field: the one with ``keypoints``.

    When several categories have keypoints, the one named ``"person"`` is taken; one keypoint
    category of another name is taken as the person (and logged). CMU's foot files store
    ``categories`` as one dict instead of a list; both are accepted.

    Raises:
        InputError: no category has a ``keypoints`` list, several have and none (or more than
            one) is named ``"person"``, or the chosen one has no integer ``id`` or names that
            are not strings.
    """
    if isinstance(categories, dict):
        categories = [categories]
    if not isinstance(categories, list):
        raise InputError(f"{source}: 'categories' must be a list of dicts or one dict")
    with_points = [c for c in categories if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    if not with_points:
        raise InputError(
            f"{source}: no category with a 'keypoints' list; this is not a COCO keypoint annotation file"
        )
    named = [c for c in with_points if c.get("name") == PERSON]
    if len(named) == 1:
        category = named[0]
    elif len(with_points) == 1:
        category = with_points[0]
        logger.info("%s: reading category %r (id %r) as the person category", source, category.get("name"),
                    category.get("id"))  # fmt: skip
    else:
        listed = ", ".join(f"{c.get('name')!r} (id {c.get('id')!r})" for c in with_points)
        raise InputError(
            f"{source}: {len(with_points)} categories have keypoints ({listed}) and {len(named) or 'none'} of "
            f"them named {PERSON!r}; raypose reads one person category: name the one to read {PERSON!r} "
            "or drop the others"
        )
    if not _is_id(category.get("id")):
        raise InputError(
            f"{source}: the keypoint category {category.get('name')!r} needs an integer 'id', "
            f"got {_short(category.get('id'))}"
        )
    if not category["keypoints"] or not all(isinstance(n, str) for n in category["keypoints"]):
        raise InputError(f"{source}: the keypoint category's 'keypoints' must be a non-empty list of names")
    return category


@dataclass(frozen=True)
class FileProblem:
    """One problem of a COCO keypoint file that every reader refuses.

    ``message`` names the item and field (``"annotation 7 (image 3): 'iscrowd' must be 0 or 1 ..."``),
    not the file; ``kind`` is the short name ``raypose data check`` counts.
    """

    kind: str
    message: str
    image_id: Any = None
    ann_id: Any = None


def validate_keypoint_file(data: Any, source: str, point_counts: tuple[int, ...] | None = None) -> dict:
    """Check a loaded COCO keypoint file as every raypose reader needs it; return the person category.

    The one check for annotation files: the training loader, ``raypose data check / stats / show``,
    ``merge-foot``, ``predict --ann``, ``eval`` and ``analyze`` all call it, so they refuse the same
    files with the same messages. See :func:`keypoint_file_problems` for what is checked.

    Raises:
        InputError: ``"{source}: {first problem}"``, with a count of the others.
    """
    category, problems = keypoint_file_problems(data, source, point_counts)
    if problems:
        more = len(problems) - 1
        raise InputError(
            f"{source}: {problems[0].message}"
            + (f" ({more} more problem(s): `raypose data check {source}` lists them all)" if more else "")
        )
    return category


def keypoint_file_problems(
    data: Any, source: str, point_counts: tuple[int, ...] | None = None
) -> tuple[dict, list[FileProblem]]:
    """The person category and every problem of a loaded COCO keypoint file.

    Images need an integer ``id`` (int64), a non-empty string ``file_name`` and integer ``width``,
    ``height`` in [1, :data:`MAX_IMAGE_SIDE`]. Annotations need integer (int64) ``id``, ``image_id``
    (of ``images``) and ``category_id`` (of ``categories``); those of the person category also
    ``keypoints`` (``3 K`` finite numbers, ``K`` in ``point_counts``, default the category's count,
    visibility in {0, 1, 2}, coordinates within :data:`MAX_COORDINATE`), ``bbox`` ``[x, y, w, h]``
    (finite, ``w, h >= 0``, within :data:`MAX_COORDINATE`: boxes beyond the image are kept, as COCO's), optional ``iscrowd`` 0/1/false/true, optional
    ``area`` (finite, in [0, width * height]) and optional ``num_keypoints`` (integer >= 0).

    Raises:
        InputError: the file is not an object with ``images`` and ``annotations`` lists and a
            keypoint category (nothing else can be checked).
    """
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: the top level must be a JSON object with 'images', 'annotations' and 'categories', "
            f"got {_json_type(data)}"
        )
    category = person_category(data.get("categories"), source)
    problems: list[FileProblem] = []
    sizes = _image_sizes(require_list(data, "images", source), problems)
    person = _PersonRules(category["id"], point_counts or (len(category["keypoints"]),), sizes,
                          _category_ids(data.get("categories")))  # fmt: skip
    seen: set[int] = set()
    rows: list[tuple[Any, Any, list]] = []
    for n, ann in enumerate(require_list(data, "annotations", source)):
        row = _check_annotation(ann, n, person, seen, problems)
        if row is not None:
            rows.append(row)
    problems.extend(_keypoint_problems(rows, category["keypoints"]))
    return category, problems


@dataclass(frozen=True)
class _PersonRules:
    category_id: int
    point_counts: tuple[int, ...]
    sizes: dict[int, tuple[int, int] | None]  # image id -> (width, height); None: the size is bad
    known_categories: set


def _is_id(value: Any) -> bool:
    return _is_integer(value) and INT64_MIN <= value <= INT64_MAX


def _is_finite(value: Any) -> bool:
    return (_is_integer(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    """An integer, but not a bool (JSON true/false); numpy integers count (files built in code)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _short(value: Any) -> str:
    text = "null" if value is None else repr(value)  # as the JSON file spells it
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _image_sizes(entries: list, problems: list[FileProblem]) -> dict[int, tuple[int, int] | None]:
    sizes: dict[int, tuple[int, int] | None] = {}
    for n, image in enumerate(entries):
        image_id = image.get("id") if isinstance(image, dict) else None
        if not _is_id(image_id):
            got = (
                ("no 'id'" if "id" not in image else f"'id' {_short(image_id)}")
                if isinstance(image, dict)
                else _short(image)
            )
            problems.append(FileProblem(
                "malformed image", f"image entry #{n} (by position): needs an integer 'id' fitting int64, got {got}"))  # fmt: skip
            continue
        where = f"image {image_id}"
        if image_id in sizes:
            problems.append(FileProblem("duplicate image id", f"{where}: the id appears twice", image_id))
            continue
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            got = _short(name) if "file_name" in image else "nothing"
            problems.append(FileProblem(
                "malformed image", f"{where}: 'file_name' must be a non-empty string (the file in the image "
                f"folder), got {got}", image_id))  # fmt: skip
        bad = [(key, image.get(key)) for key in ("width", "height") if not _is_side(image.get(key))]
        if bad:
            problems.append(FileProblem(
                "bad image size", f"{where}: '{bad[0][0]}' must be a positive integer of at most "
                f"{MAX_IMAGE_SIDE} pixels, got {_short(bad[0][1])}", image_id))  # fmt: skip
        sizes[image_id] = None if bad else (image["width"], image["height"])
    return sizes


def _is_side(value: Any) -> bool:
    return _is_integer(value) and 1 <= value <= MAX_IMAGE_SIDE


def _check_annotation(ann: Any, n: int, rules: _PersonRules, seen: set, problems: list) -> tuple | None:
    """Problems of one annotation's ids and scalars; ``(ann_id, image_id, keypoints)`` when its
    keypoints are still to check (persons only), else None."""
    if not isinstance(ann, dict) or ann.get("id") is None:
        what = "has no 'id'" if isinstance(ann, dict) else f"is not an object, got {_short(ann)}"
        problems.append(
            FileProblem("malformed annotation", f"annotation #{n} (by position) {what}", ann_id=f"#{n}")
        )
        return None
    ann_id = ann["id"]
    if not _is_id(ann_id):
        problems.append(FileProblem(
            "bad id", f"annotation #{n} (by position): 'id' must be an integer fitting int64, got {_short(ann_id)}",
            ann_id=f"#{n}"))  # fmt: skip
        return None
    if ann_id in seen:
        problems.append(FileProblem(
            "duplicate annotation id", f"annotation #{n} (by position): duplicate annotation ids [{ann_id}]; "
            "pycocotools keeps only one annotation per id and scores the file wrongly: give every annotation "
            "its own id", ann.get("image_id") if _is_id(ann.get("image_id")) else None, ann_id))  # fmt: skip
    seen.add(ann_id)
    image_id, category_id = ann.get("image_id"), ann.get("category_id", rules.category_id)
    for field, value in (("image_id", image_id), ("category_id", category_id)):
        if not _is_id(value):
            problems.append(FileProblem(
                "bad id", f"annotation {ann_id}: '{field}' must be an integer fitting int64, got {_short(value)}",
                ann_id=ann_id))  # fmt: skip
            return None
    where = {"image_id": image_id, "ann_id": ann_id}
    if image_id not in rules.sizes:
        problems.append(FileProblem("unknown image", f"annotation {ann_id}: image_id {image_id} is not in 'images'",
                                    **where))  # fmt: skip
        return None
    if category_id != rules.category_id:
        if category_id not in rules.known_categories:
            problems.append(FileProblem(
                "unknown category", f"annotation {ann_id} (image {image_id}): category_id {category_id} is not "
                f"in 'categories' (ids {sorted(rules.known_categories, key=str)})", **where))  # fmt: skip
        return None  # another category: not a person, never read
    found = _person_problems(ann, rules.sizes[image_id], rules.point_counts)
    problems.extend(FileProblem(kind, f"annotation {ann_id} (image {image_id}): {text}", **where)
                    for kind, text in found)  # fmt: skip
    keypoints = ann.get("keypoints")
    if isinstance(keypoints, list) and len(keypoints) in [3 * k for k in rules.point_counts]:
        return ann_id, image_id, keypoints
    return None


def _person_problems(
    ann: dict, size: tuple[int, int] | None, point_counts: tuple[int, ...]
) -> list[tuple[str, str]]:
    """(kind, text) of each problem of one person's keypoint list length, iscrowd, bbox, area, num_keypoints."""
    found = []
    keypoints = ann.get("keypoints")
    if not isinstance(keypoints, list) or len(keypoints) not in [3 * k for k in point_counts]:
        got = f"{len(keypoints)} values" if isinstance(keypoints, list) else _short(keypoints)
        wanted = " or ".join(f"{3 * k} numbers ({k} points x 3)" for k in point_counts)
        found.append(("wrong keypoint count", f"'keypoints': expected {wanted} in a flat list, got {got}"))
    crowd = ann.get("iscrowd", 0)
    if not isinstance(crowd, (int, np.integer, bool, np.bool_)) or crowd not in (0, 1):
        found.append(("bad iscrowd", f"'iscrowd' must be 0 or 1 (or false/true), got {_short(crowd)}"))
    found.extend(_box_problems(ann.get("bbox")))
    if "area" in ann:
        found.extend(_area_problems(ann["area"], size))
    labelled = ann.get("num_keypoints", 0)
    if not _is_integer(labelled) or labelled < 0:
        found.append(
            ("bad num_keypoints", f"'num_keypoints' must be an integer >= 0, got {_short(labelled)}")
        )
    return found


def _box_problems(bbox: Any) -> list[tuple[str, str]]:
    if not isinstance(bbox, list) or len(bbox) != 4:
        return [("malformed bbox", f"'bbox' must be [x, y, w, h], got {_short(bbox)}")]
    if not all(_is_finite(v) for v in bbox):
        return [("non-numeric value", f"'bbox' must hold 4 finite numbers, got {_short(bbox)}")]
    x, y, w, h = bbox
    if w < 0 or h < 0:
        return [("negative box size", f"'bbox' {bbox} has a negative width or height")]
    if max(abs(x), abs(y), abs(x + w), abs(y + h)) > MAX_COORDINATE:
        return [("box outside image", f"'bbox' {_short(bbox)} is on no image (|x|, |y| <= {MAX_COORDINATE})")]
    return []


def _area_problems(area: Any, size: tuple[int, int] | None) -> list[tuple[str, str]]:
    if not _is_finite(area):
        return [("non-numeric value", f"'area' must be a finite number (pixels²), got {_short(area)}")]
    if area < 0:
        return [
            ("negative area", f"'area' {area} is negative: OKS scales by the area, so no detection matches")
        ]
    if size is not None and area > size[0] * size[1]:
        return [("area too large", f"'area' {_short(area)} is more than the image's {size[0]}x{size[1]} = "
                 f"{size[0] * size[1]} pixels: set it to the person's segment area (or the box w*h)")]  # fmt: skip
    return []


def _keypoint_problems(rows: list[tuple[Any, Any, list]], names: list[str]) -> list[FileProblem]:
    """Problems of the keypoint lists ``(ann_id, image_id, keypoints)``: checked as arrays, then
    one list at a time only where the arrays show a problem (a COCO file has ~13M values)."""
    problems = []
    for length in sorted({len(kps) for _, _, kps in rows}):
        group = [row for row in rows if len(row[2]) == length]
        try:
            values = np.array([kps for _, _, kps in group])
        except (TypeError, ValueError, OverflowError):
            values = None
        if values is not None and values.dtype.kind in "iuf" and values.ndim == 2:
            values = values.astype(np.float64).reshape(len(group), -1, 3)
            ok = np.isfinite(values).all(axis=(1, 2)) & (np.abs(values[:, :, :2]) <= MAX_COORDINATE).all(
                axis=(1, 2)
            )
            ok &= np.isin(values[:, :, 2], VALID_VISIBILITY).all(axis=1)
            suspects = [group[i] for i in np.flatnonzero(~ok)]
        else:
            suspects = group
        for ann_id, image_id, kps in suspects:
            problem = _first_bad_point(kps, names)
            if problem is not None:
                problems.append(FileProblem(problem[0], f"annotation {ann_id} (image {image_id}): {problem[1]}",
                                            image_id, ann_id))  # fmt: skip
    return problems


def _first_bad_point(keypoints: list, names: list[str]) -> tuple[str, str] | None:
    """(kind, text) of the first value of ``keypoints`` that is not a finite coordinate or a
    visibility in {0, 1, 2}; ``names`` are the category's (a shorter list holds the last ones)."""
    names = names[len(names) - len(keypoints) // 3 :] if len(keypoints) // 3 <= len(names) else []
    for i, value in enumerate(keypoints):
        point = f"{names[i // 3]} " if names else ""
        what = f"keypoints[{i}] ({point}{('x', 'y', 'visibility')[i % 3]})"
        if not _is_finite(value):
            return "non-numeric value", f"{what} is {_short(value)}; every value must be a finite number"
        if i % 3 == 2 and value not in VALID_VISIBILITY:
            return "bad visibility", (f"{what} is {_short(value)}; COCO visibility is 0 (unlabelled), "
                                      "1 (labelled, hidden) or 2 (labelled, visible)")  # fmt: skip
        if i % 3 != 2 and abs(value) > MAX_COORDINATE:
            return (
                "keypoint outside image",
                f"{what} is {_short(value)}: on no image (|x|, |y| <= {MAX_COORDINATE})",
            )
    return None


def check_training_annotations(train_ann: str | os.PathLike, val_ann: str | os.PathLike) -> None:
    """Check, before training starts, the training and validation files as the run will read them.

    A bad validation file is refused in seconds, not after the first epoch.

    Raises:
        InputError: a file fails :func:`validate_keypoint_file`, the validation file has no images,
            or the training file has no labelled, non-crowd person.
    """
    train = load_keypoint_annotations(train_ann)
    val = load_keypoint_annotations(val_ann)
    if val.num_images == 0:
        raise InputError(f"{val.source}: no images; the validation set needs at least one image to score")
    labelled = (~train.iscrowd) & (train.labelled_counts() > 0)
    if not labelled.any():
        raise InputError(
            f"{train.source}: no labelled person ({train.num_people} annotations, all crowd regions or without a "
            "labelled keypoint); training needs people with keypoints (v > 0) and iscrowd 0"
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
    category = validate_keypoint_file(data, source)
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
