"""Progressive correction: AP after each cumulative step, checked against plain pycocotools."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from raypose.analysis.data import analysis_input_from_dicts
from raypose.analysis.progressive import (
    KEYPOINT_STEPS,
    classify_input,
    correction_stages,
    evaluate_category,
    progressive_correction,
)
from raypose.analysis.rescoring import image_one_to_one_scores, one_to_one_scores
from raypose.evaluation.cocoeval import evaluate_keypoints
from raypose.evaluation.fast import pair_oks
from raypose.schema import schema_for
from tests.analysis.test_error_types import coco, det, gt_ann, ks_offset, make_scene, template

STEP_NAMES = ["original", *KEYPOINT_STEPS, "score", "background_fp", "false_negative"]


def stage_as_coco(inp, stage, gt: dict) -> tuple[dict, list[dict]]:
    """A stage's arrays back as COCO files: ignored people get ``num_keypoints = 0``."""
    gt = copy.deepcopy(gt)
    ignored_ids = {int(i) for i in stage.gt_ids[stage.gt_ignore]}
    for ann in gt["annotations"]:
        if ann["id"] in ignored_ids and not ann.get("iscrowd"):
            ann["num_keypoints"] = 0
    dets = [
        {
            "image_id": int(inp.image_ids[i]),
            "category_id": 1,
            "keypoints": k.reshape(-1).tolist(),
            "score": float(s),
        }
        for i, k, s in zip(stage.dt_img, stage.dt_kpts, stage.dt_scores)
    ]
    return gt, dets


def random_case(num_kpts: int, seed: int) -> tuple[dict, list[dict]]:
    """Several images of people with every kind of error, duplicates, misses and hallucinations."""
    rng = np.random.default_rng(seed)
    schema = schema_for(num_kpts)
    images, anns, dets = [], [], []
    for image_id in range(1, 9):
        images.append((image_id, 640, 480))
        for p in range(int(rng.integers(0, 4))):
            scale = rng.uniform(0.3, 1.0)
            kpts = template(num_kpts, (rng.uniform(0, 300), rng.uniform(0, 200)))
            kpts[:, :2] = kpts[:, :2] * scale
            kpts[rng.random(num_kpts) < 0.15, :] = 0
            area = float(rng.uniform(500, 6000))
            anns.append(gt_ann(image_id * 10 + p, image_id, kpts, area=area))
            if rng.random() < 0.15:
                continue  # a missed person
            for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate
                d = kpts.copy()
                d[:, :2] += rng.normal(0, rng.uniform(1, 15), (num_kpts, 2))
                if rng.random() < 0.3:
                    d = d[schema.flip_index]  # left/right confusion
                d[rng.random(num_kpts) < 0.1, :2] += 200
                dets.append(det(image_id, d, float(rng.uniform(0.05, 1.0)), kp_scores=False))
        for _ in range(int(rng.integers(0, 2))):
            d = template(num_kpts, (rng.uniform(0, 300), rng.uniform(0, 200)))
            dets.append(det(image_id, d, float(rng.uniform(0.05, 1.0)), kp_scores=False))
    return coco(num_kpts, images, anns), dets


@pytest.mark.parametrize("num_kpts,seed", [(17, 0), (23, 1)])
def test_every_stage_matches_pycocotools(num_kpts, seed):
    gt, dets = random_case(num_kpts, seed)
    inp = analysis_input_from_dicts(gt, dets)
    stages = correction_stages(inp, classify_input(inp))
    assert [s.name for s in stages] == STEP_NAMES
    aps = []
    for name, stage, run in ((s.name, s.data, s.result) for s in stages):
        mine = evaluate_category(stage, inp.sigmas)
        assert (run.ap, run.ap50) == (mine.ap, mine.ap50), name  # the run's reused OKS pairs change nothing
        stage_gt, stage_dets = stage_as_coco(inp, stage, gt)
        ref = evaluate_keypoints(stage_gt, stage_dets, per_keypoint=False, fast=False).stats
        assert mine.ap == ref["AP"], name
        assert mine.ap50 == ref["AP50"], name
        assert mine.ap75 == ref["AP75"], name
        aps.append(mine.ap50)
    # after removing background false positives and false negatives every detection is a
    # true positive at OKS 0.5 and every person is found
    assert aps[-1] == pytest.approx(1.0)
    assert aps[0] < 1.0


def single_person(num_kpts: int, fault: str) -> tuple[dict, list[dict]]:
    """One person, one detection whose only errors are of kind ``fault`` (6 keypoints of it)."""
    schema = schema_for(num_kpts)
    a = template(num_kpts, (100, 100))
    b = template(num_kpts, (1100, 100))
    d = a.copy()
    lefts = [left for left, _ in schema.flip_pairs][:6]
    for k in lefts:
        if fault == "miss":
            d[k, 0] += 400
        elif fault == "swap":
            d[k, :2] = b[k, :2]
        elif fault == "inversion":
            d[k, :2] = a[schema.flip_index[k], :2]
        elif fault == "jitter":
            d[k, 0] += ks_offset(0.55, schema.sigmas[k])
    gt = coco(num_kpts, [(1, 1600, 600)], [gt_ann(1, 1, a), gt_ann(2, 1, b)])
    return gt, [det(1, d, 0.9), det(1, b.copy(), 0.5)]


@pytest.mark.parametrize("num_kpts", [17, 23])
@pytest.mark.parametrize("fault", ["miss", "swap", "inversion", "jitter"])
def test_gain_goes_to_the_step_of_the_error(num_kpts, fault):
    gt, dets = single_person(num_kpts, fault)
    inp = analysis_input_from_dicts(gt, dets)
    result = progressive_correction(inp)
    counts = result.errors.counts()
    assert counts[fault] == 6
    assert sum(counts.values()) - counts["good"] == 6
    gains = {s.name: s.gain_ap for s in result.steps}
    assert gains[fault] > 0.05
    for other in KEYPOINT_STEPS:
        if other != fault:
            assert gains[other] == 0.0
    assert result.steps[0].gain_ap == 0.0


def test_optimal_rescoring_puts_the_best_detection_first():
    num_kpts = 17
    schema = schema_for(num_kpts)
    a = template(num_kpts, (100, 100))
    rough = a.copy()
    rough[:, 0] += [ks_offset(0.6, s) for s in schema.sigmas]  # OKS 0.6
    gt = coco(num_kpts, [(1, 800, 600)], [gt_ann(1, 1, a)])
    inp = analysis_input_from_dicts(gt, [det(1, rough, 0.9), det(1, a.copy(), 0.2)])
    scores = one_to_one_scores(inp.data, pair_oks(inp.data, inp.sigmas))
    assert scores == pytest.approx([0.0, 1.0])  # detections in score order: rough, exact
    result = progressive_correction(inp)
    by_name = {s.name: s.result for s in result.steps}
    assert by_name["original"].ap < 1.0
    assert by_name["score"].ap == pytest.approx(1.0)


def test_rescoring_with_ignored_people_stays_below_assigned_scores():
    oks = np.array([[0.9, 0.3], [0.2, 0.8], [0.1, 0.6]])
    scores = image_one_to_one_scores(oks, np.array([False, True]))
    assert scores[0] == 0.9
    assert scores[1] == pytest.approx(0.8 * 0.9)
    assert scores[2] == pytest.approx(0.6 * 0.9)
    assert scores[1:].max() < scores[0]


@pytest.mark.parametrize("num_kpts", [17, 23])
def test_scene_lists_background_and_missed_people(num_kpts):
    gt, dets, _ = make_scene(num_kpts)
    result = progressive_correction(analysis_input_from_dicts(gt, dets))
    assert result.background_fp.tolist() == [False, False, True]
    assert result.false_negative.tolist() == [False, False, True]
    by_name = {s.name: s.result for s in result.steps}
    # rescoring already ranks the background detection last (score = its OKS, ~0), so removing
    # it costs nothing and gains nothing; finding C is what is left
    assert by_name["background_fp"].ap == by_name["score"].ap
    assert by_name["false_negative"].ap > by_name["background_fp"].ap
    assert by_name["false_negative"].ap50 == pytest.approx(1.0)
