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


def test_left_and_right_are_told_by_geometry_that_survives_a_flip_not_by_colour(tmp_path):
    """Every figure faces the viewer: its left shoulder and hip are on the image's right, in the
    drawn images and in their mirrored training copies alike; which side wears the lighter shade
    is random, so colour cannot contradict the flipped labels."""
    import torch

    from raypose.data.transforms import RandomHorizontalFlip

    layout = generate_synthetic_dataset(tmp_path, 40, 0, seed=5)
    ann = load_keypoint_annotations(prepare_dataset(tmp_path)["train"])
    flip = RandomHorizontalFlip(COCO23, p=1.0)
    facing = flipped_facing = total = 0
    differences = []  # left knee's colour minus right knee's, per figure
    for i, name in enumerate(ann.file_names):
        pixels = np.asarray(Image.open(layout.images("train") / name).convert("RGB"), dtype=int)
        people = range(*ann.people_of(i).indices(ann.num_people))
        kps = torch.as_tensor(ann.keypoints[people.start:people.stop], dtype=torch.float32)
        image = torch.zeros(3, ann.heights[i], ann.widths[i])
        _, mirrored = flip(image, {"boxes": torch.zeros(len(kps), 4), "keypoints": kps.clone()})
        for row, p in enumerate(people):
            for joint in ("shoulder", "hip"):
                left, right = kps[row, COCO23.index(f"left_{joint}")], kps[row, COCO23.index(f"right_{joint}")]
                m_left = mirrored["keypoints"][row, COCO23.index(f"left_{joint}")]
                m_right = mirrored["keypoints"][row, COCO23.index(f"right_{joint}")]
                if left[2] > 0 and right[2] > 0:
                    total += 1
                    facing += bool(left[0] > right[0])
                    flipped_facing += bool(m_left[0] > m_right[0])
            left, right = (ann.keypoints[p, COCO23.index(f"{s}_knee")] for s in ("left", "right"))
            if ann.boxes_xywh[p, 3] >= 80 and left[2] == 2 and right[2] == 2:
                differences.append(pixels[int(left[1]), int(left[0])] - pixels[int(right[1]), int(right[0])])
    assert total >= 20
    assert facing / total > 0.95 and flipped_facing / total > 0.95
    assert len(differences) >= 10
    left_redder_greener_bluer = (np.array(differences) > 0).mean(axis=0)  # a colour cue: near 0 or 1
    assert ((left_redder_greener_bluer > 0.2) & (left_redder_greener_bluer < 0.8)).all(), left_redder_greener_bluer


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
    with pytest.raises(InputError, match="image_size"):
        generate_synthetic_dataset(tmp_path, 1, 1, image_size=(100, 50))
    with pytest.raises(InputError, match="no split has both"):
        prepare_dataset(tmp_path / "empty")


def test_an_easier_style_draws_one_large_person_per_image(tmp_path):
    from raypose.data.synth import SynthStyle

    easy = SynthStyle(image_size=(96, 128), max_people=1, empty_fraction=0.0, person_height=(0.7, 0.9),
                      small_fraction=0.0, clutter=0.0)
    layout = generate_synthetic_dataset(tmp_path, 0, 12, seed=3, style=easy)
    coco = _load(layout.coco("val"))
    per_image = {im["id"]: 0 for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]] += 1
        assert not ann["iscrowd"]
        # a figure 0.7-0.9 of the image height; its box is cut by the frame at most
        assert ann["bbox"][3] <= 0.95 * 128
    assert set(per_image.values()) == {1}
    assert max(ann["bbox"][3] for ann in coco["annotations"]) > 0.6 * 96
    assert _load(tmp_path / "synth.json") == {"version": 2, "train": 0, "val": 12, "seed": 3, "image_size": [96, 128],
                                              "max_people": 1, "empty_fraction": 0.0, "person_height": [0.7, 0.9],
                                              "small_fraction": 0.0, "clutter": 0.0}


@pytest.mark.parametrize("bad", [{"max_people": 0}, {"person_height": (0.9, 0.5)}, {"clutter": 2.0}])
def test_a_bad_style_is_refused_naming_the_field(bad):
    from raypose.data.synth import SynthStyle

    with pytest.raises(InputError, match=next(iter(bad))):
        SynthStyle(**bad)


def test_a_set_drawn_with_other_settings_is_refused_other_counts_are_not(tmp_path, caplog):
    from raypose.data.prepare import ensure_data
    from raypose.training.config import DataConfig

    data = DataConfig(root=str(tmp_path), kind="synthetic", synth={"train": 2, "val": 2, "max_people": 1})
    ensure_data(data)  # generates it, with its manifest
    assert len(list((tmp_path / "train2017").iterdir())) == 2
    ensure_data(data.model_copy(update={"synth": data.synth.model_copy(update={"train": 5})}))  # counts: used as is
    other = data.model_copy(update={"synth": data.synth.model_copy(update={"max_people": 3, "seed": 1})})
    with pytest.raises(InputError, match=r"max_people 1 -> 3.*seed 0 -> 1|seed 0 -> 1.*max_people 1 -> 3") as err:
        ensure_data(other)
    assert str(tmp_path) in str(err.value) and "remove that folder" in str(err.value)
    manifest = _load(tmp_path / "synth.json")
    (tmp_path / "synth.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "version"}))
    with pytest.raises(InputError, match="generator version 1, this one draws version 2"):
        ensure_data(data)  # a set drawn by an older raypose: the same settings drew other images
    (tmp_path / "synth.json").unlink()
    with caplog.at_level("WARNING"):
        ensure_data(other)  # settings unknown: used, with a warning
    assert "settings of this synthetic set are unknown" in caplog.text
