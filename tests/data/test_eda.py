import json

import numpy as np
import pytest
from PIL import Image

from raypose.data.annotations import load_keypoint_annotations
from raypose.data.draw import draw_skeletons
from raypose.data.eda import check_annotations, dataset_stats, write_samples, write_stats
from raypose.errors import InputError
from raypose.schema import COCO17, COCO23


def test_stats_match_the_arrays(synth_data, tmp_path):
    ann = load_keypoint_annotations(synth_data.train_ann)
    summary = write_stats(synth_data.train_ann, tmp_path)
    people = ~ann.iscrowd
    assert summary["images"] == 6 and summary["people"] == int(people.sum())
    assert sum(summary["people_per_image"]["histogram"].values()) == 6
    nose = (ann.keypoints[people, 0, 2] > 0).mean()
    assert summary["keypoints"]["nose"]["labelled_fraction"] == pytest.approx(nose, abs=1e-4)
    heel = (ann.keypoints[people, COCO23.index("right_heel"), 2] == 2).mean()
    assert summary["keypoints"]["right_heel"]["visible_fraction"] == pytest.approx(heel, abs=1e-4)
    assert sum(summary["area_ranges"].values()) == summary["people"]
    assert json.loads((tmp_path / "summary.json").read_text())["people"] == summary["people"]
    for name in ("people_per_image.png", "keypoint_fractions.png", "box_sizes.png"):
        assert Image.open(tmp_path / name).size[0] > 100


def test_stats_count_crowd_apart():
    from raypose.data.annotations import keypoint_annotations_from_dict

    kps = [0] * 51
    kps[0:3] = [1, 1, 2]
    data = {
        "images": [
            {"id": 1, "file_name": "a", "width": 48, "height": 48},  # the crowd region's area fits
            {"id": 2, "file_name": "b", "width": 48, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "keypoints": kps, "bbox": [0, 0, 4, 4], "area": 16},
            {
                "id": 2,
                "image_id": 1,
                "keypoints": [0] * 51,
                "bbox": [0, 0, 40, 40],
                "area": 1600,
                "iscrowd": 1,
            },
        ],
        "categories": [COCO17.coco_category(1)],
    }
    summary = dataset_stats(keypoint_annotations_from_dict(data))
    assert (summary["people"], summary["crowd_regions"], summary["images_without_people"]) == (1, 1, 1)
    assert summary["people_per_image"]["histogram"] == {0: 1, 1: 1}
    assert summary["area_ranges"]["small"] == 1


def test_show_writes_augmented_previews(synth_data, tmp_path):
    paths = write_samples(synth_data.train_ann, synth_data.train_images, tmp_path, num_images=3, seed=1)
    assert len(paths) == 3 and all(p.suffix == ".png" and p.exists() for p in paths)


def test_draw_skeletons_marks_visible_points():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    kps = np.zeros((1, 17, 3))
    kps[0, 0] = [10, 10, 2]
    kps[0, 1] = [30, 30, 0]  # not labelled: not drawn
    out = np.asarray(draw_skeletons(image, kps, COCO17, boxes=[[2, 2, 8, 8]], scores=[0.9]))
    assert out[10, 10].any() and not out[30, 30].any() and out[2, 5].any()


def _bad_file(tmp_path):
    kps = [0] * 51
    kps[0:3] = [5, 5, 2]
    good = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "keypoints": kps,
        "bbox": [0, 0, 10, 10],
        "num_keypoints": 1,
    }
    anns = [good]
    anns.append(dict(good, id=2, bbox=[0, 0, 0, 10]))  # zero-area box
    anns.append(dict(good, id=3, keypoints=[5, 5, 7] + [0] * 48))  # bad visibility
    anns.append(dict(good, id=4, keypoints=[50, 5, 2] + [0] * 48, bbox=[0, 0, 60, 10]))  # outside image
    anns.append(dict(good, id=5, keypoints=[0] * 51, num_keypoints=0))  # no labels
    anns.append(dict(good, id=6, keypoints=[9, 9, 2] + [0] * 48, bbox=[0, 0, 3, 3]))  # outside box
    anns.append(dict(good, id=7, keypoints=[0] * 12))  # wrong count
    anns.append(dict(good, id=8, image_id=99))  # unknown image
    anns.append(dict(good, id=9, category_id=4))  # unknown category
    data = {
        "images": [{"id": 1, "file_name": "x.jpg", "width": 20, "height": 20}],
        "annotations": anns,
        "categories": [COCO17.coco_category(1)],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def test_check_reports_every_problem_with_ids(tmp_path):
    report = check_annotations(_bad_file(tmp_path), image_dir=tmp_path)
    found = {(i.kind, i.ann_id) for i in report.issues}
    for kind, ann_id in [
        ("zero-area box", 2),
        ("bad visibility", 3),
        ("keypoint outside image", 4),
        ("no labelled keypoint", 5),
        ("keypoint outside box", 6),
        ("wrong keypoint count", 7),
        ("unknown image", 8),
        ("unknown category", 9),
    ]:
        assert (kind, ann_id) in found
    assert not any(i.ann_id == 1 for i in report.issues)
    assert ("missing image file", None) in found
    assert report.counts()["error: zero-area box"] == 1
    assert {i.severity for i in report.issues if i.kind == "keypoint outside box"} == {"warning"}


def test_check_is_clean_on_synthetic_data_and_rejects_unreadable(synth_data, tmp_path):
    assert check_annotations(synth_data.train_ann, synth_data.train_images).errors == []
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(InputError, match="x.json: not valid JSON"):
        check_annotations(tmp_path / "x.json")


def _one_person_file(tmp_path, person=None, image=None, size=(40, 30)):
    """One 40x30 image with one person; ``person`` / ``image`` update the annotation / image entry."""
    kps = [0] * 51
    kps[0:3] = [5, 5, 2]
    ann = {"id": 7, "image_id": 1, "category_id": 1, "keypoints": kps, "bbox": [0, 0, 10, 10], "area": 100.0}
    entry = {"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}
    data = {
        "images": [{**entry, **(image or {})}],
        "annotations": [{**ann, **(person or {})}],
        "categories": [COCO17.coco_category(1)],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    Image.new("RGB", size, (90, 120, 30)).save(tmp_path / "a.jpg", quality=90)
    return path


def _kinds(report) -> set[tuple[str, str, object, object]]:
    return {(i.severity, i.kind, i.image_id, i.ann_id) for i in report.issues}


def test_check_is_clean_on_a_good_file_and_image(tmp_path):
    report = check_annotations(_one_person_file(tmp_path), image_dir=tmp_path)
    assert report.issues == []


@pytest.mark.parametrize(
    ("person", "kind"),
    [
        ({"area": 0}, "zero area"),
        ({"area": 0.0}, "zero area"),
        ({"area": -4}, "negative area"),
        ({"bbox": [0, 0, -5, 10]}, "negative box size"),
        ({"bbox": [0, 0, 10, -0.5]}, "negative box size"),
        ({"bbox": [0, 0, 0, 10]}, "zero-area box"),
        ({"bbox": [0, 0, 10, 0]}, "zero-area box"),
    ],
)
def test_check_flags_boxes_and_areas_oks_cannot_use(tmp_path, person, kind):
    report = check_annotations(_one_person_file(tmp_path, person=person))
    assert ("error", kind, 1, 7) in _kinds(report)
    assert len(report.errors) == 1  # a negative box is not also a zero-area one


def test_area_of_a_crowd_region_is_not_checked(tmp_path):
    report = check_annotations(_one_person_file(tmp_path, person={"area": 0, "iscrowd": 1}))
    assert report.errors == []


@pytest.mark.parametrize(
    "image", [{"width": 0}, {"height": 0}, {"width": -40}, {"width": "40"}, {"height": None}, {"width": 1e400}]
)
def test_check_flags_image_sizes_that_are_not_positive(tmp_path, image):
    path = tmp_path / "ann.json"
    _one_person_file(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0].update(image)
    path.write_text(json.dumps(data).replace("Infinity", "1e400"))
    report = check_annotations(path)
    assert ("error", "bad image size", 1, None) in _kinds(report)
    assert "keypoint outside image" not in {i.kind for i in report.issues}  # not reported twice


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_header(path):
    data = bytearray(path.read_bytes())
    data[2:40] = b"\x00" * 38
    path.write_bytes(bytes(data))


def _not_an_image(path):
    path.write_bytes(b"this is not a JPEG" * 10)


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _corrupt_header, _not_an_image, _empty])
def test_check_images_flags_files_that_do_not_decode(tmp_path, damage):
    path = _one_person_file(tmp_path)
    damage(tmp_path / "a.jpg")
    report = check_annotations(path, image_dir=tmp_path)
    assert [(i.kind, i.image_id) for i in report.errors] == [("unreadable image file", 1)]
    assert "a.jpg" in report.errors[0].message


def test_check_images_flags_a_size_that_differs_from_the_entry(tmp_path):
    path = _one_person_file(tmp_path)
    Image.new("RGB", (30, 40)).save(tmp_path / "a.jpg")  # width and height swapped
    report = check_annotations(path, image_dir=tmp_path)
    assert [(i.kind, i.image_id) for i in report.errors] == [("image size mismatch", 1)]
    assert "30x40" in report.errors[0].message and "40x30" in report.errors[0].message


@pytest.mark.parametrize("ann_id", ["missing", None])
def test_annotation_without_id_is_named_by_position(tmp_path, ann_id):
    path = _one_person_file(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"].insert(0, dict(data["annotations"][0], id=ann_id))
    if ann_id == "missing":
        del data["annotations"][0]["id"]
    path.write_text(json.dumps(data))
    report = check_annotations(path)
    assert [(i.kind, i.ann_id) for i in report.errors] == [("malformed annotation", "#0")]
    assert "annotation #0 (by position) has no 'id'" in report.errors[0].message
    assert all(i.location != "file" and "None" not in i.location for i in report.issues)
    with pytest.raises(InputError, match=r"annotation #0 \(by position\) has no 'id'"):  # the same words
        load_keypoint_annotations(path)


def _gradient_file(tmp_path, name):
    """One 48x40 image ``name`` with one person of three labelled keypoints."""
    kps = [0] * 51
    kps[0:6] = [10, 10, 2, 30, 25, 2]
    data = {
        "images": [{"id": 1, "file_name": name, "width": 48, "height": 40}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "keypoints": kps, "bbox": [5, 5, 30, 30],
                         "area": 900.0, "iscrowd": 0}],
        "categories": [COCO17.coco_category(1)],
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_show_draws_a_16bit_png_like_its_8bit_version(tmp_path):
    from tests.test_images import gray_gradient, save_gray16

    gray = gray_gradient(40, 48)
    Image.fromarray(gray).save(tmp_path / "8.png")
    save_gray16(tmp_path / "16.png", gray)
    drawn = {}
    for name in ("8.png", "16.png"):
        (out,) = write_samples(_gradient_file(tmp_path, name), tmp_path, tmp_path / name[:-4], 1, augment=False)
        drawn[name] = np.asarray(Image.open(out), dtype=np.int16)
    assert drawn["16.png"].shape == (40, 48, 3)
    assert np.abs(drawn["16.png"] - drawn["8.png"]).max() <= 1


def test_check_images_decodes_a_16bit_png_and_refuses_float_pixels(tmp_path):
    from tests.test_images import gray_gradient, save_gray16

    save_gray16(tmp_path / "16.png", gray_gradient(40, 48))
    assert check_annotations(_gradient_file(tmp_path, "16.png"), tmp_path).issues == []
    Image.fromarray(gray_gradient(40, 48).astype(np.float32)).save(tmp_path / "f.tif")
    report = check_annotations(_gradient_file(tmp_path, "f.tif"), tmp_path)
    assert [(i.kind, i.image_id) for i in report.errors] == [("unreadable image file", 1)]
    assert "f.tif" in report.errors[0].message and "mode F" in report.errors[0].message


def test_check_images_in_a_missing_folder_is_one_error_naming_it(tmp_path, capsys):
    from raypose.cli.main import main

    path = _bad_file(tmp_path)
    data = json.loads(path.read_text())
    data["images"] += [{"id": n, "file_name": f"{n}.jpg", "width": 20, "height": 20} for n in range(2, 6)]
    path.write_text(json.dumps(data))
    folder = tmp_path / "no-such-folder"
    assert main(["data", "check", str(path), "--images", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypose data check: error: ") and err.count("\n") == 1
    assert str(folder) in err and "Traceback" not in err


def test_show_with_a_missing_image_folder_is_one_error_naming_it(synth_data, tmp_path, capsys):
    from raypose.cli.main import main

    folder = tmp_path / "no-such-folder"
    assert main(["data", "show", str(synth_data.train_ann), str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypose data show: error: ") and err.count("\n") == 1 and str(folder) in err
    assert not (tmp_path / "out").exists()
