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
        (lambda d: d["annotations"][0].update(keypoints=[0] * 30), r"annotation 5 .*expected 51.*got 30"),
        (lambda d: d["annotations"][0].update(category_id=9), r"annotation 5 .*unknown category_id 9"),
        (lambda d: d["annotations"][0].update(image_id=77), r"annotation 5: image_id 77"),
        (
            lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3),
            r"annotations \[5\] have a visibility",
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 2]), r"annotation 5 .*bbox"),
        (
            lambda d: d["annotations"][0]["keypoints"].__setitem__(0, "a"),
            r"annotation 5: non-numeric keypoints",
        ),
        (lambda d: d["images"][0].pop("width"), r"image 1: needs integer"),
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
