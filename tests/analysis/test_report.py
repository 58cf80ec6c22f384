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
from raypose.analysis.gallery import (
    DRAW_MIN_SCORE,
    GALLERY_SIDE,
    PRED_COLOR,
    detections_to_draw,
    render_gallery,
    render_image,
)
from raypose.analysis.report import REPORT_FILE, isolated_gain_lines, write_report
from raypose.analysis.summary import background_fp_rows, compute_analysis
from tests.analysis.test_error_types import coco, det, gt_ann, make_scene, template

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
    assert worst.size == (640, 240)  # 1600 x 600 scaled to the gallery's long side
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


SMALL_W, SMALL_H = 128, 96  # the synthetic images' size: the gallery scales them up


def small_person(origin: tuple[float, float]) -> np.ndarray:
    """(17, 3) keypoints of a 32 x 24 px person (the 80 px template at a tenth of its size)."""
    kpts = template(17, (0.0, 0.0))
    kpts[:, :2] = kpts[:, :2] * 0.1 + origin
    return kpts


def crowded_scene(b_score: float) -> tuple[dict, list[dict]]:
    """One 128 x 96 image, one person top left and 20 detections: A (0.3) on the person, B
    (``b_score``) top right on nobody, and 18 low-score ones (0.05-0.22) in the bottom half."""
    person = small_person((8.0, 8.0))
    gt = coco(17, [(1, SMALL_W, SMALL_H)], [gt_ann(10, 1, person)])
    dets = [det(1, person.copy(), 0.3), det(1, small_person((80.0, 8.0)), b_score)]
    dets += [det(1, small_person((8.0 + 4.5 * i, 60.0)), 0.05 + 0.01 * i) for i in range(18)]
    return gt, dets


@pytest.mark.parametrize(("b_score", "drawn"), [(0.2, [0.3]), (0.6, [0.6, 0.3])])
def test_gallery_draws_the_image_s_people_count_plus_confident_detections(b_score, drawn):
    gt, dets = crowded_scene(b_score)
    result = compute_analysis(analysis_input_from_dicts(gt, dets, "gt.json", "dets.json"))
    assert DRAW_MIN_SCORE == 0.5
    chosen = detections_to_draw(result, 0)
    assert result.inp.data.dt_scores[chosen].tolist() == drawn
    # a highlighted detection (a listed false positive) is drawn whatever its score
    low = int(np.argmin(result.inp.data.dt_scores))
    assert low in detections_to_draw(result, 0, always=[low]).tolist()

    picture = np.asarray(render_image(result, 0))
    assert picture.shape[:2] == (480, 640)  # 128 x 96 scaled 5x
    magenta = (picture == PRED_COLOR).all(axis=2)
    scale = 640 / SMALL_W
    assert magenta[: round(45 * scale), : round(45 * scale)].any()  # A, on the person
    assert magenta[: round(45 * scale), round(75 * scale) :].any() == (b_score >= DRAW_MIN_SCORE)
    assert not magenta[round(55 * scale) :].any()  # none of the 18 low-score detections


def test_saved_gallery_images_have_the_readable_width(tmp_path):
    gt, dets = crowded_scene(0.6)
    result = compute_analysis(analysis_input_from_dicts(gt, dets, "gt.json", "dets.json"))
    (name,) = render_gallery(result, tmp_path, [0])
    with Image.open(tmp_path / name) as im:
        assert im.size == (GALLERY_SIDE, GALLERY_SIDE * SMALL_H // SMALL_W) == (640, 480)
    with Image.open(tmp_path / name) as im:
        pixels = np.asarray(im.convert("RGB"))
    # lines scale with the picture: B's box (160 px wide at 5x) is drawn at least 2 px thick
    magenta_rows = (pixels[:, 320:] == PRED_COLOR).all(axis=2).sum(axis=1)
    assert np.count_nonzero(magenta_rows > 100) >= 2  # its bottom edge (dots and labels break the top)


def test_worst_images_name_and_define_their_score(scene_report):
    out, paths, _ = scene_report
    summary = json.loads(paths["summary"].read_text())
    rows = {r["image_id"]: r for r in summary["worst_images"]}
    per_det = json.loads(paths["per_detection"].read_text())
    # image 1: A and B matched (people 2), nothing unmatched; image 2: C missed, background 0.7
    assert rows[1]["matched_oks_sum"] == pytest.approx(per_det[0]["oks"] + per_det[1]["oks"], abs=1e-5)
    assert rows[1]["unmatched_score_sum"] == 0.0 and rows[1]["num_people"] == 2
    assert rows[2] == {**rows[2], "matched_oks_sum": 0.0, "unmatched_score_sum": 0.7, "image_score": 0.0}
    for row in rows.values():
        expected = row["matched_oks_sum"] / (row["num_people"] + row["unmatched_score_sum"])
        assert row["image_score"] == pytest.approx(expected, abs=1e-5)
    page = paths["report"].read_text()
    definition = re.search(r'<p id="worst-definition">(.*?)</p>', page, re.S).group(1)
    for words in ("sum of the OKS", "number of people", "sum of the scores", "OKS &ge; 0.1", "1 / (1 +"):
        assert words in definition, words
    table = re.search(r'<table id="worst-table">(.*?)</table>', page, re.S).group(1)
    assert "<th>image score</th>" in table and table.count("<tr>") == 1 + 2
    assert "OKS 0.000" not in page  # the captions name the score as the table does
    assert "image score 0.000" in page


def test_background_fp_table_is_capped_and_points_to_the_full_list(tmp_path):
    gt, dets = crowded_scene(0.6)
    result = compute_analysis(analysis_input_from_dicts(gt, dets, "gt.json", "dets.json"))
    paths = write_report(result, tmp_path, max_listed=5)
    page = paths["report"].read_text()
    table = re.search(r'<table id="fp-table">(.*?)</table>', page, re.S).group(1)
    assert table.count("<tr>") == 1 + 5
    scores = [float(s) for s in re.findall(r"<tr><td>1</td><td>\d+</td><td>([0-9.]+)</td>", table)]
    assert scores == [0.6, 0.22, 0.21, 0.2, 0.19]  # the highest-scoring ones
    note = re.search(r'<p id="fp-note">(.*?)</p>', page, re.S).group(1)
    assert "5 highest-scoring of 19" in note and '<a href="per_detection.json">' in note
    per_det = json.loads((tmp_path / "per_detection.json").read_text())
    listed = [d for d in per_det if d["background_fp"]]
    assert len(per_det) == 20 and len(listed) == 19
    assert {d["detection_index"] for d in listed} == set(range(1, 20))  # all but A
    b = next(d for d in listed if d["detection_index"] == 1)
    assert b["best_oks"] == pytest.approx(0.0, abs=1e-6) and b["best_iou"] == 0.0
    summary = json.loads(paths["summary"].read_text())
    assert len(summary["background_false_positives"]) == 19
    assert "matched_at_0.1" not in summary["background_false_positives"][0]


def test_best_iou_is_the_box_overlap_with_the_nearest_person(tmp_path):
    gt, dets = crowded_scene(0.6)
    shifted = small_person((24.0, 8.0))  # half of the person's 32 px width to the right
    dets.append(det(1, shifted, 0.25))  # the 0.05 one drops out: 20 kept per image
    result = compute_analysis(analysis_input_from_dicts(gt, dets, "gt.json", "dets.json"))
    rows = {r["detection_index"]: r for r in background_fp_rows(result)}
    assert rows[20]["best_iou"] == pytest.approx(1 / 3)  # overlap 16 x 24 over union 48 x 24
    assert rows[20]["overlaps_person"] and not rows[1]["overlaps_person"]


def test_report_names_its_files_relative_to_its_folder(tmp_path):
    gt, dets, _ = make_scene(17)
    out = tmp_path / "upload" / "analysis"
    inside = out / "inputs" / "dets.json"  # the detections written beside the report
    outside = tmp_path / "elsewhere" / "person_keypoints_val.json"
    inp = analysis_input_from_dicts(gt, dets, str(outside), str(inside))
    result = compute_analysis(inp)
    paths = write_report(result, out)
    assert {k: p.is_absolute() and p.is_file() for k, p in paths.items()} == dict.fromkeys(
        ("per_detection", "summary", "report"), True
    )
    assert paths["report"] == out.absolute() / REPORT_FILE
    summary = json.loads(paths["summary"].read_text())
    assert summary["ground_truth"] == "person_keypoints_val.json"
    assert summary["detections"] == "inputs/dets.json"
    assert summary["files"]["report"] == "report.html"
    for text in (paths["summary"].read_text(), paths["report"].read_text()):
        assert str(tmp_path) not in text
    assert "<code>inputs/dets.json</code>" in paths["report"].read_text()


def test_report_headers_render_as_symbols_not_entities(scene_report, tmp_path):
    _, paths, _ = scene_report
    dom = dump_dom(paths["report"], tmp_path / "profile")
    headers = re.findall(r"<th>(.*?)</th>", dom)
    assert "best OKS to any person" in headers
    assert "overlaps a person (box IoU ≥ 0.1)" in headers
    assert not [h for h in headers if "&" in h]
    assert not re.search(r"&amp;[a-z]+;", dom)  # no entity shown as text anywhere
    assert "OKS ≥ 0.1" in dom
