"""Keypoint ground truth and detections, validated once and held as flat numpy arrays.

``raypose eval`` (fast and ``--slow``), ``raypose analyze`` and the in-training evaluation read their
inputs here, so every one of them refuses the same files with the same messages. Nothing builds
pycocotools' ``COCO`` objects on the fast path: the arrays are laid out in exactly the order
pycocotools' ``COCOeval`` uses (images by sorted id, people by image then file order, detections by
image then score, stable), and detection areas follow ``COCO.loadRes`` (box ``w * h`` when the
first detection has a box, else the keypoints' extent).

Keypoints are float64 ``(x, y, v)`` in original-image pixels; ground-truth ``v`` is in {0, 1, 2}.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from raypose.data.annotations import VALID_VISIBILITY, _parse_images, validate_keypoint_file
from raypose.errors import InputError
from raypose.evaluation.fast import CategoryData
from raypose.io import load_json

logger = logging.getLogger(__name__)

GT_KEYS = ("id", "image_id", "category_id", "keypoints", "num_keypoints", "iscrowd", "area", "bbox")
DET_KEYS = ("image_id", "category_id", "keypoints", "score")
_GT_KEY_SET = frozenset(GT_KEYS)


@dataclass(frozen=True)
class GroundTruth:
    """The person category of a COCO keypoint file; people sorted by image (sorted ids), then file order."""

    source: str
    dataset: dict | None  # the parsed file, for pycocotools (--slow); None in cached copies
    category_id: Any
    keypoint_names: tuple[str, ...]
    image_ids: np.ndarray  # (I,) int64, sorted
    file_names: list[str]  # (I,)
    widths: np.ndarray  # (I,) int
    heights: np.ndarray  # (I,) int
    gt_img: np.ndarray  # (G,) int64 position in image_ids
    keypoints: np.ndarray  # (G, K, 3) float64
    boxes: np.ndarray  # (G, 4) float64 xywh
    areas: np.ndarray  # (G,) float64
    iscrowd: np.ndarray  # (G,) bool
    num_labelled: np.ndarray  # (G,) int64: the file's num_keypoints field (pycocotools ignores 0)
    ann_ids: np.ndarray  # (G,) int64

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)


@dataclass(frozen=True)
class Detections:
    """The person-category detections of a results file, in file order (other categories dropped)."""

    source: str
    image_pos: np.ndarray  # (N,) int64 position in GroundTruth.image_ids
    keypoints: np.ndarray  # (N, K, 3) float64
    scores: np.ndarray  # (N,) float64
    areas: np.ndarray  # (N,) float64, as COCO.loadRes computes them
    file_index: np.ndarray  # (N,) int64 position in the file (loadRes numbers results file_index + 1)
    keypoint_scores: np.ndarray | None  # (N, K) when every detection has them
    records: list | None = None  # the file's detections (all categories), for pycocotools (--slow)
    areas_from_keypoints: bool = False  # no boxes: the areas are the keypoints' extent (loadRes)


def ground_truth(gt: str | os.PathLike | dict) -> GroundTruth:
    """Validated :class:`GroundTruth` from a COCO keypoint file path or an already-loaded dict.

    Raises:
        InputError: see :func:`ground_truth_from_dict`.
    """
    if isinstance(gt, dict):
        return ground_truth_from_dict(gt, "<ground-truth dict>")
    return ground_truth_from_dict(load_json(gt, what="ground-truth annotation file"), str(Path(gt)))


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int) -> GroundTruth:
    return replace(ground_truth(path), dataset=None)  # the arrays are all the fast path needs


def cached_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """:func:`ground_truth` of a file, parsed once per process while the file is unchanged.

    For the per-epoch evaluation: the validation file is read and checked on the first call only.
    The copy keeps the arrays, not the parsed JSON (``dataset`` is None), so it serves the fast
    evaluator only.
    """
    stat = Path(path).stat() if Path(path).is_file() else None
    if stat is None:
        raise InputError(f"ground-truth annotation file not found: {path}")
    return _cached(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def ground_truth_from_dict(data: Any, source: str) -> GroundTruth:
    """Check a COCO keypoint ground truth and keep its person category as arrays.

    Refused (each would make pycocotools' numbers wrong or meaningless): no ``annotations`` or
    ``categories``; no category with ``keypoints``; an annotation lacking one of :data:`GT_KEYS`;
    duplicate annotation ids (pycocotools keeps one of them); an unknown category or image id;
    keypoint lists of the wrong length, non-numbers, non-finite values or visibilities outside
    {0, 1, 2}; negative box sizes; ``iscrowd`` other than 0/1; a labelled, non-crowd person with
    ``area <= 0`` (its OKS is 0 for any detection that is not pixel-exact). People of other categories
    are left out with a warning.

    Raises:
        InputError: the message names the file, the annotation id and the fix.
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{source}: not a COCO ground-truth file (expected an object with an 'images' list)")
    for key in ("annotations", "categories"):
        if key not in data:
            raise InputError(
                f"{source}: no '{key}' field; a keypoint ground truth needs 'images', 'annotations' and "
                "'categories' (with the person category and its 'keypoints' names); every number would be -1"
            )
    if not isinstance(data["annotations"], list):
        raise InputError(f"{source}: 'annotations' must be a list of objects")
    category = validate_keypoint_file(data, source)  # the checks every reader of the file makes
    names = tuple(str(n) for n in category["keypoints"])
    image_ids, file_names, widths, heights = _parse_images(data["images"], source)
    anns = _person_annotations(data, category, source)
    if not anns:
        raise InputError(
            f"{source}: no annotation of the person category {category['id']!r}; with no people every number "
            "would be -1: evaluate against a ground truth that labels people"
        )
    order = np.argsort(image_ids, kind="stable")
    image_ids = image_ids[order]
    arrays = _gt_arrays(anns, image_ids, len(names), source)
    return GroundTruth(
        source=source,
        dataset=data,
        category_id=category["id"],
        keypoint_names=names,
        image_ids=image_ids,
        file_names=[str(n) for n in file_names[order]],
        widths=widths[order].astype(np.int64),
        heights=heights[order].astype(np.int64),
        **arrays,
    )


def _person_annotations(data: dict, category: dict, source: str) -> list[dict]:
    known = {c.get("id") for c in _as_list(data["categories"]) if isinstance(c, dict)}
    person_id = category["id"]
    anns, others = [], 0
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise InputError(f"{source}: annotation #{n} is not an object")
        if not ann.keys() >= _GT_KEY_SET:
            missing = [k for k in GT_KEYS if k not in ann]
            raise InputError(
                f"{source}: annotation {_ann_name(ann, n)} lacks {', '.join(missing)}; keypoint ground truth "
                f"needs {', '.join(GT_KEYS)} in every annotation"
            )
        if ann["category_id"] == person_id:
            anns.append(ann)
        elif ann["category_id"] in known:
            others += 1
        else:
            raise InputError(
                f"{source}: annotation {_ann_name(ann, n)}: unknown category_id {ann['category_id']!r}; the "
                f"file defines {sorted(known, key=str)}"
            )
    if others:
        logger.warning(
            "%s: %d annotation(s) of categories other than %r (%s) are not evaluated",
            source, others, category.get("name", "person"), person_id,
        )  # fmt: skip
    return anns


def _as_list(categories: Any) -> list:
    return [categories] if isinstance(categories, dict) else list(categories or [])


def _ann_name(ann: dict, n: int) -> str:
    return f"id {ann['id']} (#{n}, image {ann.get('image_id', '?')})" if "id" in ann else f"#{n}"


def _gt_arrays(anns: list[dict], image_ids: np.ndarray, num_kpts: int, source: str) -> dict[str, np.ndarray]:
    ids = _numbers([a["id"] for a in anns], source, "annotation", "id", integer=True, labels=None)
    labels = [f"id {a['id']}" for a in anns]
    img = _numbers(
        [a["image_id"] for a in anns], source, "annotation", "image_id", integer=True, labels=labels
    )
    pos = _positions(img, image_ids)
    if (pos < 0).any():
        n = int(np.argmax(pos < 0))
        raise InputError(f"{source}: annotation id {anns[n]['id']}: image_id {img[n]} is not in 'images'")
    order = np.argsort(pos, kind="stable")  # by image, then file order (pycocotools' imgToAnns)
    anns = [anns[i] for i in order]
    labels = [labels[i] for i in order]
    kpts = _rows([a["keypoints"] for a in anns], 3 * num_kpts, source, "annotation", "keypoints", labels)
    boxes = _rows([a["bbox"] for a in anns], 4, source, "annotation", "bbox", labels)
    areas = _numbers([a["area"] for a in anns], source, "annotation", "area", labels=labels)
    crowd = np.array([int(a["iscrowd"]) for a in anns], dtype=np.int64)  # 0/1/false/true: validated
    labelled = _numbers(
        [a["num_keypoints"] for a in anns], source, "annotation", "num_keypoints", integer=True, labels=labels
    )
    arrays = {
        "gt_img": pos[order],
        "keypoints": kpts.reshape(len(anns), num_kpts, 3),
        "boxes": boxes,
        "areas": areas,
        "iscrowd": crowd != 0,
        "num_labelled": labelled.astype(np.int64),
        "ann_ids": ids[order].astype(np.int64),
    }
    _check_gt_values(arrays, crowd, source)
    return arrays


def _check_gt_values(a: dict[str, np.ndarray], crowd: np.ndarray, source: str) -> None:
    ids = a["ann_ids"]
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            f"{source}: duplicate annotation ids {values[counts > 1][:10].tolist()}; pycocotools keeps only one "
            "annotation per id and scores the file wrongly: give every annotation its own id"
        )
    checks = (
        (~np.isin(a["keypoints"][:, :, 2], VALID_VISIBILITY).all(axis=1), "a keypoint visibility outside {0, 1, 2}"),
        (~np.isfinite(a["keypoints"]).all(axis=(1, 2)), "a non-finite keypoint value"),
        (~np.isfinite(a["boxes"]).all(axis=1) | (a["boxes"][:, 2:] < 0).any(axis=1), "a non-finite or negative bbox size"),
        (~np.isfinite(a["areas"]) | (a["areas"] < 0), "a negative or non-finite area"),
        (~np.isin(crowd, (0, 1)), "iscrowd other than 0 or 1"),
        (a["num_labelled"] < 0, "a negative num_keypoints"),
    )  # fmt: skip
    for bad, what in checks:
        if bad.any():
            raise InputError(
                f"{source}: annotation id(s) {ids[bad][:10].tolist()} have {what}; fix or drop them "
                "(`raypose data check` lists every problem of the file)"
            )
    scored = ~a["iscrowd"] & (a["num_labelled"] > 0)
    degenerate = scored & (a["areas"] <= 0)
    if degenerate.any():
        raise InputError(
            f"{source}: {int(degenerate.sum())} labelled person(s) have area 0, e.g. annotation id(s) "
            f"{ids[degenerate][:10].tolist()}; OKS divides by the area, so only a pixel-exact detection could "
            "match them and AP would be meaningless: set 'area' to the person's segment area (or the box w*h)"
        )
    ignored_zero = ~scored & (a["areas"] <= 0)
    if ignored_zero.any():
        logger.warning(
            "%s: %d crowd or unlabelled annotation(s) have area 0 (e.g. ids %s); detections on them are not "
            "ignored as they would be with their real area",
            source, int(ignored_zero.sum()), ids[ignored_zero][:5].tolist(),
        )  # fmt: skip


def _positions(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Position of each id in ``sorted_ids``, -1 where absent."""
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


def _is_number(value: Any, integer: bool = False) -> bool:
    # bool is an int subclass in Python; JSON true/false is not a number here.
    return type(value) is int if integer else type(value) in (int, float)


def _first_bad(values: list, integer: bool) -> tuple[int, Any]:
    for n, value in enumerate(values):
        if not _is_number(value, integer):
            return n, value
    return -1, None


def _numbers(
    values: list, source: str, item: str, field: str, integer: bool = False, labels: list[str] | None = None
) -> np.ndarray:
    """(N,) array of plain JSON numbers (integers if ``integer``); anything else raises with the item."""
    try:
        arr = np.array(values) if values else np.zeros(0, dtype=np.int64 if integer else np.float64)
    except ValueError:  # ragged: some value is a list
        arr = np.zeros((0, 0))
    kinds = "iu" if integer else "iuf"
    if arr.dtype.kind not in kinds or arr.ndim != 1 or (not integer and bool in set(map(type, values))):
        n, value = _first_bad(values, integer)
        n = max(n, 0)
        name = labels[n] if labels else str(n)
        kind = "an integer" if integer else "a number"
        raise InputError(f"{source}: {item} {name}: {field} must be {kind}, got {value!r}")
    return arr if integer else arr.astype(np.float64, copy=False)


def _rows(
    values: list, width: int, source: str, item: str, field: str, labels: list[str] | None
) -> np.ndarray:
    """(N, width) float64 array of flat number lists; wrong lengths or non-numbers raise with the item."""
    if not values:
        return np.zeros((0, width), dtype=np.float64)
    try:
        arr = np.array(values)
    except ValueError:  # ragged
        arr = None
    if arr is not None and arr.ndim == 2 and arr.shape[1] == width and arr.dtype.kind in "iuf":
        return arr.astype(np.float64, copy=False)
    for n, row in enumerate(values):
        name = labels[n] if labels else str(n)
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else repr(row)[:60]
            raise InputError(
                f"{source}: {item} {name}: {field} must be a flat list of {width} numbers"
                + (
                    f" (x, y, v for {width // 3} keypoints, as the ground truth)"
                    if field == "keypoints"
                    else ""
                )
                + f", got {got}"
            )
        bad = [v for v in row if not _is_number(v)]
        if bad:
            raise InputError(f"{source}: {item} {name}: {field} must hold numbers only, got {bad[0]!r}")
    raise InputError(f"{source}: malformed {field} lists")  # not reached for JSON input


def detections(dets: str | os.PathLike | list, truth: GroundTruth, keep_records: bool = False) -> Detections:
    """Validated :class:`Detections` from a COCO results file path or an already-loaded list.

    Args:
        keep_records: keep the parsed list (``Detections.records``) for pycocotools (``--slow``).

    Raises:
        InputError: see :func:`detections_from_list`.
    """
    if isinstance(dets, (str, os.PathLike)):
        return detections_from_list(
            load_json(dets, what="detections file"), truth, str(Path(dets)), keep_records
        )
    return detections_from_list(dets, truth, "<detections>", keep_records)


def detections_from_list(
    dets: Any, truth: GroundTruth, source: str = "<detections>", keep_records: bool = False
) -> Detections:
    """Check COCO keypoint results against ``truth`` and keep the person category's as arrays.

    Every detection needs :data:`DET_KEYS`: an integer ``image_id`` of the ground truth, a flat
    list of ``3 K`` numbers ``keypoints`` (K of the ground truth), a finite number ``score``; a
    ``bbox`` on every detection or on none (pycocotools takes the areas from the first one's kind);
    optional ``keypoint_scores`` (K numbers) on all of them. Detections of other categories than the
    ground truth's person category are dropped with a warning that counts them; if that is all of
    them, it is an error.

    Raises:
        InputError: ``"{source}: detection {n}: {field} must be ..., got ..."``, ``n`` the index in the list.
    """
    if not isinstance(dets, list):
        raise InputError(
            f"{source}: a COCO keypoint results file is a JSON list of detections, got {type(dets).__name__}"
        )
    try:
        categories = [d["category_id"] for d in dets]
        fields = {key: [d[key] for d in dets] for key in ("image_id", "score", "keypoints")}
    except (KeyError, TypeError, IndexError):
        _raise_malformed(dets, source)
    _check_result_kind(dets, source)
    is_person = _equal_to(categories, truth.category_id)
    kept = np.flatnonzero(is_person)
    labels = None  # messages name the index in the file: the same as the kept index unless some were dropped
    if len(kept) < len(dets):
        _report_other_categories(categories, is_person, truth, source)
        fields = {key: [values[i] for i in kept] for key, values in fields.items()}
        labels = [str(i) for i in kept]
    person = [dets[i] for i in kept] if labels is not None else dets
    k = truth.num_keypoints
    img = _numbers(fields["image_id"], source, "detection", "image_id", integer=True, labels=labels)
    pos = _positions(img, truth.image_ids)
    if (pos < 0).any():
        unknown = sorted(set(img[pos < 0].tolist()))
        shown = ", ".join(str(i) for i in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(
            f"{source}: {len(unknown)} image id(s) not in the ground truth {truth.source}: {shown}; "
            "detections must refer to images of that ground-truth file"
        )
    scores = _numbers(fields["score"], source, "detection", "score", labels=labels)
    kpts = _rows(fields["keypoints"], 3 * k, source, "detection", "keypoints", labels)
    kpts = kpts.reshape(len(person), k, 3)
    bad = ~np.isfinite(kpts).all(axis=(1, 2)) | ~np.isfinite(scores)
    if bad.any():
        n = int(kept[np.argmax(bad)])
        raise InputError(
            f"{source}: detection {n}: non-finite keypoint or score; drop it or fix the model output"
        )
    return Detections(
        source=source,
        image_pos=pos,
        keypoints=kpts,
        scores=scores,
        areas=_areas(dets, kept, kpts, source),
        file_index=kept.astype(np.int64),
        keypoint_scores=_keypoint_scores(person, k, source, labels),
        records=dets if keep_records else None,
        areas_from_keypoints=not (dets and dets[0].get("bbox", []) != []),
    )


def _raise_malformed(dets: list, source: str) -> NoReturn:
    for n, det in enumerate(dets):
        if not isinstance(det, dict):
            raise InputError(
                f"{source}: detection {n}: must be an object with {', '.join(DET_KEYS)}, got {det!r:.80}"
            )
        missing = [k for k in DET_KEYS if k not in det]
        if missing:
            raise InputError(
                f"{source}: detection {n}: lacks {', '.join(missing)}; every detection needs {', '.join(DET_KEYS)}"
            )
    raise AssertionError("_raise_malformed found nothing wrong")


def _equal_to(values: list, target: Any) -> np.ndarray:
    """(N,) bool: ``values[n] == target``, vectorised when the values are plain integers."""
    arr = np.array(values) if values else np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "iu" and arr.ndim == 1 and type(target) is int:
        return arr == target
    return np.array([v == target for v in values], dtype=bool)


def _check_result_kind(dets: list, source: str) -> None:
    if not dets:
        return
    first = dets[0]
    if "caption" in first or ("segmentation" in first and not first.get("bbox")):
        raise InputError(
            f"{source}: detection 0 has 'caption' or 'segmentation' without 'bbox', so pycocotools would read "
            "the file as caption/mask results; drop those fields from keypoint results"
        )


def _report_other_categories(
    categories: list, is_person: np.ndarray, truth: GroundTruth, source: str
) -> None:
    others = sorted({repr(categories[i]) for i in np.flatnonzero(~is_person)})
    dropped = int(np.count_nonzero(~is_person))
    if dropped == len(categories):
        raise InputError(
            f"{source}: all {dropped} detections have category_id {', '.join(others[:5])}, none the ground "
            f"truth's person category {truth.category_id!r} ({truth.source}); set category_id to "
            f"{truth.category_id!r} in the results"
        )
    logger.warning(
        "%s: %d of %d detections have category_id %s instead of the person category %r and are NOT evaluated",
        source, dropped, len(categories), ", ".join(others[:5]), truth.category_id,
    )  # fmt: skip


def _areas(dets: list, kept: np.ndarray, kpts: np.ndarray, source: str) -> np.ndarray:
    """Detection areas as ``COCO.loadRes`` sets them: the box's ``w * h`` when the file's first
    detection has a box, else the extent of the keypoints (x, y of all K, labelled or not)."""
    if dets and dets[0].get("bbox", []) != []:
        try:
            boxes = [d["bbox"] for d in dets]
        except KeyError:
            n = next(n for n, d in enumerate(dets) if "bbox" not in d)
            raise InputError(
                f"{source}: detection {n} has no bbox while detection 0 has; give every detection a "
                "bbox [x, y, w, h] or none"
            ) from None
        boxes = _rows(boxes, 4, source, "detection", "bbox", None)
        boxes = boxes[kept] if len(kept) < len(dets) else boxes
        return boxes[:, 2] * boxes[:, 3]
    if len(kpts) == 0:
        return np.zeros(0, dtype=np.float64)
    # pycocotools takes np.min/np.max of the x and y lists: the same float64 values.
    x, y = np.ascontiguousarray(kpts[:, :, 0]), np.ascontiguousarray(kpts[:, :, 1])
    return (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))


def _keypoint_scores(person: list, k: int, source: str, labels: list[str] | None) -> np.ndarray | None:
    if not person or not all("keypoint_scores" in d for d in person):
        return None
    return _rows([d["keypoint_scores"] for d in person], k, source, "detection", "keypoint_scores", labels)


def keypoint_subset(truth: GroundTruth, found: Detections, keep: slice) -> tuple[GroundTruth, Detections]:
    """The ground truth and detections of the keypoints ``keep`` only, as files holding just
    those points would give: ``num_keypoints`` recounted over them (a person labelling none is
    ignored, as pycocotools ignores ``num_keypoints`` 0), boxes and ground-truth areas kept,
    detection areas recomputed where they come from the keypoints' extent."""
    kpts = np.ascontiguousarray(truth.keypoints[:, keep])
    part_truth = replace(truth, keypoint_names=truth.keypoint_names[keep], keypoints=kpts, dataset=None,
                         num_labelled=np.count_nonzero(kpts[:, :, 2] > 0, axis=1).astype(np.int64))
    det_kpts = np.ascontiguousarray(found.keypoints[:, keep])
    areas = _areas([], np.arange(len(det_kpts)), det_kpts, found.source) if found.areas_from_keypoints else found.areas
    part_found = replace(found, keypoints=det_kpts, areas=areas, records=None,
                         keypoint_scores=None if found.keypoint_scores is None else found.keypoint_scores[:, keep])
    return part_truth, part_found


def category_data(
    truth: GroundTruth, dets: Detections, image_ids: list[int] | np.ndarray | None = None, max_det: int = 20
) -> tuple[CategoryData, np.ndarray]:
    """:class:`CategoryData` of the person category over ``image_ids`` (default all), as COCOeval orders it.

    Returns:
        ``(data, kept)``: ``kept`` (N_kept,) indexes ``dets`` arrays for each kept detection.

    Raises:
        InputError: an image id is not in the ground truth.
    """
    num_images = len(truth.image_ids)
    if image_ids is None:
        new_pos = np.arange(num_images)
    else:
        wanted = np.unique(np.asarray(image_ids, dtype=np.int64))
        found = _positions(wanted, truth.image_ids)
        if (found < 0).any():
            raise InputError(
                f"image ids not in the ground truth {truth.source}: {wanted[found < 0][:10].tolist()}"
            )
        new_pos = np.full(num_images, -1, dtype=np.int64)
        new_pos[found] = np.arange(len(found))
        num_images = len(found)
    gt_sel = np.flatnonzero(new_pos[truth.gt_img] >= 0)
    dt_sel = np.flatnonzero(new_pos[dets.image_pos] >= 0)
    dt_img = new_pos[dets.image_pos[dt_sel]]
    scores = dets.scores[dt_sel]
    order = np.lexsort((-scores, dt_img))  # stable: ties keep file order, like mergesort
    dt_img = dt_img[order]
    rank = np.arange(len(dt_img)) - np.searchsorted(dt_img, dt_img, side="left")
    keep = rank < max_det
    kept = dt_sel[order][keep]
    crowd = truth.iscrowd[gt_sel]
    data = CategoryData(
        num_images=num_images,
        gt_img=new_pos[truth.gt_img[gt_sel]],
        gt_kpts=truth.keypoints[gt_sel],
        gt_boxes=truth.boxes[gt_sel],
        gt_areas=truth.areas[gt_sel],
        gt_crowd=crowd,
        gt_ignore=crowd | (truth.num_labelled[gt_sel] == 0),
        gt_crowd_ignore=crowd,
        gt_ids=truth.ann_ids[gt_sel].astype(np.float64),
        dt_img=dt_img[keep],
        dt_rank=rank[keep],
        dt_kpts=dets.keypoints[kept],
        dt_areas=dets.areas[kept],
        dt_scores=dets.scores[kept],
        dt_ids=(dets.file_index[kept] + 1).astype(np.float64),  # loadRes numbers results 1.. in file order
    )
    return data, kept


def detections_from_arrays(
    truth: GroundTruth,
    image_ids: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray | None = None,
    source: str = "<in-memory detections>",
) -> Detections:
    """:class:`Detections` from arrays, as :func:`detections_from_list` would give for the same
    results written as COCO dicts (same order, same areas), without building the dicts.

    Args:
        image_ids: (N,) COCO image ids; keypoints: (N, K, 3) ``(x, y, v)`` pixels; scores: (N,);
        boxes: (N, 4) ``[x, y, w, h]`` or None (then areas come from the keypoints' extent).

    Raises:
        InputError: shapes that disagree with the ground truth, non-finite values, unknown image ids.
    """
    image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    num = len(image_ids)
    kpts = np.asarray(keypoints, dtype=np.float64)
    kpts = kpts.reshape(num, -1, 3) if num else np.zeros((0, truth.num_keypoints, 3))
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if kpts.shape[1] != truth.num_keypoints or len(scores) != num:
        raise InputError(
            f"{source}: {num} detections with {kpts.shape[1]} keypoints and {len(scores)} scores; the ground "
            f"truth {truth.source} has {truth.num_keypoints} keypoints: one score and K keypoints per detection"
        )
    bad = ~np.isfinite(kpts).all(axis=(1, 2)) | ~np.isfinite(scores)
    if bad.any():
        raise InputError(f"{source}: detection {int(np.argmax(bad))}: non-finite keypoint or score")
    pos = _positions(image_ids, truth.image_ids)
    if (pos < 0).any():
        raise InputError(
            f"{source}: image id(s) {sorted(set(image_ids[pos < 0].tolist()))[:10]} are not in the ground truth "
            f"{truth.source}"
        )
    if boxes is not None and num:
        wh = np.asarray(boxes, dtype=np.float64).reshape(num, 4)[:, 2:]
        areas = wh[:, 0] * wh[:, 1]
    else:
        areas = _areas([], np.arange(num), kpts, source)
    return Detections(
        source=source,
        image_pos=pos,
        keypoints=kpts,
        scores=scores,
        areas=areas,
        file_index=np.arange(num, dtype=np.int64),
        keypoint_scores=None,
        areas_from_keypoints=boxes is None or not num,
    )
