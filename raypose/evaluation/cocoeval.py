"""OKS-mAP evaluation of keypoint detections with pycocotools' numbers.

:func:`evaluate_keypoints` reads and checks both files once (:mod:`raypose.evaluation.inputs`),
then scores the ground truth's person category with the schema's OKS sigmas (17 or 23 keypoints)
and returns a :class:`KeypointEvalResult`: the 10 summary numbers, the precision/recall arrays (PR
curves at OKS 0.50:0.05:0.95) and a per-keypoint breakdown. The default engine works on flat
arrays (:mod:`raypose.evaluation.fast`) and builds no pycocotools object; ``fast=False`` runs
pycocotools' ``COCOeval`` on the same checked inputs. Both give bit-identical numbers.

:func:`evaluate_in_memory` is the per-epoch evaluation: detections as arrays, the ground truth
parsed once per process.

A bad file gives an :class:`InputError` naming the file, the detection index or annotation id,
the field and the fix, instead of a traceback or a wrong number.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools.cocoeval import COCOeval, Params

from raypose.errors import InputError
from raypose.evaluation import fast as fast_eval
from raypose.evaluation import inputs
from raypose.evaluation.inputs import Detections, GroundTruth
from raypose.evaluation.oks import keypoint_similarity_pairs
from raypose.io import load_json, paused_gc
from raypose.schema import schema_for

if TYPE_CHECKING:
    from pycocotools.coco import COCO

logger = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
# The parts of the 23-point schema scored on their own: the body is COCO's 17 points (its AP,
# with COCO's sigmas, is the number torchvision's 65.0 for keypointrcnn_resnet50_fpn is), the
# foot the 6 CMU foot points, on the people who label any.
BODY, FOOT = slice(0, 17), slice(17, 23)
# COCO-WholeBody's foot sigmas, in the schema's order (left big toe, left small toe, left heel,
# then right): `--foot-sigmas wholebody`. raypose's own are 0.062 each (the 23-point oks_map's).
FOOT_SIGMAS = {"wholebody": np.array([0.068, 0.066, 0.066, 0.092, 0.094, 0.094])}


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
    parts: dict[str, float] = field(default_factory=dict)  # body_ap, foot_ap (23-point ground truth); -1 undefined

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
            **{name: _finite_or_none(v) for name, v in self.parts.items()},
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


def load_coco_gt(gt: str | Path | dict | COCO | GroundTruth) -> COCO:
    """A pycocotools ``COCO`` of a validated ground truth (file, dict, ``COCO`` or :class:`GroundTruth`).

    Annotations are copied one level deep (pycocotools writes flags into them).

    Raises:
        InputError: see :func:`raypose.evaluation.inputs.ground_truth_from_dict`.
    """
    from pycocotools.coco import COCO  # here: it imports urllib and http, ~0.1 s the fast path skips

    truth = _ground_truth(gt)
    if truth.dataset is None:
        raise ValueError(f"{truth.source}: a cached ground truth keeps no JSON for pycocotools; use inputs.ground_truth")
    dataset = dict(truth.dataset)
    dataset["annotations"] = [dict(a) for a in dataset["annotations"]]
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def _ground_truth(gt: str | Path | dict | COCO | GroundTruth) -> GroundTruth:
    if isinstance(gt, GroundTruth):
        return gt
    if not isinstance(gt, (str, Path, dict)) and isinstance(getattr(gt, "dataset", None), dict):  # a COCO
        return inputs.ground_truth_from_dict(gt.dataset, "<ground-truth COCO>")
    return inputs.ground_truth(gt)


def _check_counts(det_kpts: int | None, gt_kpts: int, num_sigmas: int, det_source: str) -> None:
    if (det_kpts is None or det_kpts == gt_kpts) and num_sigmas == gt_kpts:
        return
    raise InputError(
        f"detections have {det_kpts if det_kpts is not None else '?'} keypoints, ground truth {gt_kpts}, "
        f"sigmas {num_sigmas}: they must all agree ({det_source}). Evaluate detections from a model with the "
        "ground truth's keypoints (17 = COCO body, 23 = COCO body + foot), and pass --sigmas/sigmas with one "
        "value per keypoint or leave it out to use the schema's"
    )


def _det_keypoint_count(dets: Any) -> int | None:
    """K of the first detection (the loader names any later one that differs), None if unknown."""
    first = dets[0] if isinstance(dets, list) and dets else None
    if isinstance(first, dict) and isinstance(first.get("keypoints"), list) and len(first["keypoints"]) % 3 == 0:
        return len(first["keypoints"]) // 3
    return None


def _load_dets(dets: str | Path | list[dict]) -> tuple[Any, str]:
    if isinstance(dets, (str, Path)):
        return load_json(dets, what="detections file"), str(dets)
    return dets, "<detections>"


def evaluate_keypoints(
    gt: str | Path | dict | COCO | GroundTruth,
    dets: str | Path | list[dict],
    sigmas: np.ndarray | list[float] | None = None,
    image_ids: list[int] | None = None,
    per_keypoint: bool = True,
    fast: bool = True,
    foot_sigmas: str | None = None,
) -> KeypointEvalResult:
    """OKS mAP of COCO keypoint results, numbers identical to pycocotools' ``COCOeval``.

    The ground truth's person category (the one with ``keypoints``) is evaluated; detections of
    other categories are dropped with a warning. Both modes read and check their inputs with
    :mod:`raypose.evaluation.inputs`; the fast one never builds pycocotools objects.

    Args:
        gt: ground-truth COCO file, dict, ``COCO`` or :class:`GroundTruth` (see
            :func:`raypose.evaluation.inputs.cached_ground_truth` to parse a file once per process).
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
        foot_sigmas: ``"wholebody"`` scores ``foot_ap`` with COCO-WholeBody's foot sigmas;
            ``"raypose"`` or None with ``sigmas``' foot entries. With 23-point ground truth the result's ``parts`` hold
            ``body_ap`` (the 17 body points alone, COCO's sigmas) and ``foot_ap``.

    Raises:
        InputError: unreadable files, keypoint counts that disagree, unknown image ids, wrongly typed
            values, ground truth pycocotools would score wrongly, and the like.
    """
    # The parsed files stay alive until the end: without the pause, every collection would walk them.
    with paused_gc():
        truth = _ground_truth(gt)
        det_list, det_source = _load_dets(dets)
        sigmas = _resolve_sigmas(sigmas, truth)
        _check_counts(_det_keypoint_count(det_list), truth.num_keypoints, len(sigmas), det_source)
        found = inputs.detections_from_list(det_list, truth, det_source, keep_records=not fast)
        return evaluate_detections(truth, found, sigmas, image_ids, per_keypoint, fast, foot_sigmas)


def evaluate_detections(
    truth: GroundTruth,
    found: Detections,
    sigmas: np.ndarray | None = None,
    image_ids: list[int] | None = None,
    per_keypoint: bool = False,
    fast: bool = True,
    foot_sigmas: str | None = None,
) -> KeypointEvalResult:
    """:func:`evaluate_keypoints` on inputs already checked by :mod:`raypose.evaluation.inputs`.

    The in-training evaluation calls this with a cached :class:`GroundTruth` and the gathered
    detections, so nothing is parsed again. ``fast=False`` needs ``found.records``.
    """
    sigmas = _resolve_sigmas(sigmas, truth)
    result = _evaluate(truth, found, sigmas, image_ids, per_keypoint, fast)
    result.parts = part_aps(truth, found, sigmas, image_ids, foot_sigmas)
    logger.info(
        "OKS AP %.4f (AP50 %.4f, AP75 %.4f)%s on %d images, %d people, %d detections",
        result.stats["AP"], result.stats["AP50"], result.stats["AP75"],
        "".join(f", {k} {v:.4f}" for k, v in result.parts.items()), result.num_images, result.num_gt, result.num_dets,
    )  # fmt: skip
    return result


def part_aps(truth: GroundTruth, found: Detections, sigmas: np.ndarray, image_ids: list[int] | None = None,
             foot_sigmas: str | None = None) -> dict[str, float]:
    """``body_ap`` and ``foot_ap`` of 23-point detections ({} for other schemas): the AP of files
    holding only the 17 body points (exactly pycocotools' AP on them, COCO's sigmas) or only the
    6 foot points (people who label none are ignored; -1 when nobody labels any)."""
    if truth.num_keypoints != 23:
        return {}
    if foot_sigmas not in (None, "raypose", *FOOT_SIGMAS):
        raise ValueError(f"foot_sigmas {foot_sigmas!r}: use raypose (None), or one of {', '.join(FOOT_SIGMAS)}")
    foot = FOOT_SIGMAS[foot_sigmas] if foot_sigmas in FOOT_SIGMAS else sigmas[FOOT]
    return {
        name: _evaluate(*inputs.keypoint_subset(truth, found, part), part_sigmas, image_ids).stats["AP"]
        for name, part, part_sigmas in (("body_ap", BODY, schema_for(17).sigmas), ("foot_ap", FOOT, foot))
    }


def _evaluate(truth: GroundTruth, found: Detections, sigmas: np.ndarray, image_ids: list[int] | None = None,
              per_keypoint: bool = False, fast: bool = True) -> KeypointEvalResult:
    if len(found.scores) == 0:
        logger.warning("%s: no detections; every number is 0 (or -1 where undefined)", found.source)
    params = Params(iouType="keypoints")
    params.kpt_oks_sigmas = sigmas
    params.catIds = [truth.category_id]
    params.imgIds = truth.image_ids.tolist() if image_ids is None else sorted(set(image_ids))
    data, kept = inputs.category_data(truth, found, image_ids, params.maxDets[-1])
    pairs = fast_eval.pair_oks(data, sigmas, min_oks=float(np.min(params.iouThrs)))
    match = fast_eval.match(data, pairs, np.asarray(params.areaRng), params.iouThrs)
    if fast:
        precision, recall, scores = fast_eval.accumulate(data, match, params.recThrs, params.maxDets)
        evaluated = {"precision": precision[:, :, None], "recall": recall[:, None], "scores": scores[:, :, None]}
        stats = _summarize(params, evaluated)
    else:
        evaluated, stats = _pycocotools(truth, found, params)
    result = KeypointEvalResult(
        stats={name: float(v) for name, v in zip(STAT_NAMES, stats)},
        precision=evaluated["precision"],
        recall=evaluated["recall"],
        scores=evaluated["scores"],
        oks_thresholds=np.asarray(params.iouThrs),
        recall_thresholds=np.asarray(params.recThrs),
        area_labels=tuple(params.areaRngLbl),
        num_images=data.num_images,
        num_gt=len(data.gt_ids),
        num_dets=_num_dets_on(truth, found, image_ids),
    )
    if per_keypoint:
        result.per_keypoint = _per_keypoint(data, match, params, sigmas, truth.keypoint_names)
    return result


def _num_dets_on(truth: GroundTruth, found: Detections, image_ids: list[int] | None) -> int:
    if image_ids is None:
        return len(found.scores)
    on = np.isin(truth.image_ids[found.image_pos], np.asarray(list(image_ids), dtype=np.int64))
    return int(np.count_nonzero(on))


def _summarize(params: Params, evaluated: dict[str, np.ndarray]) -> np.ndarray:
    """pycocotools' own ``summarize`` on precision/recall arrays (T, R, K, A, M) / (T, K, A, M)."""
    summary = COCOeval(iouType="keypoints")
    summary.params = params
    summary.eval = dict(evaluated, params=params)
    with _quiet():
        summary.summarize()
    return summary.stats


def _pycocotools(truth: GroundTruth, found: Detections, params: Params) -> tuple[dict, np.ndarray]:
    if found.records is None:
        raise ValueError("fast=False needs detections loaded with keep_records=True")
    coco_gt = load_coco_gt(truth)
    from pycocotools.coco import COCO

    with _quiet():
        if found.records:
            # loadRes writes id/area/bbox into the dicts: give it copies.
            coco_dt = coco_gt.loadRes([dict(d) for d in found.records])
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                               "categories": coco_gt.dataset["categories"]}  # fmt: skip
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = params.kpt_oks_sigmas
        evaluator.params.catIds = list(params.catIds)
        evaluator.params.imgIds = list(params.imgIds)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.eval, evaluator.stats


def _resolve_sigmas(sigmas, truth: GroundTruth) -> np.ndarray:
    if sigmas is not None:
        values = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise InputError(f"sigmas must be positive numbers; got {values.tolist()}")
        return values
    try:
        return schema_for(truth.num_keypoints).sigmas.copy()
    except ValueError:
        raise InputError(
            f"{truth.source}: ground truth has {truth.num_keypoints} keypoints and raypose has no default OKS "
            "sigmas for that count (17 or 23); pass sigmas (--sigmas a,b,...) with one value per keypoint"
        ) from None


def _mean_ap(precision: np.ndarray) -> float:
    values = precision[precision > -1]
    return float(np.mean(values)) if values.size else -1.0


def _per_keypoint(
    data: fast_eval.CategoryData, match: fast_eval.MatchResult, p: Params, sigmas: np.ndarray, names
) -> dict[str, dict[str, float]]:
    """Per-keypoint AP on single-keypoint projections and mean ks of true positives (see above)."""
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
        pairs = fast_eval.pair_oks(single, sigmas[k : k + 1], min_oks=float(np.min(p.iouThrs)))
        result = fast_eval.match(single, pairs, all_area, p.iouThrs)
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


def outputs_to_arrays(outputs: list[dict], image_ids: list[int]) -> dict[str, np.ndarray]:
    """The detections of :func:`outputs_to_coco_results` as arrays (no per-detection dicts).

    Small to pickle (``all_gather_object``) and read by :func:`evaluate_in_memory`; the numbers are
    the same as evaluating ``outputs_to_coco_results(outputs, image_ids)``.

    Returns:
        ``{"image_ids": (N,) int64, "keypoints": (N, K, 3) float64 (x, y, 1), "scores": (N,),
        "boxes": (N, 4) xywh}``.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs but {len(image_ids)} image ids")
    boxes = [_to_numpy(output["boxes"]).reshape(-1, 4) for output in outputs]
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    if not counts.any():
        return {"image_ids": np.zeros(0, np.int64), "keypoints": np.zeros((0, 0, 3)), "scores": np.zeros(0),
                "boxes": np.zeros((0, 4))}  # fmt: skip
    # One concatenation per field, then the arithmetic once: per-image numpy calls dominate otherwise.
    xyxy = np.concatenate(boxes)
    kpts = np.concatenate(
        [_to_numpy(o["keypoints"]).reshape(n, -1, 3) for o, n in zip(outputs, counts.tolist()) if n]
    )
    kpts[..., 2] = 1.0
    return {
        "image_ids": np.repeat(np.asarray(image_ids, dtype=np.int64), counts),
        "keypoints": kpts,
        "scores": np.concatenate([_to_numpy(o["scores"]).reshape(-1) for o, n in zip(outputs, counts) if n]),
        "boxes": np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1),
    }


def evaluate_in_memory(
    gt: str | Path | GroundTruth,
    parts: list[dict[str, np.ndarray]],
    image_ids: list[int] | None = None,
    sigmas: np.ndarray | None = None,
    foot_sigmas: str | None = None,
) -> KeypointEvalResult:
    """The in-training evaluation: OKS mAP of :func:`outputs_to_arrays` parts (one per rank, in rank
    order), against a ground-truth file parsed once per process (:func:`inputs.cached_ground_truth`).

    Numbers equal ``evaluate_keypoints(gt, results, image_ids=image_ids, per_keypoint=False)`` on the
    same detections as COCO dicts; at COCO-val scale it takes a fraction of a second.
    """
    truth = gt if isinstance(gt, GroundTruth) else inputs.cached_ground_truth(gt)
    parts = [p for p in parts if len(p["image_ids"])]
    if parts:
        merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    else:
        k = truth.num_keypoints
        merged = {"image_ids": np.zeros(0, np.int64), "keypoints": np.zeros((0, k, 3)), "scores": np.zeros(0)}
    found = inputs.detections_from_arrays(truth, **merged)
    return evaluate_detections(truth, found, sigmas, image_ids, per_keypoint=False, foot_sigmas=foot_sigmas)


def plot_pr_curves(result: KeypointEvalResult, path: str | Path) -> Path:
    """PNG of precision vs recall, one line per OKS threshold (area all); written atomically."""
    from raypose.evaluation.plots import plot_pr_curves as _plot

    return _plot(result, path)


def write_eval_report(result: KeypointEvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``pr_curves.png`` and ``per_keypoint_ap.png`` into ``out_dir``."""
    from raypose.evaluation.plots import write_eval_report as _write

    return _write(result, out_dir)
