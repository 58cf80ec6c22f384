import json

import numpy as np
import pytest

from raypose.data.annotations import keypoint_annotations_from_dict, load_keypoint_annotations
from raypose.errors import InputError
from raypose.schema import COCO17


def person(ann_id, image_id, k=17, visible=(0,), bbox=(10, 20, 30, 40), crowd=0, category_id=1):
    kps = [0] * (3 * k)
    for j in visible:
        kps[3 * j : 3 * j + 3] = [12 + j, 22 + j, 2]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "keypoints": kps,
        "bbox": list(bbox),
        "area": bbox[2] * bbox[3],
        "iscrowd": crowd,
    }


def coco(annotations, images=(1, 2, 3), categories=None):
    return {
        "images": [{"id": i, "file_name": f"{i:04d}.jpg", "width": 100 + i, "height": 80} for i in images],
        "annotations": annotations,
        "categories": categories if categories is not None else [COCO17.coco_category(1)],
    }


def test_people_are_grouped_by_image_in_file_order():
    data = coco([person(10, 3), person(11, 1, visible=(1, 2)), person(12, 3, crowd=1), person(13, 1)])
    ann = keypoint_annotations_from_dict(data, "x.json")
    assert ann.num_keypoints == 17
    assert ann.image_ids.tolist() == [1, 2, 3]
    assert ann.file_names.dtype.kind == "U" and ann.file_names[2] == "0003.jpg"
    assert ann.widths.tolist() == [101, 102, 103]
    assert ann.image_offsets.tolist() == [0, 2, 2, 4]
    assert ann.ann_ids[ann.people_of(0)].tolist() == [11, 13]
    assert ann.ann_ids[ann.people_of(1)].tolist() == []
    assert ann.ann_ids[ann.people_of(2)].tolist() == [10, 12]
    assert ann.iscrowd.tolist() == [False, False, False, True]
    assert ann.keypoints.shape == (4, 17, 3) and ann.keypoints.dtype == np.float32
    assert ann.keypoints[0, 2].tolist() == [14, 24, 2]
    assert ann.labelled_counts().tolist() == [2, 1, 1, 1]
    assert ann.index_of_image_id(3) == 2
    with pytest.raises(InputError, match="no image with id 9"):
        ann.index_of_image_id(9)


def test_load_from_file_accepts_single_dict_category(tmp_path):
    data = coco([person(1, 2)], categories=COCO17.coco_category(1))
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    ann = load_keypoint_annotations(path, expected_num_keypoints=17)
    assert ann.source == str(path) and ann.num_people == 1 and ann.boxes_xywh[0].tolist() == [10, 20, 30, 40]
    with pytest.raises(InputError, match="expected 23"):
        load_keypoint_annotations(path, expected_num_keypoints=23)


def test_other_known_categories_are_skipped():
    other = {"id": 2, "name": "dog"}
    data = coco([person(1, 1), person(2, 1, category_id=2)], categories=[COCO17.coco_category(1), other])
    assert keypoint_annotations_from_dict(data).ann_ids.tolist() == [1]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["annotations"][0].update(keypoints=[0] * 30),
            r"annotation 5 .*expected 51 numbers \(17 points x 3\) in a flat list, got 30 values",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=9),
            r"annotation 5 .*category_id 9 is not in 'categories'",
        ),
        (lambda d: d["annotations"][0].update(image_id=77), r"annotation 5: image_id 77"),
        (
            lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3),
            r"annotation 5 .*keypoints\[2\] \(nose visibility\) is 3",
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 2]), r"annotation 5 .*bbox"),
        (
            lambda d: d["annotations"][0]["keypoints"].__setitem__(0, "a"),
            r"annotation 5 .*keypoints\[0\] \(nose x\) is 'a'",
        ),
        (lambda d: d["images"][0].pop("width"), r"image 1: 'width' must be a positive integer"),
        (lambda d: d["annotations"].append(person(5, 1)), r"duplicate annotation ids \[5\]"),
        (lambda d: d.update(categories=[{"id": 1, "name": "person"}]), "no category with a 'keypoints' list"),
    ],
)
def test_bad_input_names_the_file_and_id(tmp_path, mutate, message):
    data = coco([person(5, 1)])
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message) as info:
        load_keypoint_annotations(path)
    assert str(path) in str(info.value)


def test_malformed_and_missing_files(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(InputError, match="broken.json: not valid JSON"):
        load_keypoint_annotations(path)
    with pytest.raises(InputError, match="not found"):
        load_keypoint_annotations(tmp_path / "missing.json")


# --- one validation for every reader (issue: malformed JSON inputs) -------------------------


def _refused(data, *words):
    with pytest.raises(InputError) as info:
        keypoint_annotations_from_dict(data, "x.json")
    message = str(info.value)
    assert message.startswith("x.json: ")
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d["annotations"][0].update(id=2**70), ["annotation #0", "'id'", "int64"]),
        (lambda d: d["annotations"][0].update(id=3.0), ["annotation #0", "'id'", "integer"]),
        (lambda d: d["annotations"][0].update(image_id=1.5), ["annotation 10", "'image_id'", "integer"]),
        (lambda d: d["annotations"][0].update(image_id=[1]), ["annotation 10", "'image_id'"]),
        (lambda d: d["annotations"][0].update(image_id="1"), ["annotation 10", "'image_id'", "integer"]),
        (lambda d: d["annotations"][0].update(category_id=[1]), ["annotation 10", "'category_id'"]),
        (lambda d: d["images"][0].update(id=2**70), ["image entry #0", "'id'", "int64"]),
        (lambda d: d["images"][0].update(width=1e308), ["image 1", "'width'", "positive integer"]),
        (lambda d: d["images"][0].update(width=float("inf")), ["image 1", "'width'"]),
        (lambda d: d["images"][0].update(file_name=None), ["image 1", "'file_name'", "non-empty string"]),
        (lambda d: d["images"][0].update(file_name=7), ["image 1", "'file_name'"]),
        (lambda d: d["images"][0].pop("file_name"), ["image 1", "'file_name'"]),
        (lambda d: d["annotations"][0].update(iscrowd="0"), ["annotation 10", "'iscrowd'", "0 or 1"]),
        (lambda d: d["annotations"][0].update(area=1e308), ["annotation 10", "image 3", "'area'"]),
        (lambda d: d["annotations"][0].update(area=float("nan")), ["annotation 10", "'area'"]),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, 1e308, 5]), ["annotation 10", "'bbox'"]),
    ],
)
def test_wrong_types_and_sizes_are_refused_naming_the_item_and_field(mutate, words):
    data = coco([person(10, 3), person(11, 1)])
    mutate(data)
    _refused(data, *words)


@pytest.mark.parametrize("top", [[], "x", 3, None])
def test_a_file_that_is_not_an_object_is_refused(top):
    _refused(top, "JSON object")


def test_iscrowd_booleans_are_accepted():
    ann = keypoint_annotations_from_dict(
        coco([person(10, 3, crowd=True), person(11, 1, crowd=False)]), "x.json"
    )
    assert sorted(ann.iscrowd.tolist()) == [False, True]


def _category(name, k, cat_id):
    return {"id": cat_id, "name": name, "keypoints": [f"p{j}" for j in range(k)], "skeleton": []}


def test_the_person_category_is_chosen_by_name_among_keypoint_categories():
    data = coco(
        [person(10, 3, k=5, category_id=2), person(11, 1)],
        categories=[_category("hand", 5, 2), COCO17.coco_category(1)],
    )
    ann = keypoint_annotations_from_dict(data, "x.json")
    assert ann.num_keypoints == 17 and ann.ann_ids.tolist() == [11]


def test_several_keypoint_categories_none_named_person_are_refused():
    data = coco(
        [person(10, 3, k=5, category_id=2)], categories=[_category("hand", 5, 2), _category("paw", 5, 3)]
    )
    _refused(data, "hand", "paw", "person")


def test_one_keypoint_category_of_another_name_is_used(caplog):
    data = coco([person(10, 3, k=5, category_id=2)], categories=[_category("hand", 5, 2)])
    with caplog.at_level("INFO"):
        assert keypoint_annotations_from_dict(data, "x.json").num_people == 1
    assert "hand" in caplog.text


def test_training_files_are_checked_before_training(tmp_path):
    from raypose.data.annotations import check_training_annotations

    good = tmp_path / "train.json"
    good.write_text(json.dumps(coco([person(10, 3)])))
    empty = tmp_path / "val.json"
    empty.write_text(json.dumps(coco([], images=())))
    with pytest.raises(InputError, match="val.json: no images"):
        check_training_annotations(good, empty)
    crowd_only = tmp_path / "crowd.json"
    crowd_only.write_text(json.dumps(coco([person(10, 3, crowd=1)])))
    with pytest.raises(InputError, match="crowd.json: no labelled person"):
        check_training_annotations(crowd_only, good)
    bad_val = tmp_path / "bad.json"
    bad_val.write_text(json.dumps(coco([person(10.0, 3)])))
    with pytest.raises(InputError, match="bad.json: annotation #0"):
        check_training_annotations(good, bad_val)
    check_training_annotations(good, good)
