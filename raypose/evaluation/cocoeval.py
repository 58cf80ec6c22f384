"""OKS-mAP evaluation of keypoint detections with pycocotools' numbers.

:func:`evaluate_keypoints` runs ``COCOeval(iouType="keypoints")`` (or the bit-identical vectorised
:class:`raypose.evaluation.fast.FastKeypointCOCOeval`, the default) with the schema's OKS sigmas
(17 or 23 keypoints) and returns a :class:`KeypointEvalResult`: the 10 summary numbers, the
precision/recall arrays (PR curves at OKS 0.50:0.05:0.95) and a per-keypoint breakdown.

Inputs are checked before pycocotools sees them, so a bad file gives an :class:`InputError`
naming the file and the offending id instead of an ``AssertionError`` or ``KeyError``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raypose.errors import InputError
from raypose.evaluation import fast as fast_eval
from raypose.evaluation.oks import keypoint_similarity_pairs
from raypose.io import load_json
from raypose.schema import schema_for

logger = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_GT_KEYS = ("id", "image_id", "category_id", "keypoints", "num_keypoints", "iscrowd", "area", "bbox")
_DET_KEYS = ("image_id", "category_id", "keypoints", "score")


@dataclass
class KeypointEvalResult:
    """Result of one keypoint evaluation.

    Attributes:
        stats: the 10 pycocotools summary numbers keyed by :data:`STAT_NAMES` (-1 = undefined).
        precision: ``COCOeval.eval['precision']``, (T=10, R=101, K_cat, A=3, M=1); -1 = undefined.
        recall: (T, K_cat, A, M). scores: like precision, the score at each recall threshold.
        oks_thresholds: (T,) OKS thresholds; recall_thresholds: (R,).
        per_keypoint: keypoint name -> {"AP", "AP50", "AP75", "mean_ks", "num_labelled"}; see
            :func:`evaluate_keypoints`.
        num_images / num_gt / num_dets: evaluated images, ground-truth people, detections.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    oks_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    per_keypoint: dict[str, dict[str, float]] = field(default_factory=dict)
    num_images: int = 0
    num_gt: int = 0
    num_dets: int = 0
    area_labels: tuple[str, ...] = ("all", "medium", "large")

    def pr_curves(self) -> dict[str, list[float]]:
        """Precision at each recall threshold per OKS threshold (area "all", first category).

        Keys are ``"0.50"`` ... ``"0.95"``; -1 entries (no ground truth) are left as -1.
        """
        return {
            f"{t:.2f}": self.precision[i, :, 0, 0, -1].tolist() for i, t in enumerate(self.oks_thresholds)
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: stats, per-keypoint numbers, PR curve data and counts (NaN -> None)."""
        return {
            "stats": {k: _finite_or_none(v) for k, v in self.stats.items()},
            "per_keypoint": {
                name: {k: _finite_or_none(v) for k, v in values.items()}
                for name, values in self.per_keypoint.items()
            },
            "pr_curves": {
                "recall_thresholds": self.recall_thresholds.tolist(),
                "precision": self.pr_curves(),
                "recall": {
                    f"{t:.2f}": float(self.recall[i, 0, 0, -1]) for i, t in enumerate(self.oks_thresholds)
                },
            },
            "num_images": self.num_images,
            "num_gt": self.num_gt,
            "num_dets": self.num_dets,
        }


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@contextlib.contextmanager
def _quiet():
    """pycocotools prints progress to stdout; keep it out of CLI output (it goes to DEBUG)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        logger.debug("pycocotools: %s", " | ".join(buffer.getvalue().split("\n")).strip(" |"))


def load_coco_gt(gt: str | Path | dict | COCO) -> COCO:
    """A pycocotools ``COCO`` for a ground-truth file, dict or ``COCO`` (returned as is), quietly.

    A dict is copied one level deep (pycocotools writes flags into annotations).

    Raises:
        InputError: the file is missing, not JSON, or not a COCO dataset object.
    """
    if isinstance(gt, COCO):
        return gt
    source = str(gt) if isinstance(gt, (str, Path)) else "<ground-truth dict>"
    dataset = load_json(gt, what="ground-truth annotation file") if isinstance(gt, (str, Path)) else gt
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise InputError(f"{source}: not a COCO ground-truth file (expected an object with an 'images' list)")
    dataset = dict(dataset)
    dataset["annotations"] = [dict(a) for a in dataset.get("annotations", [])]
    dataset.setdefault("categories", [])
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    coco.raypose_source = source  # used in error messages
    return coco


def _source(coco: COCO) -> str:
    return getattr(coco, "raypose_source", "<ground truth>")


def gt_num_keypoints(coco_gt: COCO) -> int:
    """K of the ground truth: the keypoint names of its category, else the first annotation's length.

    Raises:
        InputError: neither is available.
    """
    for cat in coco_gt.dataset.get("categories", []):
        if cat.get("keypoints"):
            return len(cat["keypoints"])
    for ann in coco_gt.dataset.get("annotations", []):
        if ann.get("keypoints"):
            return len(ann["keypoints"]) // 3
    raise InputError(
        f"{_source(coco_gt)}: cannot tell the number of keypoints: no category lists 'keypoints' and no "
        "annotation has any; add the person category with its keypoint names"
    )


def _keypoint_names(coco_gt: COCO, num_kpts: int) -> tuple[str, ...]:
    for cat in coco_gt.dataset.get("categories", []):
        if cat.get("keypoints") and len(cat["keypoints"]) == num_kpts:
            return tuple(cat["keypoints"])
    try:
        return schema_for(num_kpts).names
    except ValueError:
        return tuple(f"kp{k}" for k in range(num_kpts))


def _check_gt(coco_gt: COCO, num_kpts: int) -> None:
    source = _source(coco_gt)
    for ann in coco_gt.dataset.get("annotations", []):
        missing = [k for k in _GT_KEYS if k not in ann]
        ann_id = ann.get("id", "?")
        if missing:
            raise InputError(
                f"{source}: annotation id {ann_id} (image {ann.get('image_id', '?')}) lacks {', '.join(missing)}; "
                "keypoint ground truth needs id, image_id, category_id, keypoints, num_keypoints, iscrowd, "
                "area and bbox"
            )
        if len(ann["keypoints"]) != 3 * num_kpts:
            raise InputError(
                f"{source}: annotation id {ann_id} (image {ann['image_id']}) has {len(ann['keypoints'])} keypoint "
                f"values, expected {3 * num_kpts} (x, y, v for {num_kpts} keypoints); all people must use "
                "the category's keypoint list"
            )


def _check_dets(dets: list, coco_gt: COCO, num_kpts: int, source: str) -> None:
    if not isinstance(dets, list):
        raise InputError(f"{source}: a COCO keypoint results file is a JSON list of detections")
    has_box = bool(dets) and isinstance(dets[0], dict) and bool(dets[0].get("bbox"))
    for n, det in enumerate(dets):
        if not isinstance(det, dict) or any(k not in det for k in _DET_KEYS):
            raise InputError(
                f"{source}: detection #{n} must be an object with {', '.join(_DET_KEYS)}; got {str(det)[:120]}"
            )
        if has_box and len(det.get("bbox") or ()) != 4:
            raise InputError(
                f"{source}: detection #{n} (image {det['image_id']}) has no 4-number bbox while the first one "
                "has; give every detection a bbox [x, y, w, h] or none"
            )
    if dets:
        values = np.asarray([d["keypoints"] for d in dets], dtype=np.float64)
        scores = np.asarray([d["score"] for d in dets], dtype=np.float64)
        bad = ~np.isfinite(values).all(axis=1) | ~np.isfinite(scores)
        if bad.any():
            n = int(np.argmax(bad))
            raise InputError(
                f"{source}: detection #{n} (image {dets[n]['image_id']}) has a non-finite keypoint or score"
            )
    unknown = sorted({d["image_id"] for d in dets} - set(coco_gt.getImgIds()), key=str)
    if unknown:
        shown = ", ".join(str(i) for i in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(
            f"{source}: {len(unknown)} image id(s) not in the ground truth {_source(coco_gt)}: {shown}; "
            "detections must refer to images of that ground-truth file"
        )


def _check_counts(det_kpts: int | None, gt_kpts: int, num_sigmas: int, det_source: str) -> None:
    if (det_kpts is None or det_kpts == gt_kpts) and num_sigmas == gt_kpts:
        return
    raise InputError(
        f"detections have {det_kpts if det_kpts is not None else '?'} keypoints, ground truth {gt_kpts}, "
        f"sigmas {num_sigmas}: they must all agree ({det_source}). Evaluate detections from a model with the "
        "ground truth's keypoints (17 = COCO body, 23 = COCO body + foot), and pass --sigmas/sigmas with one "
        "value per keypoint or leave it out to use the schema's"
    )


def _det_keypoint_counts(dets: list, source: str) -> int | None:
    if not dets:
        return None
    counts = {len(d["keypoints"]) for d in dets if isinstance(d, dict) and "keypoints" in d}
    if len(counts) > 1 or any(c % 3 for c in counts):
        raise InputError(
            f"{source}: detections have differing keypoint list lengths {sorted(counts)}; each must hold x, y, v "
            "for every keypoint"
        )
    return counts.pop() // 3 if counts else None


def _load_dets(dets: str | Path | list[dict]) -> tuple[list[dict], str]:
    if isinstance(dets, (str, Path)):
        return load_json(dets, what="detections file"), str(dets)
    if not isinstance(dets, list):
        raise InputError("<detections>: expected a list of COCO keypoint results")
    return dets, "<detections>"


def _coco_dt(coco_gt: COCO, dets: list[dict]) -> COCO:
    with _quiet():
        if dets:
            # loadRes writes id/area/bbox into the dicts: give it copies.
            return coco_gt.loadRes([dict(d) for d in dets])
        empty = COCO()
        empty.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": coco_gt.dataset["categories"],
        }
        empty.dataset["annotations"] = []
        empty.createIndex()
        return empty


def evaluate_keypoints(
    gt: str | Path | dict | COCO,
    dets: str | Path | list[dict],
    sigmas: np.ndarray | list[float] | None = None,
    image_ids: list[int] | None = None,
    per_keypoint: bool = True,
    fast: bool = True,
) -> KeypointEvalResult:
    """OKS mAP of COCO keypoint results, numbers identical to pycocotools' ``COCOeval``.

    Args:
        gt: ground-truth COCO file, dict or ``COCO``.
        dets: COCO keypoint results (file or list of ``{"image_id", "category_id", "keypoints",
            "score", ...}``); extra keys are kept.
        sigmas: (K,) pycocotools sigmas; default the schema's for the ground truth's K.
        image_ids: evaluate only these images (default all ground-truth images).
        per_keypoint: also compute the per-keypoint breakdown. For keypoint k: ``AP``/``AP50``/
            ``AP75`` are COCO AP (all areas, 20 detections) on the single-keypoint projection of the
            data (OKS = k's ks; people who do not label k, and crowds, are ignored regions);
            ``mean_ks`` is the mean ks of k over the true-positive (detection, person) pairs of the
            full evaluation at OKS 0.5 whose person labels k (NaN if none); ``num_labelled`` counts
            non-crowd people labelling k. Computed with the vectorised engine in both modes.
        fast: use the vectorised evaluator (bit-identical); False runs plain pycocotools.

    Raises:
        InputError: unreadable files, keypoint counts that disagree, unknown image ids, and the like.
    """
    coco_gt = load_coco_gt(gt)
    num_kpts = gt_num_keypoints(coco_gt)
    det_list, det_source = _load_dets(dets)
    det_kpts = _det_keypoint_counts(det_list, det_source) if isinstance(det_list, list) else None
    sigmas = _resolve_sigmas(sigmas, num_kpts, coco_gt)
    _check_counts(det_kpts, num_kpts, len(sigmas), det_source)
    _check_gt(coco_gt, num_kpts)
    _check_dets(det_list, coco_gt, num_kpts, det_source)
    if not det_list:
        logger.warning("%s: no detections; every number is 0 (or -1 where undefined)", det_source)
    coco_dt = _coco_dt(coco_gt, det_list)

    evaluator = (fast_eval.FastKeypointCOCOeval if fast else COCOeval)(coco_gt, coco_dt, "keypoints")
    evaluator.params.kpt_oks_sigmas = sigmas
    if image_ids is not None:
        unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()), key=str)
        if unknown:
            raise InputError(f"image ids not in the ground truth {_source(coco_gt)}: {unknown[:10]}")
        evaluator.params.imgIds = list(image_ids)
    with _quiet():
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    params = evaluator.params
    result = KeypointEvalResult(
        stats={name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)},
        precision=evaluator.eval["precision"],
        recall=evaluator.eval["recall"],
        scores=evaluator.eval["scores"],
        oks_thresholds=np.asarray(params.iouThrs),
        recall_thresholds=np.asarray(params.recThrs),
        area_labels=tuple(params.areaRngLbl),
        num_images=len(params.imgIds),
        num_gt=len(coco_gt.getAnnIds(imgIds=params.imgIds, catIds=params.catIds)),
        num_dets=len(coco_dt.getAnnIds(imgIds=params.imgIds, catIds=params.catIds)),
    )
    if per_keypoint:
        result.per_keypoint = _per_keypoint(
            evaluator, coco_gt, coco_dt, sigmas, _keypoint_names(coco_gt, num_kpts)
        )
    logger.info(
        "OKS AP %.4f (AP50 %.4f, AP75 %.4f) on %d images, %d people, %d detections",
        result.stats["AP"], result.stats["AP50"], result.stats["AP75"],
        result.num_images, result.num_gt, result.num_dets,
    )  # fmt: skip
    return result


def _resolve_sigmas(sigmas, num_kpts: int, coco_gt: COCO) -> np.ndarray:
    if sigmas is not None:
        values = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise InputError(f"sigmas must be positive numbers; got {values.tolist()}")
        return values
    try:
        return schema_for(num_kpts).sigmas.copy()
    except ValueError:
        raise InputError(
            f"{_source(coco_gt)}: ground truth has {num_kpts} keypoints and raypose has no default OKS sigmas "
            "for that count (17 or 23); pass sigmas (--sigmas a,b,...) with one value per keypoint"
        ) from None


def _keypoint_category(coco_gt: COCO, params) -> int:
    for cat_id in params.catIds:
        if coco_gt.cats.get(cat_id, {}).get("keypoints"):
            return cat_id
    return params.catIds[0]


def _mean_ap(precision: np.ndarray) -> float:
    values = precision[precision > -1]
    return float(np.mean(values)) if values.size else -1.0


def _per_keypoint(evaluator, coco_gt, coco_dt, sigmas, names) -> dict[str, dict[str, float]]:
    """Per-keypoint AP on single-keypoint projections and mean ks of true positives (see above)."""
    p = evaluator.params
    if not p.catIds:
        return {}
    cat_id = _keypoint_category(coco_gt, p)
    if isinstance(evaluator, fast_eval.FastKeypointCOCOeval):
        data, match = evaluator.category_data[cat_id], evaluator.matches[cat_id]
    else:
        data = fast_eval.prepare_category(coco_gt, coco_dt, p.imgIds, cat_id, p.maxDets[-1], len(sigmas))
        match = fast_eval.match(
            data, fast_eval.pair_oks(data, sigmas), np.asarray(p.areaRng[:1]), p.iouThrs[:1]
        )
    # True positives at OKS 0.5 (index 0), area "all" (index 0).
    tp = match.dt_matched[0, 0] & ~match.dt_ignore[0, 0]
    tp_dt = np.flatnonzero(tp)
    tp_gt = match.dt_gt[0, 0, tp_dt]
    ks = keypoint_similarity_pairs(
        data.dt_kpts[tp_dt, :, :2], data.gt_kpts[tp_gt, :, :2], data.gt_areas[tp_gt], sigmas
    )
    labelled = data.gt_kpts[tp_gt, :, 2] > 0
    all_area = np.asarray(p.areaRng[:1], dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        single = fast_eval.select_keypoint(data, k)
        result = fast_eval.match(single, fast_eval.pair_oks(single, sigmas[k : k + 1]), all_area, p.iouThrs)
        precision, _, _ = fast_eval.accumulate(single, result, p.recThrs, p.maxDets[-1:])
        t50, t75 = np.argmin(np.abs(p.iouThrs - 0.5)), np.argmin(np.abs(p.iouThrs - 0.75))
        count = int(np.count_nonzero(labelled[:, k]))
        out[name] = {
            "AP": _mean_ap(precision),
            "AP50": _mean_ap(precision[t50]),
            "AP75": _mean_ap(precision[t75]),
            "mean_ks": float(np.mean(ks[labelled[:, k], k])) if count else float("nan"),
            "num_labelled": int(np.count_nonzero(~single.gt_ignore)),
        }
    return out


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def outputs_to_coco_results(outputs: list[dict], image_ids: list[int], category_id: int = 1) -> list[dict]:
    """COCO keypoint results from torchvision KeypointRCNN eval outputs.

    Args:
        outputs: one dict per image with ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``keypoints``
            (N, K, 3) ``(x, y, v)`` and optionally ``keypoints_scores`` (N, K); original-image
            pixels; tensors or arrays.
        image_ids: the COCO image id of each output, same length.
        category_id: category written into every result.

    Returns:
        ``{"image_id", "category_id", "bbox" [x, y, w, h], "score", "keypoints" [x, y, 1, ...],
        "keypoint_scores" [K floats]}`` per detection (``keypoint_scores`` only if given).
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs but {len(image_ids)} image ids")
    results: list[dict] = []
    for output, image_id in zip(outputs, image_ids):
        boxes = _to_numpy(output["boxes"]).reshape(-1, 4)
        if len(boxes) == 0:
            continue
        scores = _to_numpy(output["scores"]).reshape(-1)
        kpts = _to_numpy(output["keypoints"]).reshape(len(boxes), -1, 3)
        kp_scores = _to_numpy(output["keypoints_scores"]) if "keypoints_scores" in output else None
        flat = np.concatenate([kpts[..., :2], np.ones_like(kpts[..., :1])], axis=-1).reshape(len(boxes), -1)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        for n in range(len(boxes)):
            det = {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": xywh[n].tolist(),
                "score": float(scores[n]),
                "keypoints": flat[n].tolist(),
            }
            if kp_scores is not None:
                det["keypoint_scores"] = kp_scores.reshape(len(boxes), -1)[n].tolist()
            results.append(det)
    return results


def plot_pr_curves(result: KeypointEvalResult, path: str | Path) -> Path:
    """PNG of precision vs recall, one line per OKS threshold (area all); written atomically."""
    from raypose.evaluation.plots import plot_pr_curves as _plot

    return _plot(result, path)


def write_eval_report(result: KeypointEvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``pr_curves.png`` and ``per_keypoint_ap.png`` into ``out_dir``."""
    from raypose.evaluation.plots import write_eval_report as _write

    return _write(result, out_dir)
