import json

import pytest

from raypose.data.merge import merge_foot, merge_foot_files
from raypose.errors import ConfigError, InputError
from raypose.schema import COCO17, COCO23


def _coco():
    anns = []
    for ann_id, image_id in ((1, 10), (2, 10), (3, 11)):
        kps = [0] * 51
        kps[0:3] = [5, 6, 2]
        anns.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": 1,
                "keypoints": kps,
                "num_keypoints": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
            }
        )
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 50, "height": 50} for i in (10, 11)]
    return {"info": {"v": 1}, "images": images, "annotations": anns, "categories": [COCO17.coco_category(1)]}


def _foot(points, ids=((1, 10), (3, 11)), single_category=False):
    anns = []
    for ann_id, image_id in ids:
        foot = [ann_id, 40, 2, 0, 0, 0, 30, 41, 1, 0, 0, 0, 0, 0, 0, 33, 44, 2]
        kps = ([9] * 51 + foot) if points == 23 else foot
        anns.append(
            {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kps, "num_keypoints": 99}
        )
    category = COCO23.coco_category(1)
    return {"annotations": anns, "categories": category if single_category else [category]}


@pytest.mark.parametrize(("points", "single_category"), [(23, False), (6, True)])
def test_merge_appends_foot_points_by_annotation_id(points, single_category):
    merged, report = merge_foot(_coco(), _foot(points, single_category=single_category))
    assert (report.matched, report.coco_only, report.foot_only, report.images) == (2, 1, 0, 2)
    by_id = {a["id"]: a for a in merged["annotations"]}
    assert by_id[1]["keypoints"][:3] == [5, 6, 2]  # body points come from COCO, not the foot file
    assert by_id[1]["keypoints"][51:54] == [1, 40, 2]
    assert by_id[3]["keypoints"][51:] == [3, 40, 2, 0, 0, 0, 30, 41, 1, 0, 0, 0, 0, 0, 0, 33, 44, 2]
    assert by_id[2]["keypoints"][51:] == [0] * 18
    assert [len(a["keypoints"]) for a in merged["annotations"]] == [69, 69, 69]
    assert by_id[1]["num_keypoints"] == 4 and by_id[2]["num_keypoints"] == 1  # recomputed, not 99
    assert merged["categories"] == [COCO23.coco_category(1)]
    assert merged["images"] == _coco()["images"] and merged["info"] == {"v": 1}


def test_merge_does_not_modify_its_inputs():
    coco, foot = _coco(), _foot(23)
    merge_foot(coco, foot)
    assert coco == _coco() and foot == _foot(23)


def test_unmatched_foot_ids_are_an_error_unless_allowed():
    foot = _foot(6, ids=((1, 10), (8, 10), (9, 11)))
    with pytest.raises(InputError, match=r"f\.json: 2 foot annotation ids .*\[8, 9\].*--allow-unmatched"):
        merge_foot(_coco(), foot, foot_name="f.json")
    merged, report = merge_foot(_coco(), foot, allow_unmatched=True)
    assert (report.matched, report.coco_only, report.foot_only) == (1, 2, 2)
    assert report.unmatched_foot_ids == [8, 9]
    assert len(merged["annotations"]) == 3


def test_image_id_disagreement_names_both_images():
    with pytest.raises(InputError, match=r"annotation 3 is on image 10 .* on image 11"):
        merge_foot(_coco(), _foot(6, ids=((3, 10),)))


@pytest.mark.parametrize(
    ("which", "mutate", "message"),
    [
        ("foot", lambda c, f: f["annotations"][0].update(keypoints=[0] * 21), r"annotation 1 .*got 21"),
        ("coco", lambda c, f: c["annotations"][1].update(keypoints=[0] * 69), r"annotation 2 .*expected 51"),
        ("coco", lambda c, f: c.update(categories=[COCO23.coco_category(1)]), "has 23 keypoints"),
        (
            "foot",
            lambda c, f: f["annotations"].append(dict(f["annotations"][0])),
            "duplicate annotation id 1",
        ),
        ("foot", lambda c, f: f.pop("annotations"), "'annotations'"),
    ],
)
def test_bad_input_names_file_and_id(which, mutate, message):
    coco, foot = _coco(), _foot(23)
    mutate(coco, foot)
    with pytest.raises(InputError, match=message) as info:
        merge_foot(coco, foot, coco_name="c.json", foot_name="f.json")
    assert f"{which[0]}.json" in str(info.value)


def test_merge_files_writes_atomically(tmp_path):
    coco_path, foot_path, out = tmp_path / "c.json", tmp_path / "f.json", tmp_path / "out" / "m.json"
    coco_path.write_text(json.dumps(_coco()))
    foot_path.write_text(json.dumps(_foot(6, single_category=True)))
    report = merge_foot_files(coco_path, foot_path, out)
    assert report.matched == 2
    assert len(json.loads(out.read_text())["annotations"][0]["keypoints"]) == 69
    before = out.read_text()
    foot_path.write_text(json.dumps(_foot(6, ids=((77, 10),))))
    with pytest.raises(InputError, match=r"\[77\]"):
        merge_foot_files(coco_path, foot_path, out)
    assert out.read_text() == before  # a failed merge leaves the old output alone
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json"]  # and no temp files


# Each bad foot value sits at position `offset` of the first foot point (left_big_toe: x, y, v).
BAD_POINT_VALUES = [
    (0, float("nan"), "left_big_toe x", "finite number"),
    (1, float("inf"), "left_big_toe y", "finite number"),
    (0, -float("inf"), "left_big_toe x", "finite number"),
    (1, "40", "left_big_toe y", "finite number"),
    (0, None, "left_big_toe x", "finite number"),
    (0, True, "left_big_toe x", "finite number"),
    (2, 7, "left_big_toe visibility", r"0 \(unlabelled\), 1 .* or 2"),
    (2, -1, "left_big_toe visibility", r"0 \(unlabelled\), 1 .* or 2"),
    (2, 1.5, "left_big_toe visibility", r"0 \(unlabelled\), 1 .* or 2"),
    (2, float("nan"), "left_big_toe visibility", "finite number"),
]


@pytest.mark.parametrize("points", [6, 23])
@pytest.mark.parametrize(("offset", "value", "field", "rule"), BAD_POINT_VALUES)
def test_bad_foot_point_names_file_annotation_and_field(points, offset, value, field, rule):
    foot = _foot(points, ids=((3, 11),))
    first_foot = 3 * 17 if points == 23 else 0
    foot["annotations"][0]["keypoints"][first_foot + offset] = value
    with pytest.raises(InputError, match=rule) as info:
        merge_foot(_coco(), foot, coco_name="c.json", foot_name="f.json")
    message = str(info.value)
    assert message.startswith("f.json: annotation 3 (image 11)")
    assert f"keypoints[{first_foot + offset}] ({field})" in message


@pytest.mark.parametrize(("offset", "value"), [(0, float("nan")), (1, "x"), (2, 3)])
def test_bad_body_point_names_the_coco_file(offset, value):
    coco = _coco()
    coco["annotations"][1]["keypoints"][3 + offset] = value  # left_eye
    with pytest.raises(InputError, match=r"^c\.json: annotation 2 \(image 10\): keypoints\[\d\] \(left_eye"):
        merge_foot(coco, _foot(6), coco_name="c.json", foot_name="f.json")


def test_merged_file_is_standard_json_and_nan_input_writes_nothing(tmp_path):
    coco_path, foot_path, out = tmp_path / "c.json", tmp_path / "f.json", tmp_path / "m.json"
    coco_path.write_text(json.dumps(_coco()))
    foot_path.write_text(json.dumps(_foot(6)))
    merge_foot_files(coco_path, foot_path, out)

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(out.read_text(), parse_constant=no_constants)
    out.unlink()
    foot = _foot(6)
    foot["annotations"][1]["keypoints"][15] = float("nan")  # json.dumps writes the NaN token
    foot_path.write_text(json.dumps(foot))
    with pytest.raises(InputError, match=r"annotation 3 .*keypoints\[15\] \(right_heel x\) is nan"):
        merge_foot_files(coco_path, foot_path, out)
    assert not out.exists()


@pytest.mark.parametrize("which", ["coco", "foot"])
def test_out_equal_to_an_input_is_refused_and_the_input_kept(tmp_path, monkeypatch, which):
    coco_path, foot_path = tmp_path / "c.json", tmp_path / "f.json"
    coco_path.write_text(json.dumps(_coco()))
    foot_path.write_text(json.dumps(_foot(6)))
    before = {p: p.read_bytes() for p in (coco_path, foot_path)}
    monkeypatch.chdir(tmp_path)
    out = "./c.json" if which == "coco" else tmp_path / "x" / ".." / "f.json"
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match=r"is also an input .*write to another file"):
        merge_foot_files(coco_path, foot_path, out)
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda ann: ann.update(bbox=[0, 0, float("nan"), 10]), ["annotation 1", "'bbox'"]),
        (lambda ann: ann.update(area=float("inf")), ["annotation 1", "'area'"]),
        (lambda ann: ann.update(id=3.0), ["annotation #0", "'id'", "integer"]),
        (lambda ann: ann.update(image_id=10.0), ["annotation 1", "'image_id'", "integer"]),
    ],
)
def test_non_finite_numbers_and_float_ids_are_refused_and_nothing_is_written(tmp_path, mutate, words):
    coco = _coco()
    mutate(coco["annotations"][0])
    (tmp_path / "c.json").write_text(json.dumps(coco))  # NaN / Infinity tokens, as a bad file has them
    (tmp_path / "f.json").write_text(json.dumps(_foot(23)))
    with pytest.raises(InputError) as info:
        merge_foot_files(
            tmp_path / "c.json", tmp_path / "f.json", tmp_path / "out.json", allow_unmatched=True
        )
    assert str(info.value).startswith(f"{tmp_path / 'c.json'}: ")
    assert all(word in str(info.value) for word in words), info.value
    assert not (tmp_path / "out.json").exists()


def test_foot_ids_must_be_integers():
    foot = _foot(23)
    foot["annotations"][0]["id"] = 1.0
    with pytest.raises(InputError, match=r"f.json: annotation #0 .*'id' must be an integer"):
        merge_foot(_coco(), foot, coco_name="c.json", foot_name="f.json")
