"""`raypose eval`: JSON output equal to pycocotools, table output, report files and errors."""

from __future__ import annotations

import json

import pytest

from raypose.cli.main import main
from raypose.evaluation.cocoeval import STAT_NAMES
from raypose.evaluation.synthetic import synthetic_keypoint_case
from raypose.schema import COCO23
from tests.evaluation.test_cocoeval import _pycocotools_stats


@pytest.fixture()
def files(tmp_path):
    gt, dets = synthetic_keypoint_case(num_images=20, num_keypoints=23, seed=12)
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    return gt, dets, gt_path, dets_path


def _reference(gt, dets, sigmas):
    return dict(zip(STAT_NAMES, _pycocotools_stats(gt, dets, sigmas).tolist()))


@pytest.mark.parametrize("slow", [False, True])
def test_json_output_equals_pycocotools(files, capsys, slow):
    gt, dets, gt_path, dets_path = files
    argv = ["eval", str(gt_path), str(dets_path), "--json"] + (["--slow"] if slow else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    stats = json.loads(out)
    assert list(stats) == [*STAT_NAMES, "body_ap", "foot_ap"]  # 23 keypoints: the parts too
    parts = {k: stats.pop(k) for k in ("body_ap", "foot_ap")}
    assert stats == _reference(gt, dets, COCO23.sigmas)
    assert all(0.0 <= v <= 1.0 for v in parts.values())


def test_custom_sigmas(files, capsys):
    gt, dets, gt_path, dets_path = files
    sigmas = [0.04] * 23
    assert main(["eval", str(gt_path), str(dets_path), "--json", "--sigmas", ",".join(map(str, sigmas))]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in stats.items() if k in STAT_NAMES} == _reference(gt, dets, sigmas)


def test_table_and_report(files, capsys, tmp_path):
    _, _, gt_path, dets_path = files
    assert main(["eval", str(gt_path), str(dets_path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ OKS=0.50:0.95 | area=   all | maxDets= 20 ]" in out
    assert "right_heel" in out and "mean_ks" in out
    assert " body_ap = " in out and " foot_ap = " in out
    assert (tmp_path / "rep" / "pr_curves.png").is_file()
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(metrics["per_keypoint"]) == set(COCO23.names)


def test_keypoint_mismatch_error(files, capsys, tmp_path):
    gt, dets, gt_path, _ = files
    short = tmp_path / "short.json"
    short.write_text(json.dumps([dict(d, keypoints=d["keypoints"][:51]) for d in dets]))
    assert main(["eval", str(gt_path), str(short), "--json"]) == 2
    err = capsys.readouterr().err
    assert "raypose eval: error: detections have 17 keypoints, ground truth 23, sigmas 23" in err
    assert main(["eval", str(gt_path), str(short), "--sigmas", "0.1,0.2"]) == 2
    assert "detections have 17 keypoints, ground truth 23, sigmas 2" in capsys.readouterr().err


def test_unknown_image_and_empty_dets(files, capsys, caplog, tmp_path):
    _, dets, gt_path, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dets + [dict(dets[0], image_id=424242)]))
    assert main(["eval", str(gt_path), str(bad)]) == 2
    assert "424242" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert main(["eval", str(gt_path), str(empty), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["AP"] == 0.0
    assert "no detections" in caplog.text  # a logged warning (stderr outside pytest)


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_that_is_not_a_folder_is_refused_before_evaluating(files, capsys, tmp_path, where):
    _, _, gt_path, dets_path = files
    blocker = tmp_path / "report"
    blocker.write_text("keep me")
    out = blocker if where == "a file" else blocker / "sub"
    assert main(["eval", str(gt_path), str(dets_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raypose eval: error: --out {out}") and "is a file, not a folder" in err
    assert blocker.read_text() == "keep me"
