import json

import numpy as np
import pytest
import torch
from PIL import Image

from raypose.data.annotations import load_keypoint_annotations
from raypose.data.dataset import KeypointDataset, collate_fn
from raypose.data.transforms import build_train_transforms
from raypose.errors import InputError
from raypose.schema import COCO23


def _person(ann_id, image_id, labelled=True, crowd=0, bbox=(10, 5, 20, 30)):
    kps = [0] * 69
    if labelled:
        kps[0:3] = [15, 12, 2]
        kps[3 * 20 : 3 * 20 + 3] = [18, 30, 1]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": kps,
        "bbox": list(bbox),
        "area": 100.0 + ann_id,
        "iscrowd": crowd,
    }


@pytest.fixture
def tiny(tmp_path):
    """Image 1: a person, a crowd and an unlabelled person; image 2: crowd only; image 3: empty."""
    images = []
    for image_id in (1, 2, 3):
        name = f"{image_id}.png"
        array = np.full((40, 48, 3), image_id * 50, dtype=np.uint8)
        Image.fromarray(array).save(tmp_path / name)
        images.append({"id": image_id, "file_name": name, "width": 48, "height": 40})
    anns = [
        _person(1, 1),
        _person(2, 1, labelled=False, crowd=1),
        _person(3, 1, labelled=False),
        _person(4, 2, labelled=False, crowd=1),
        _person(5, 1, bbox=(1, 1, 0, 10)),
    ]
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [COCO23.coco_category(1)]})
    )
    return path, tmp_path


def test_train_mode_drops_crowd_unlabelled_degenerate_and_empty_images(tiny):
    path, images = tiny
    dataset = KeypointDataset(path, images, train=True)
    assert len(dataset) == 1
    image, target = dataset[0]
    assert image.shape == (3, 40, 48) and image.dtype == torch.float32
    assert image.max().item() == pytest.approx(50 / 255)
    assert target["boxes"].tolist() == [[10, 5, 30, 35]]
    assert target["labels"].tolist() == [1] and target["labels"].dtype == torch.int64
    assert target["keypoints"].shape == (1, 23, 3)
    assert target["keypoints"][0, 0].tolist() == [15, 12, 2]
    assert target["keypoints"][0, 20].tolist() == [18, 30, 1]
    assert target["image_id"].ndim == 0 and int(target["image_id"]) == 1
    assert target["area"].tolist() == [101.0]
    assert target["iscrowd"].tolist() == [0]


def test_eval_mode_keeps_every_image_and_person(tiny):
    path, images = tiny
    dataset = KeypointDataset(load_keypoint_annotations(path), images, train=False)
    assert len(dataset) == 3
    _, first = dataset[0]
    assert first["iscrowd"].tolist() == [0, 1, 0, 0]
    _, empty = dataset[2]
    assert empty["boxes"].shape == (0, 4) and empty["keypoints"].shape == (0, 23, 3)
    assert empty["labels"].shape == (0,) and int(empty["image_id"]) == 3
    with pytest.raises(IndexError):
        dataset[3]


def test_image_ids_restrict_the_dataset(tiny):
    path, images = tiny
    dataset = KeypointDataset(path, images, image_ids=[3, 2])
    assert [dataset.image_id(i) for i in range(len(dataset))] == [3, 2]
    with pytest.raises(InputError, match="no image with id 42"):
        KeypointDataset(path, images, image_ids=[42])


def test_missing_or_wrong_size_image_names_file_and_id(tiny):
    path, images = tiny
    (images / "1.png").unlink()
    dataset = KeypointDataset(path, images)
    with pytest.raises(InputError, match=r"1\.png: image file not found \(image id 1"):
        dataset[0]
    Image.new("RGB", (10, 10)).save(images / "2.png")
    with pytest.raises(InputError, match=r"2\.png: image id 2 is 10x10 but .* says 48x40"):
        dataset[1]
    (images / "3.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"3\.png: cannot read image id 3"):
        dataset[2]


def test_loader_over_synthetic_data_with_train_transforms(synth_data):
    torch.manual_seed(0)
    dataset = KeypointDataset(
        synth_data.train_ann, synth_data.train_images, train=True, transforms=build_train_transforms(COCO23)
    )
    assert 0 < len(dataset) <= 6
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_fn)
    seen = 0
    for images, targets in loader:
        assert isinstance(images, list) and len(images) == len(targets)
        for image, target in zip(images, targets):
            _, height, width = image.shape
            boxes, kps = target["boxes"], target["keypoints"]
            assert ((boxes[:, 2] - boxes[:, 0]) >= 1).all() and ((boxes[:, 3] - boxes[:, 1]) >= 1).all()
            labelled = kps[..., 2] > 0
            assert labelled.any(dim=1).all()
            assert (kps[..., 0][labelled] < width).all() and (kps[..., 1][labelled] < height).all()
            assert (kps[..., :2][~labelled] == 0).all()
            seen += 1
    assert seen == len(dataset)


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 7), {"a": 2})]
    images, targets = collate_fn(batch)
    assert [im.shape[1] for im in images] == [4, 6] and [t["a"] for t in targets] == [1, 2]
