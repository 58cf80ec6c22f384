import json

import numpy as np
import pytest
from PIL import Image

from raypose.data.annotations import load_keypoint_annotations
from raypose.data.synth import generate_synthetic_dataset, prepare_dataset
from raypose.errors import InputError
from raypose.schema import COCO23


def _load(path):
    return json.loads(path.read_text())


def test_source_files_have_the_real_layouts(synth_data):
    coco = _load(synth_data.train_coco)
    assert {len(a["keypoints"]) for a in coco["annotations"]} == {51}
    assert len(coco["categories"][0]["keypoints"]) == 17
    train_foot, val_foot = _load(synth_data.train_foot), _load(synth_data.val_foot)
    assert {len(a["keypoints"]) for a in train_foot["annotations"]} == {69}
    assert {len(a["keypoints"]) for a in val_foot["annotations"]} == {18}
    assert isinstance(val_foot["categories"], dict) and isinstance(train_foot["categories"], list)
    coco_ids = {a["id"] for a in coco["annotations"]}
    foot_ids = {a["id"] for a in train_foot["annotations"]}
    assert foot_ids < coco_ids  # only a subset of people carry foot points, as in CMU's data
    for ann in coco["annotations"]:
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])


def test_merged_annotations_are_consistent_with_the_images(synth_data):
    for ann_path, images in (
        (synth_data.train_ann, synth_data.train_images),
        (synth_data.val_ann, synth_data.val_images),
    ):
        ann = load_keypoint_annotations(ann_path, expected_num_keypoints=23)
        for i, name in enumerate(ann.file_names):
            with Image.open(images / name) as im:
                assert im.size == (ann.widths[i], ann.heights[i])
        kps = ann.keypoints
        labelled = kps[..., 2] > 0
        assert set(np.unique(kps[..., 2]).tolist()) <= {0.0, 1.0, 2.0}
        assert (kps[..., :2][~labelled] == 0).all()
        widths = np.repeat(ann.widths, np.diff(ann.image_offsets))[:, None]
        heights = np.repeat(ann.heights, np.diff(ann.image_offsets))[:, None]
        assert (kps[..., 0] < widths)[labelled].all() and (kps[..., 1] < heights)[labelled].all()
        assert (ann.boxes_xywh[:, 2:] > 0).all()
        assert (kps[..., 2] == 2).any() and (kps[:, 17:, 2] > 0).any()


def test_limb_colours_mark_left_and_right(synth_data):
    """Visible wrists/elbows/knees/ankles sit on red (person's left) or blue (right) joint dots."""
    ann = load_keypoint_annotations(synth_data.train_ann)
    correct = total = 0
    for i, name in enumerate(ann.file_names):
        pixels = np.asarray(Image.open(synth_data.train_images / name).convert("RGB"), dtype=int)
        for p in range(*ann.people_of(i).indices(ann.num_people)):
            if ann.boxes_xywh[p, 3] < 80:
                continue
            for joint in ("elbow", "wrist", "knee", "ankle"):
                for side, sign in (("left", 1), ("right", -1)):
                    x, y, v = ann.keypoints[p, COCO23.index(f"{side}_{joint}")]
                    if v == 2:
                        r, _, b = pixels[int(y), int(x)]
                        correct += sign * (r - b) > 0
                        total += 1
    assert total >= 10
    assert correct / total > 0.85


def test_generation_is_deterministic_by_seed(tmp_path):
    a = generate_synthetic_dataset(tmp_path / "a", 2, 1, seed=5, image_size=(64, 80))
    b = generate_synthetic_dataset(tmp_path / "b", 3, 1, seed=5, image_size=(64, 80))
    c = generate_synthetic_dataset(tmp_path / "c", 2, 1, seed=6, image_size=(64, 80))
    ja, jb, jc = (_load(x.coco("train")) for x in (a, b, c))
    assert ja["annotations"] == [x for x in jb["annotations"] if x["image_id"] <= 2]
    assert (a.images("train") / ja["images"][0]["file_name"]).read_bytes() == (
        b.images("train") / ja["images"][0]["file_name"]
    ).read_bytes()
    assert ja != jc
    assert _load(a.coco("val")) == _load(b.coco("val"))


def test_bad_arguments_and_missing_sources(tmp_path):
    with pytest.raises(InputError, match="image counts"):
        generate_synthetic_dataset(tmp_path, -1, 1)
    with pytest.raises(InputError, match="image size range"):
        generate_synthetic_dataset(tmp_path, 1, 1, image_size=(100, 50))
    with pytest.raises(InputError, match="no split has both"):
        prepare_dataset(tmp_path / "empty")
