"""summary.json, gallery and report.html; the report is opened in headless Chromium when available."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raypose.analysis.conventions import COCO_ANALYZE
from raypose.analysis.data import analysis_input_from_dicts
from raypose.analysis.report import isolated_gain_lines, write_report
from raypose.analysis.summary import compute_analysis
from tests.analysis.test_error_types import make_scene

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def dump_dom(html_path: Path, profile: Path) -> str:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary found (install the Debian package `chromium`)")
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        html_path.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def scene_report(tmp_path_factory):
    gt, dets, expected = make_scene(23)
    images = tmp_path_factory.mktemp("images")
    for image in gt["images"]:
        Image.new("RGB", (image["width"], image["height"]), (30, 60, 90)).save(images / image["file_name"])
    inp = analysis_input_from_dicts(gt, dets, "gt.json", "dets.json")
    result = compute_analysis(inp, worst=5)
    out = tmp_path_factory.mktemp("report")
    paths = write_report(result, out, images_dir=images, max_listed=5)
    return out, paths, expected


def test_summary_holds_the_required_fields(scene_report):
    out, paths, expected = scene_report
    summary = json.loads(paths["summary"].read_text())
    codes = list(expected.values())
    # detection on A has the hand-placed errors; B's detection is all good (23 points)
    assert summary["errors"] == {
        "good": codes.count(0) + 23,
        "jitter": codes.count(1),
        "inversion": codes.count(2),
        "swap": codes.count(3),
        "miss": codes.count(4),
    }
    assert summary["per_keypoint"]["left_heel"]["inversion"] == 1
    assert summary["per_keypoint"]["right_big_toe"]["miss"] == 1
    assert len(summary["per_keypoint"]) == 23
    assert [s["step"] for s in summary["progressive"]] == [
        "original", "miss", "swap", "inversion", "jitter", "score", "background_fp", "false_negative",
    ]  # fmt: skip
    assert all(s["ap"] is not None for s in summary["progressive"])
    # image 2 (a missed person and a background detection) is worse than image 1
    assert summary["worst"] == [2, 1]
    assert summary["background_false_positives"][0]["image_id"] == 2
    assert summary["false_negatives"] == [
        {"image_id": 2, "annotation_id": 20, "num_keypoints": 23, "area": 2000.0}
    ]
    assert np.isclose(sum(v for v in summary["oks_loss_share"].values() if v is not None), 1.0)
    for rel in [*summary["files"]["plots"].values(), *summary["files"]["gallery"]["worst"]]:
        assert (out / rel).is_file(), rel
    per_det = json.loads(paths["per_detection"].read_text())
    assert [d["matched_annotation_id"] for d in per_det] == [10, 11, None]
    assert per_det[1]["oks"] == pytest.approx(1.0)
    assert summary["convention"]["name"] == "raypose"
    assert [d["item"] for d in summary["convention"]["differences"]] == list("abcdef")


def test_summary_gives_each_error_type_alone(scene_report):
    _, paths, _ = scene_report
    summary = json.loads(paths["summary"].read_text())
    alone = {s["step"]: s for s in summary["isolated"]}
    cumulative = {s["step"]: s for s in summary["progressive"]}
    assert list(alone) == ["miss", "swap", "inversion", "jitter", "score", "background_fp", "false_negative"]
    original = summary["progressive"][0]["ap"]
    for step in alone.values():
        assert step["relative_to"] == "original"
        assert step["gain_ap"] == pytest.approx(step["ap"] - original, abs=2e-6)
    # the miss step is the first of the cumulative run: alone or not, the same gain
    assert alone["miss"]["gain_ap"] == cumulative["miss"]["gain_ap"] > 0
    # ignoring the never-detected person C lifts recall of the original detections too
    assert alone["false_negative"]["gain_ap"] > 0


def test_isolated_gain_lines_are_a_markdown_table(scene_report):
    _, paths, _ = scene_report
    summary = json.loads(paths["summary"].read_text())
    lines = isolated_gain_lines(summary)
    assert lines[0].startswith("AP gain of each error type corrected on its own (raypose convention")
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| error type | AP gain alone |") and set(table[1]) <= set("|-:")
    assert len(table) == 2 + 7
    miss = next(row for row in table if row.startswith("| Miss |"))
    cells = [c.strip() for c in miss.strip("|").split("|")]
    gain = summary["isolated"][0]["gain_ap"]
    assert cells[1] == f"{gain:+.4f}" and cells[3] == f"{summary['progressive'][1]['gain_ap']:+.4f}"
    assert cells[4] == "original"


def test_coco_analyze_report_uses_its_names_and_says_so(tmp_path):
    gt, dets, _ = make_scene(17)
    result = compute_analysis(
        analysis_input_from_dicts(gt, dets, "gt.json", "dets.json"), convention=COCO_ANALYZE
    )
    paths = write_report(result, tmp_path, max_listed=2)
    summary = json.loads(paths["summary"].read_text())
    assert [s["step"] for s in summary["progressive"]] == [
        "baseline", "miss", "swap", "inversion", "jitter", "score", "bckgd_false_pos", "false_neg",
    ]  # fmt: skip
    assert [s["label"] for s in summary["progressive"]][-2:] == ["w/o Bkg. FP", "w/o FN"]
    assert summary["isolated"][-1]["relative_to"] == "bckgd_false_pos"
    assert summary["convention"] == {
        **summary["convention"],
        "name": "coco-analyze",
        "area_range": [1024.0, 1e10],
    }
    assert set(summary["pr_curves"]["oks50"]) == {s["step"] for s in summary["progressive"]}
    page = paths["report"].read_text()
    assert "Convention: <b>coco-analyze</b>" in page and 'id="convention-table"' in page
    assert "coco-analyze (this report)" in page and 'id="isolated-table"' in page
    assert (tmp_path / summary["files"]["plots"]["isolated_gains"]).is_file()
    assert isolated_gain_lines(summary)[0].startswith(
        "AP gain of each error type corrected on its own (coco-analyze"
    )


def test_gallery_draws_ground_truth_and_predictions(scene_report):
    out, _, _ = scene_report
    worst = Image.open(out / "gallery" / "worst_001_1.png").convert("RGB")
    assert max(worst.size) <= 640
    pixels = np.asarray(worst).reshape(-1, 3)
    background = (pixels == (30, 60, 90)).all(axis=1)
    assert 0.5 < background.mean() < 0.995  # something is drawn, on the real image
    green = (pixels == (60, 230, 60)).all(axis=1)
    magenta = (pixels == (230, 60, 230)).all(axis=1)
    assert green.any() and magenta.any()
    for color in ((40, 200, 40), (255, 215, 0), (255, 120, 0), (255, 30, 30), (150, 60, 255)):
        assert (pixels == color).all(axis=1).any(), color  # every category has a coloured point
    assert (pixels > 200).all(axis=1).sum() > 50  # white keypoint-score labels (anti-aliased)
    fp_image = np.asarray(Image.open(out / "gallery" / "fp_000_2.png").convert("RGB")).reshape(-1, 3)
    assert (fp_image == (255, 40, 40)).all(axis=1).any()  # the false positive is boxed in red


def test_report_renders_in_headless_chromium(scene_report, tmp_path):
    out, paths, _ = scene_report
    dom = dump_dom(paths["report"], tmp_path / "profile")
    for section in (
        "errors",
        "progressive",
        "worst",
        "background-fp",
        "false-negatives",
        "progressive-table",
        "isolated-table",
        "convention-table",
    ):
        assert f'id="{section}"' in dom
    loaded = re.search(r'id="images-loaded">(\d+)<', dom)
    total = re.search(r'id="images-total">(\d+)<', dom)
    assert loaded and total, "the page script did not run"
    assert int(total.group(1)) >= 8 + 2  # plots + gallery
    assert loaded.group(1) == total.group(1)


def test_chromium_sees_a_missing_image(scene_report, tmp_path):
    out, paths, _ = scene_report
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "plots" / "original_pr.png").unlink()
    dom = dump_dom(copy / "report.html", tmp_path / "profile")
    loaded = int(re.search(r'id="images-loaded">(\d+)<', dom).group(1))
    total = int(re.search(r'id="images-total">(\d+)<', dom).group(1))
    assert loaded == total - 1
