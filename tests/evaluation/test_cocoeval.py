"""evaluate_keypoints: pycocotools' numbers, per-keypoint breakdown, input errors, results, report."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raypose.errors import InputError
from raypose.evaluation.cocoeval import (
    STAT_NAMES,
    evaluate_keypoints,
    outputs_to_coco_results,
    plot_pr_curves,
    write_eval_report,
)
from raypose.evaluation.synthetic import synthetic_keypoint_case
from raypose.schema import COCO17, COCO23


def _pycocotools_stats(gt, dets, sigmas, img_ids=None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _perfect_dets(gt: dict, score: float = 0.9) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": 1,
            "keypoints": a["keypoints"],
            "score": score,
            "bbox": a["bbox"],
        }
        for a in gt["annotations"]
        if a["num_keypoints"] and not a["iscrowd"]
    ]


@pytest.mark.parametrize("k", [17, 23])
def test_stats_equal_pycocotools_fast_and_slow(k, tmp_path):
    gt, dets = synthetic_keypoint_case(num_images=30, num_keypoints=k, seed=k)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    ref = _pycocotools_stats(gt, dets, (COCO17 if k == 17 else COCO23).sigmas)
    fast = evaluate_keypoints(tmp_path / "gt.json", tmp_path / "dets.json")
    slow = evaluate_keypoints(gt, dets, fast=False, per_keypoint=False)
    assert list(fast.stats) == list(STAT_NAMES)
    assert [fast.stats[n] for n in STAT_NAMES] == ref.tolist()
    assert slow.stats == fast.stats
    assert fast.precision.shape == (10, 101, 1, 3, 1) and fast.recall.shape == (10, 1, 3, 1)
    assert fast.num_images == 30 and fast.num_gt == len(gt["annotations"]) and fast.num_dets == len(dets)
    assert len(fast.per_keypoint) == k and slow.per_keypoint == {}


def test_image_ids_and_custom_sigmas():
    gt, dets = synthetic_keypoint_case(num_images=20, seed=3)
    ids = [img["id"] for img in gt["images"][:8]]
    sigmas = np.full(17, 0.05)
    result = evaluate_keypoints(gt, dets, sigmas=sigmas, image_ids=ids, per_keypoint=False)
    assert [result.stats[n] for n in STAT_NAMES] == _pycocotools_stats(gt, dets, sigmas, ids).tolist()
    assert result.num_images == 8


def test_perfect_detections_score_one_and_shifted_keypoint_lowers_mean_ks():
    gt, _ = synthetic_keypoint_case(num_images=10, seed=5)
    dets = _perfect_dets(gt)
    result = evaluate_keypoints(gt, dets)
    assert result.stats["AP"] == 1.0 and result.stats["AR"] == 1.0
    dets[0]["keypoints"] = list(dets[0]["keypoints"])
    ann = next(a for a in gt["annotations"] if a["num_keypoints"] and not a["iscrowd"])
    nose_labelled = ann["keypoints"][2] > 0
    dets[0]["keypoints"][0] += 3.0  # move the first person's nose 3 px
    result = evaluate_keypoints(gt, dets)
    nose = result.per_keypoint["nose"]
    if nose_labelled:
        expected_ks = np.exp(-9.0 / (2 * COCO17.sigmas[0]) ** 2 / (ann["area"] + np.spacing(1)) / 2)
        n = nose["num_labelled"]
        assert nose["mean_ks"] == pytest.approx((expected_ks + n - 1) / n, rel=1e-9)
    assert result.per_keypoint["left_eye"]["mean_ks"] == 1.0


def test_per_keypoint_ap_is_pycocotools_ap_of_the_single_keypoint_projection():
    gt, dets = synthetic_keypoint_case(num_images=25, seed=9)
    result = evaluate_keypoints(gt, dets)
    for k in (0, 9, 16):
        proj_gt = copy.deepcopy(gt)
        for a in proj_gt["annotations"]:
            a["keypoints"] = a["keypoints"][3 * k : 3 * k + 3]
            a["num_keypoints"] = int(a["keypoints"][2] > 0)
        proj_dets = [dict(d, keypoints=d["keypoints"][3 * k : 3 * k + 3]) for d in dets]
        ref = _pycocotools_stats(proj_gt, proj_dets, COCO17.sigmas[k : k + 1])
        values = result.per_keypoint[COCO17.names[k]]
        assert values["AP"] == ref[0] and values["AP50"] == ref[1] and values["AP75"] == ref[2]
    assert len({v["AP"] for v in result.per_keypoint.values()}) > 5


def test_keypoint_count_mismatch_names_each_side():
    gt, dets = synthetic_keypoint_case(num_images=5, num_keypoints=23, seed=1)
    short = [dict(d, keypoints=d["keypoints"][: 17 * 3]) for d in dets]
    with pytest.raises(InputError, match="detections have 17 keypoints, ground truth 23, sigmas 23"):
        evaluate_keypoints(gt, short)
    with pytest.raises(InputError, match="detections have 23 keypoints, ground truth 23, sigmas 17"):
        evaluate_keypoints(gt, dets, sigmas=COCO17.sigmas)


def test_bad_inputs_raise_input_errors(tmp_path):
    gt, dets = synthetic_keypoint_case(num_images=5, seed=2)
    with pytest.raises(InputError, match="not in the ground truth.*99999"):
        evaluate_keypoints(gt, dets + [dict(dets[0], image_id=99999)])
    broken = copy.deepcopy(gt)
    del broken["annotations"][2]["num_keypoints"]
    with pytest.raises(InputError, match=f"annotation id {broken['annotations'][2]['id']} .*num_keypoints"):
        evaluate_keypoints(broken, dets)
    with pytest.raises(InputError, match="not found"):
        evaluate_keypoints(tmp_path / "missing.json", dets)
    with pytest.raises(InputError, match="non-finite"):
        evaluate_keypoints(gt, [dict(dets[0], score=float("nan"))])


def test_empty_detections_give_zeros_with_warning(caplog):
    gt, _ = synthetic_keypoint_case(num_images=5, seed=4)
    with caplog.at_level(logging.WARNING):
        result = evaluate_keypoints(gt, [])
    assert all(result.stats[n] in (0.0, -1.0) for n in STAT_NAMES) and result.stats["AP"] == 0.0
    assert "no detections" in caplog.text
    assert result.stats == evaluate_keypoints(gt, [], fast=False).stats


def test_outputs_to_coco_results_round_trip():
    gt, _ = synthetic_keypoint_case(num_images=6, seed=6, crowd_fraction=0.0, unlabelled_fraction=0.0)
    outputs, image_ids = [], []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        kpts = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float64).reshape(len(anns), 17, 3)
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        outputs.append(
            {
                "boxes": boxes,
                "scores": torch.linspace(0.9, 0.5, len(anns)),
                "keypoints": kpts,
                "keypoints_scores": torch.arange(len(anns) * 17, dtype=torch.float32).reshape(-1, 17),
            }
        )
        image_ids.append(img["id"])
    results = outputs_to_coco_results(outputs, image_ids, category_id=1)
    assert len(results) == len(gt["annotations"])
    first = results[0]
    ann = next(a for a in gt["annotations"] if a["image_id"] == first["image_id"])
    assert first["bbox"] == pytest.approx(ann["bbox"])
    assert first["keypoints"][2::3] == [1.0] * 17 and first["keypoints"][0::3] == pytest.approx(
        ann["keypoints"][0::3]
    )
    assert first["keypoint_scores"] == list(map(float, range(17)))
    json.dumps(results)  # JSON-able
    # Labelled x, y are exact; unlabelled keypoints of GT are (0, 0), ignored by OKS: AP must be 1.
    assert evaluate_keypoints(gt, results, per_keypoint=False).stats["AP"] == 1.0
    with pytest.raises(ValueError):
        outputs_to_coco_results(outputs, image_ids[:-1])


def test_report_files(tmp_path):
    gt, dets = synthetic_keypoint_case(num_images=10, seed=8)
    result = evaluate_keypoints(gt, dets)
    paths = write_eval_report(result, tmp_path / "report")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["stats"] == pytest.approx(result.stats)
    assert set(metrics["pr_curves"]["precision"]) == {f"{t:.2f}" for t in np.linspace(0.5, 0.95, 10)}
    assert len(metrics["pr_curves"]["recall_thresholds"]) == 101
    for key in ("pr_curves", "per_keypoint_ap"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "metrics.json", "per_keypoint_ap.png", "pr_curves.png",
    ]  # fmt: skip
    assert plot_pr_curves(result, tmp_path / "pr.png").stat().st_size > 1000


def _part_files(gt: dict, dets: list[dict], keep: slice, names: list[str]) -> tuple[dict, list[dict]]:
    """The files a user would write for the keypoints ``keep`` only: num_keypoints recounted."""
    def cut(flat: list) -> list:
        return [v for i in range(len(flat) // 3)[keep] for v in flat[3 * i: 3 * i + 3]]

    part_gt = copy.deepcopy(gt)
    for ann in part_gt["annotations"]:
        ann["keypoints"] = cut(ann["keypoints"])
        ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
    part_gt["categories"][0]["keypoints"] = names
    part_gt["categories"][0].pop("skeleton", None)
    return part_gt, [{**d, "keypoints": cut(d["keypoints"])} for d in copy.deepcopy(dets)]


@pytest.mark.parametrize("with_boxes", [True, False])
def test_body_and_foot_ap_are_pycocotools_ap_on_files_of_those_points(with_boxes):
    """body_ap: COCO's 17 points with COCO's sigmas, exactly what pycocotools gives for a
    17-point file (the number torchvision's 65.0 is); foot_ap: the 6 foot points, on the people
    who label any, with raypose's or COCO-WholeBody's sigmas."""
    from raypose.evaluation.cocoeval import FOOT_SIGMAS

    gt, dets = synthetic_keypoint_case(num_images=40, num_keypoints=23, seed=5)
    for n, ann in enumerate(gt["annotations"]):
        if n % 3 == 0:  # no foot labels, as most of COCO outside the CMU foot subset
            ann["keypoints"][51:] = [0] * 18
            ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
    if not with_boxes:  # areas then come from the keypoints' extent, which the cut changes
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    result = evaluate_keypoints(gt, dets)
    body_gt, body_dets = _part_files(gt, dets, slice(0, 17), list(COCO17.names))
    assert result.parts["body_ap"] == _pycocotools_stats(body_gt, body_dets, COCO17.sigmas)[0]
    foot_gt, foot_dets = _part_files(gt, dets, slice(17, 23), list(COCO23.names[17:]))
    assert result.parts["foot_ap"] == _pycocotools_stats(foot_gt, foot_dets, COCO23.sigmas[17:])[0]
    wholebody = evaluate_keypoints(gt, dets, foot_sigmas="wholebody", per_keypoint=False)
    assert wholebody.parts["foot_ap"] == _pycocotools_stats(foot_gt, foot_dets, FOOT_SIGMAS["wholebody"])[0]
    assert wholebody.parts["body_ap"] == result.parts["body_ap"] and wholebody.stats == result.stats
    assert len({result.stats["AP"], result.parts["body_ap"], result.parts["foot_ap"]}) == 3  # three numbers
    assert result.to_dict()["body_ap"] == result.parts["body_ap"]
    assert evaluate_keypoints(*synthetic_keypoint_case(num_images=5, seed=1)).parts == {}  # 17 points: AP is body AP
