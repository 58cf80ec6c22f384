"""The vectorised evaluator gives pycocotools' precision/recall/scores arrays bit for bit."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raypose.evaluation.fast import FastKeypointCOCOeval
from raypose.evaluation.synthetic import synthetic_keypoint_case
from raypose.schema import schema_for


def _evaluate(cls, gt: dict, dets: list[dict], sigmas, img_ids=None, max_dets=None) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = cls(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        if img_ids is not None:
            ev.params.imgIds = img_ids
        if max_dets is not None:
            ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        if max_dets is None:
            ev.summarize()
    return ev


def _assert_identical(ref: COCOeval, ours: COCOeval) -> None:
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(ref.eval[key], ours.eval[key]), key
    assert np.array_equal(np.asarray(ref.stats), np.asarray(ours.stats))


@pytest.mark.parametrize("seed", range(6))
def test_matches_pycocotools_on_random_cases(seed):
    k = (17, 23)[seed % 2]
    gt, dets = synthetic_keypoint_case(
        num_images=40, num_keypoints=k, seed=seed, integer_coords=seed % 3 == 0
    )
    sigmas = schema_for(k).sigmas
    ref, ours = _evaluate(COCOeval, gt, dets, sigmas), _evaluate(FastKeypointCOCOeval, gt, dets, sigmas)
    _assert_identical(ref, ours)
    # The case exercises what it should: crowds, unlabelled people, > 20 detections, valid numbers.
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert any(a["num_keypoints"] == 0 and not a["iscrowd"] for a in gt["annotations"])
    per_image = np.bincount([d["image_id"] for d in dets])
    assert per_image.max() > 20
    assert 0 < ours.stats[0] < 1


def test_matches_pycocotools_with_perfect_and_duplicate_detections():
    gt, _ = synthetic_keypoint_case(num_images=15, seed=7)
    dets = []
    for ann in gt["annotations"]:
        if ann["num_keypoints"] and not ann["iscrowd"]:
            x, y, w, h = ann["bbox"]
            det = {"image_id": ann["image_id"], "category_id": 1, "keypoints": ann["keypoints"], "score": 0.5}
            dets += [dict(det, bbox=[x, y, w, h]), dict(det, bbox=[x, y, w, h], score=0.5)]  # tied duplicates
    ref, ours = _evaluate(COCOeval, gt, dets, schema_for(17).sigmas), None
    ours = _evaluate(FastKeypointCOCOeval, gt, dets, schema_for(17).sigmas)
    _assert_identical(ref, ours)
    assert ours.stats[6] == 1.0  # AR50: every labelled person found


def test_matches_pycocotools_on_edge_cases():
    gt, dets = synthetic_keypoint_case(num_images=30, seed=11, crowd_fraction=0.2)
    gt["annotations"][0]["id"] = 0  # pycocotools treats a match to id 0 as no match
    gt["categories"].append({"id": 2, "name": "other", "keypoints": list(schema_for(17).names)})
    for ann in gt["annotations"][1::5]:
        ann["category_id"] = 2
    for det in dets[::4]:
        det["category_id"] = 2
    sigmas = schema_for(17).sigmas
    _assert_identical(
        _evaluate(COCOeval, gt, dets, sigmas), _evaluate(FastKeypointCOCOeval, gt, dets, sigmas)
    )
    subset = [img["id"] for img in gt["images"][::3]]
    _assert_identical(
        _evaluate(COCOeval, gt, dets, sigmas, img_ids=subset),
        _evaluate(FastKeypointCOCOeval, gt, dets, sigmas, img_ids=subset),
    )
    for key in ("precision", "recall", "scores"):
        ref = _evaluate(COCOeval, gt, dets, sigmas, max_dets=[3, 20]).eval[key]
        assert np.array_equal(
            ref, _evaluate(FastKeypointCOCOeval, gt, dets, sigmas, max_dets=[3, 20]).eval[key]
        )


@pytest.mark.parametrize("min_oks", [0.5, 0.1, 0.9])
def test_pair_oks_with_a_floor_keeps_exactly_the_pairs_above_it(min_oks):
    """The box bound and the estimate only skip work: the kept pairs and their OKS are bit for bit
    those of the full computation at or above the floor, and matching gives the same result."""
    from raypose.evaluation.fast import match, pair_oks
    from raypose.evaluation.inputs import category_data, detections_from_list, ground_truth_from_dict

    gt, dets = synthetic_keypoint_case(num_images=60, num_keypoints=23, seed=5, crowd_fraction=0.15)
    truth = ground_truth_from_dict(gt, "gt")
    data, _ = category_data(truth, detections_from_list(dets, truth))
    sigmas = schema_for(23).sigmas
    every = pair_oks(data, sigmas)
    floored = pair_oks(data, sigmas, min_oks=min_oks)
    above = every[2] >= min_oks
    assert 0 < above.sum() < len(above)
    for full, kept in zip(every, floored):
        assert np.array_equal(full[above], kept)
    areas = np.array([[0, 1e10], [32**2, 96**2], [96**2, 1e10]])
    thresholds = np.linspace(max(min_oks, 0.5), 0.95, 10)
    a, b = match(data, every, areas, thresholds), match(data, floored, areas, thresholds)
    assert np.array_equal(a.dt_gt, b.dt_gt) and np.array_equal(a.dt_ignore, b.dt_ignore)
