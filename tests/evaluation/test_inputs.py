"""raypose.evaluation.inputs: one validation for eval (fast and --slow) and analyze.

Every bad input is refused (InputError, exit 2 in the CLI) by all three readers with the same
message, which names the file, the detection index or annotation id, and the field.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from raypose.analysis.data import analysis_input_from_dicts
from raypose.cli.main import main
from raypose.errors import InputError
from raypose.evaluation.cocoeval import STAT_NAMES, evaluate_detections, evaluate_keypoints
from raypose.evaluation.inputs import cached_ground_truth, detections_from_list, ground_truth
from raypose.evaluation.synthetic import synthetic_keypoint_case
from raypose.schema import COCO17

READERS = {
    "eval": lambda gt, dets: evaluate_keypoints(gt, dets, per_keypoint=False),
    "eval --slow": lambda gt, dets: evaluate_keypoints(gt, dets, per_keypoint=False, fast=False),
    "analyze": lambda gt, dets: analysis_input_from_dicts(gt, dets, "gt.json", "dets.json"),
}


@pytest.fixture(scope="module")
def case():
    return synthetic_keypoint_case(num_images=12, seed=21)


def _reference(gt: dict, dets: list[dict], cat_ids=None) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "keypoints")
        ev.params.kpt_oks_sigmas = COCO17.sigmas
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats.tolist()


# --- issue 15 item 6: wrongly typed detections -------------------------------------------------

BAD_DETECTIONS = [
    (
        "keypoints",
        lambda d: d["keypoints"][:4] + ["1.5"] + d["keypoints"][5:],
        "keypoints must hold numbers only, got '1.5'",
    ),
    (
        "keypoints",
        lambda d: d["keypoints"][:1] + [None] + d["keypoints"][2:],
        "keypoints must hold numbers only, got None",
    ),
    (
        "keypoints",
        lambda d: [d["keypoints"][i : i + 3] for i in range(0, 51, 3)],
        "keypoints must be a flat list of 51",
    ),
    (
        "keypoints",
        lambda d: d["keypoints"][:-3],
        "keypoints must be a flat list of 51 numbers .* got 48 values",
    ),
    ("keypoints", lambda d: "0 0 1", "keypoints must be a flat list of 51"),
    ("score", lambda d: "0.5", "score must be a number, got '0.5'"),
    ("score", lambda d: None, "score must be a number, got None"),
    ("score", lambda d: True, "score must be a number, got True"),
    ("score", lambda d: [0.5], "score must be a number, got \\[0.5\\]"),
    ("image_id", lambda d: str(d["image_id"]), "image_id must be an integer, got '"),
    ("image_id", lambda d: d["image_id"] + 0.5, "image_id must be an integer, got "),
    ("bbox", lambda d: [0, 0, "10", 10], "bbox must hold numbers only, got '10'"),
]


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("field,corrupt,message", BAD_DETECTIONS)
def test_wrongly_typed_detection_is_refused_with_its_index(case, reader, field, corrupt, message):
    gt, dets = case
    dets = copy.deepcopy(dets)
    n = 7
    dets[n][field] = corrupt(dets[n])
    source = "dets.json" if reader == "analyze" else "<detections>"
    with pytest.raises(InputError, match=f"^{source}: detection {n}: {message}"):
        READERS[reader](gt, dets)


@pytest.mark.parametrize("reader", list(READERS))
def test_detection_that_is_not_an_object_or_lacks_a_field(case, reader):
    gt, dets = case
    with pytest.raises(InputError, match="detection 3: must be an object"):
        READERS[reader](gt, dets[:3] + [[1, 2, 3]] + dets[3:])
    missing = copy.deepcopy(dets)
    del missing[5]["score"]
    with pytest.raises(InputError, match="detection 5: lacks score"):
        READERS[reader](gt, missing)


def test_cli_exits_2_on_a_string_score_fast_and_slow(case, tmp_path, capsys):
    gt, dets = case
    dets = copy.deepcopy(dets)
    dets[17]["score"] = "0.5"
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "DETS.json").write_text(json.dumps(dets))
    for extra in ([], ["--slow"]):
        assert main(["eval", str(tmp_path / "gt.json"), str(tmp_path / "DETS.json"), "--json", *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert f"{tmp_path / 'DETS.json'}: detection 17: score must be a number, got '0.5'" in captured.err


# --- issue 15 item 4: ground truth pycocotools would score wrongly, other categories ----------


def _duplicate_ids(gt: dict) -> dict:
    gt = copy.deepcopy(gt)
    gt["annotations"][4]["id"] = gt["annotations"][1]["id"]
    return gt


def _labelled_area_zero(gt: dict) -> dict:
    gt = copy.deepcopy(gt)
    ann = next(a for a in gt["annotations"] if a["num_keypoints"] and not a["iscrowd"])
    ann["area"] = 0
    return gt


def _without(key: str):
    def drop(gt: dict) -> dict:
        gt = copy.deepcopy(gt)
        del gt[key]
        return gt

    return drop


def _missing_field(field: str):
    def drop(gt: dict) -> dict:
        gt = copy.deepcopy(gt)
        del gt["annotations"][3][field]
        return gt

    return drop


BAD_GROUND_TRUTH = [
    (_duplicate_ids, "duplicate annotation ids \\[2\\]; pycocotools keeps only one"),
    (_labelled_area_zero, "1 labelled person\\(s\\) have area 0"),
    (_without("annotations"), "no 'annotations' field"),
    (_without("categories"), "no 'categories' field"),
    (lambda gt: dict(gt, annotations=[]), "no annotation of the person category 1"),
    (lambda gt: dict(gt, categories=[{"id": 1, "name": "person"}]), "no category with a 'keypoints' list"),
    (_missing_field("area"), "annotation id 4 .* lacks area"),
    (_missing_field("num_keypoints"), "annotation id 4 .* lacks num_keypoints"),
]


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("corrupt,message", BAD_GROUND_TRUTH)
def test_ground_truth_pycocotools_would_score_wrongly_is_refused(case, reader, corrupt, message):
    gt, dets = case
    with pytest.raises(InputError, match=message):
        READERS[reader](corrupt(gt), dets)


def test_duplicate_ids_really_change_pycocotools_numbers(case):
    """Why duplicates are refused: pycocotools' number differs from the number of the same file
    with distinct ids, so it is wrong, not merely unusual."""
    gt, dets = case
    dup = _duplicate_ids(gt)
    fixed = copy.deepcopy(dup)
    fixed["annotations"][4]["id"] = 10_000
    assert _reference(dup, dets) != _reference(fixed, dets)


def test_area_zero_on_ignored_regions_warns_and_keeps_pycocotools_numbers(case, caplog):
    gt, dets = case
    gt = copy.deepcopy(gt)
    crowd = [a for a in gt["annotations"] if a["iscrowd"] or a["num_keypoints"] == 0]
    assert crowd
    for ann in crowd:
        ann["area"] = 0
    with caplog.at_level(logging.WARNING):
        result = evaluate_keypoints(gt, dets, per_keypoint=False)
    assert f"{len(crowd)} crowd or unlabelled annotation(s) have area 0" in caplog.text
    assert [result.stats[n] for n in STAT_NAMES] == _reference(gt, dets)


@pytest.mark.parametrize("other", [2, 0, "person"])
def test_other_category_detections_are_dropped_loudly(case, caplog, other):
    gt, dets = case
    dets = copy.deepcopy(dets)
    for det in dets[::5]:
        det["category_id"] = other
    dropped = len(dets[::5])
    for fast in (True, False):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            result = evaluate_keypoints(gt, dets, per_keypoint=False, fast=fast)
        assert f"{dropped} of {len(dets)} detections have category_id {other!r}" in caplog.text
        assert "NOT evaluated" in caplog.text
        kept = [d for d in dets if d["category_id"] == 1]
        assert [result.stats[n] for n in STAT_NAMES] == _reference(gt, kept)
        assert result.num_dets == len(kept)


def test_only_other_category_detections_is_an_error(case):
    gt, dets = case
    wrong = [dict(d, category_id=0) for d in dets]
    for reader in READERS.values():
        with pytest.raises(InputError, match="all .* detections have category_id 0.*set category_id to 1"):
            reader(gt, wrong)


def test_other_category_people_in_the_ground_truth_are_left_out_with_a_warning(case, caplog):
    gt, dets = case
    gt = copy.deepcopy(gt)
    gt["categories"].append({"id": 5, "name": "dog"})
    for ann in gt["annotations"][::4]:
        ann["category_id"] = 5
    with caplog.at_level(logging.WARNING):
        result = evaluate_keypoints(gt, dets, per_keypoint=False)
    assert f"{len(gt['annotations'][::4])} annotation(s) of categories other than" in caplog.text
    assert [result.stats[n] for n in STAT_NAMES] == _reference(gt, dets, cat_ids=[1])
    assert evaluate_keypoints(gt, dets, per_keypoint=False, fast=False).stats == result.stats


# --- pycocotools' numbers on what the loader accepts --------------------------------------------


@pytest.mark.parametrize("boxes", ["none", "loose"])
def test_detection_areas_follow_load_res(boxes):
    """loadRes takes detection areas from the boxes when the first detection has one (else from
    the keypoints' extent); the areas decide the medium/large numbers."""
    gt, dets = synthetic_keypoint_case(num_images=30, seed=4)
    rng = np.random.default_rng(0)
    for det in dets:
        if boxes == "none":
            del det["bbox"]
        else:
            det["bbox"] = [v * s for v, s in zip(det["bbox"], rng.uniform(0.5, 2.5, 4))]
    result = evaluate_keypoints(gt, dets, per_keypoint=False)
    assert [result.stats[n] for n in STAT_NAMES] == _reference(gt, dets)


def test_integer_coordinates_and_scores_are_accepted(case):
    gt, dets = case
    ints = [dict(d, keypoints=[round(v) for v in d["keypoints"]], score=int(d["score"] > 0.5)) for d in dets]
    result = evaluate_keypoints(gt, ints, per_keypoint=False)
    assert [result.stats[n] for n in STAT_NAMES] == _reference(gt, ints)


def test_in_memory_evaluation_with_a_cached_ground_truth(case, tmp_path):
    gt, dets = case
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    truth = cached_ground_truth(path)
    assert cached_ground_truth(path) is truth  # parsed once while the file is unchanged
    found = detections_from_list(dets, truth)
    ids = [img["id"] for img in gt["images"][::2]]
    result = evaluate_detections(truth, found, image_ids=ids)
    assert result.stats == evaluate_keypoints(gt, dets, image_ids=ids, per_keypoint=False).stats
    assert result.num_images == len(ids)
    extra = {"id": 1, "width": 640, "height": 480, "file_name": "extra.jpg"}
    path.write_text(json.dumps(dict(gt, images=gt["images"] + [extra])))
    assert len(cached_ground_truth(path).image_ids) == len(gt["images"]) + 1  # changed file: read again
    assert len(ground_truth(gt).image_ids) == len(gt["images"])


def _outputs(gt: dict, dets: list[dict]) -> tuple[list[dict], list[int]]:
    """KeypointRCNN-like outputs (numpy) of the synthetic detections, one dict per image."""
    outputs, ids = [], []
    for img in gt["images"]:
        mine = [d for d in dets if d["image_id"] == img["id"]]
        boxes = np.array([d["bbox"] for d in mine], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        outputs.append({
            "boxes": boxes,
            "scores": np.array([d["score"] for d in mine]),
            "keypoints": np.array([d["keypoints"] for d in mine]).reshape(len(mine), 17, 3),
        })  # fmt: skip
        ids.append(img["id"])
    return outputs, ids


def test_evaluate_in_memory_equals_the_results_file_path(case, tmp_path):
    from raypose.evaluation.cocoeval import evaluate_in_memory, outputs_to_arrays, outputs_to_coco_results

    gt, dets = case
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    outputs, ids = _outputs(gt, dets)
    results = outputs_to_coco_results(outputs, ids)
    expected = evaluate_keypoints(path, results, image_ids=ids[1:], per_keypoint=False)
    # Two "ranks": each holds every other image, gathered in rank order as run.py does.
    parts = [outputs_to_arrays(outputs[r::2], ids[r::2]) for r in range(2)]
    order = [i for r in range(2) for i in range(r, len(ids), 2)]
    ranked = outputs_to_coco_results([outputs[i] for i in order], [ids[i] for i in order])
    got = evaluate_in_memory(path, parts, image_ids=ids[1:])
    assert got.stats == evaluate_keypoints(path, ranked, image_ids=ids[1:], per_keypoint=False).stats
    assert [got.stats[n] for n in STAT_NAMES] == [expected.stats[n] for n in STAT_NAMES]
    assert got.num_dets == expected.num_dets and 0 < got.stats["AP"] < 1
    assert evaluate_in_memory(path, [outputs_to_arrays([], [])]).stats["AP"] == 0.0


def test_readers_agree_on_iscrowd_booleans_and_the_person_category(case):
    gt, dets = case
    gt = copy.deepcopy(gt)
    for ann in gt["annotations"]:
        ann["iscrowd"] = bool(ann["iscrowd"])
    hand = {"id": 7, "name": "hand", "keypoints": ["a", "b"], "skeleton": []}
    gt["categories"] = [hand, *gt["categories"]]  # the person category is chosen by name, not position
    assert ground_truth(gt).category_id == 1
    assert (
        evaluate_keypoints(gt, dets, per_keypoint=False).stats
        == evaluate_keypoints(case[0], dets, per_keypoint=False).stats
    )


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda gt: gt["annotations"][0].update(iscrowd="0"), r"'iscrowd' must be 0 or 1"),
        (lambda gt: gt["annotations"][0].update(area=1e308), r"'area' 1e\+308 is more than the image's"),
        (lambda gt: gt["images"][0].update(width=1e308), r"image \d+: 'width' must be a positive integer"),
    ],
)
def test_values_no_image_can_have_are_refused(case, reader, mutate, message):
    gt, dets = case
    gt = copy.deepcopy(gt)
    mutate(gt)
    with pytest.raises(InputError, match=message):
        READERS[reader](gt, dets)
