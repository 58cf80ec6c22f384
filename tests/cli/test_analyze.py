"""``raypose analyze`` end to end on hand-built files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from raypose.cli.main import main
from tests.analysis.test_error_types import make_scene
from tests.analysis.test_oracle import small_scene, tiny_checkpoint  # noqa: F401  (fixture)


def write_files(tmp_path, gt, dets):
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    return gt_path, dets_path


def test_analyze_writes_summary_and_report(tmp_path, capsys):
    gt, dets, expected = make_scene(17)
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    out = tmp_path / "out"
    assert main(["analyze", str(gt_path), str(dets_path), "--out", str(out), "--worst", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"]["swap"] == list(expected.values()).count(3) == 2
    assert summary["errors"]["inversion"] == 1
    assert summary["worst"] == [2]  # --worst 1: only the worst image
    assert len(summary["progressive"]) == 8
    assert (out / "report.html").is_file()
    assert len(list((out / "gallery").glob("worst_*.png"))) == 1
    printed = capsys.readouterr().out
    assert "Optimal score" in printed and "swap 2" in printed and "convention: raypose" in printed
    # the report names its inputs by file name (they lie outside --out), never by a full path
    assert summary["ground_truth"] == "gt.json" and summary["detections"] == "dets.json"
    for written in ("summary.json", "report.html"):
        assert str(tmp_path) not in (out / written).read_text(), written
    assert summary["convention"]["name"] == "raypose" and len(summary["isolated"]) == 7


def test_analyze_with_the_coco_analyze_convention(tmp_path, capsys):
    gt, dets, _ = make_scene(17)
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    out = tmp_path / "out"
    args = ["analyze", str(gt_path), str(dets_path), "--out", str(out), "--worst", "1"]
    assert main([*args, "--convention", "coco-analyze"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["convention"]["name"] == "coco-analyze"
    assert (
        summary["progressive"][0]["step"] == "baseline" and summary["progressive"][-1]["step"] == "false_neg"
    )
    assert len(summary["isolated"]) == 7
    printed = capsys.readouterr().out
    assert "convention: coco-analyze" in printed and "w/o Bkg. FP" in printed and "alone" in printed
    assert "Convention: <b>coco-analyze</b>" in (out / "report.html").read_text()


def test_unknown_convention_is_refused_before_reading_files(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["analyze", "missing.json", "missing.json", "--out", str(out), "--convention", "paper"])
    assert code == 2
    assert "unknown analysis convention 'paper'; valid: raypose, coco-analyze" in capsys.readouterr().err
    assert not out.exists()


def test_coco_analyze_convention_needs_a_person_of_32_squared(tmp_path, capsys):
    gt, dets, _ = make_scene(17)
    for ann in gt["annotations"]:
        ann["area"] = 1000.0  # under 32^2: coco-analyze ignores them all
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    args = ["analyze", str(gt_path), str(dets_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--convention", "coco-analyze"]) == 2
    err = capsys.readouterr().err
    assert "gt.json: no labelled person has an area in [1024, 1e+10]" in err and "--convention raypose" in err
    assert main(args) == 0  # COCO's range counts them


def test_checkpoint_needs_images(tmp_path, capsys):
    gt, dets, _ = make_scene(17)
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    code = main(
        ["analyze", str(gt_path), str(dets_path), "--out", str(tmp_path / "o"), "--checkpoint", "x.pth"]
    )
    assert code == 2
    assert "--images" in capsys.readouterr().err


def test_bad_detections_file_names_file_and_detection(tmp_path, capsys):
    gt, dets, _ = make_scene(17)
    dets[1]["keypoints"] = dets[1]["keypoints"][:-3]
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    assert main(["analyze", str(gt_path), str(dets_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "dets.json: detection 1: keypoints" in err and "51" in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_analyze_with_checkpoint_runs_the_oracle_study(tmp_path, tiny_checkpoint):  # noqa: F811
    images = tmp_path / "images"
    images.mkdir()
    gt, dets = small_scene(23, images)
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    out = tmp_path / "out"
    args = ["analyze", str(gt_path), str(dets_path), "--out", str(out), "--images", str(images)]
    assert main([*args, "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    oracle = summary["oracle"]
    assert oracle["num_boxes"] == 3
    assert oracle["detections"]["ap"] == summary["progressive"][0]["ap"]
    assert 'id="oracle"' in (out / "report.html").read_text()
    assert (out / summary["files"]["plots"]["oracle_loss"]).is_file()
    assert oracle["checkpoint"] == tiny_checkpoint.name  # outside --out: its file name only
    assert str(tiny_checkpoint.parent) not in (out / "summary.json").read_text()


def test_analyze_on_the_synthetic_data_set(tmp_path, synth_data):
    """Real file layout: merged 23-keypoint validation file, its images, noisy copies as detections."""
    gt = json.loads(synth_data.val_ann.read_text())
    rng = np.random.default_rng(0)
    dets = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd") or ann["num_keypoints"] == 0:
            continue
        kpts = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        kpts[:, :2] += rng.normal(0, 2.0, (len(kpts), 2))
        kpts[:, 2] = 1
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": kpts.reshape(-1).tolist(),
                "score": 0.9,
            }
        )
    dets_path = tmp_path / "dets.json"
    dets_path.write_text(json.dumps(dets))
    out = tmp_path / "out"
    args = [
        "analyze",
        str(synth_data.val_ann),
        str(dets_path),
        "--out",
        str(out),
        "--images",
        str(synth_data.val_images),
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_keypoints"] == 23
    assert summary["errors"]["good"] > 0
    assert len(summary["worst"]) == len(gt["images"])
    worst = Image.open(out / summary["files"]["gallery"]["worst"][0]).convert("RGB")
    first = next(i for i in gt["images"] if i["id"] == summary["worst"][0])
    long_side = max(first["width"], first["height"])
    assert max(worst.size) == 640  # small images are scaled up so labels are legible
    assert worst.size == (round(first["width"] * 640 / long_side), round(first["height"] * 640 / long_side))
    assert np.asarray(worst).std() > 10  # drawn on the photo, not a flat canvas


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_that_is_not_a_folder_is_refused_before_analysing(tmp_path, capsys, where):
    gt, dets, _ = make_scene(17)
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    blocker = tmp_path / "report"
    blocker.write_text("keep me")
    out = blocker if where == "a file" else blocker / "sub"
    assert main(["analyze", str(gt_path), str(dets_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raypose analyze: error: --out {out}") and "is a file, not a folder" in err
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("case", ["empty", "other category"])
def test_no_detections_is_a_clear_error_not_ap_minus_one(tmp_path, capsys, case):
    gt, dets, _ = make_scene(17)
    dets = [] if case == "empty" else [dict(d, category_id=5) for d in dets]
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    code = main(["analyze", str(gt_path), str(dets_path), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert "nan" not in captured.out and "-1.0" not in captured.out
    expected = "no detections on the images of" if case == "empty" else "detections have category_id 5"
    assert code == 2 and "dets.json: " in captured.err and expected in captured.err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_no_ground_truth_person_is_a_clear_error(tmp_path, capsys):
    gt, dets, _ = make_scene(17)
    for ann in gt["annotations"]:
        ann["iscrowd"] = 1
    gt_path, dets_path = write_files(tmp_path, gt, dets)
    assert main(["analyze", str(gt_path), str(dets_path), "--out", str(tmp_path / "o")]) == 2
    assert "gt.json: no ground-truth person with labelled keypoints" in capsys.readouterr().err
