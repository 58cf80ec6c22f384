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


def _person(ann_id, image_id, labelled=True, crowd=0, bbox=(10, 5, 20, 30), extra_points=0):
    kps = [0] * 69
    if labelled:
        kps[0:3] = [15, 12, 2]
        kps[3 * 20 : 3 * 20 + 3] = [18, 30, 1]
    for k in range(1, 1 + extra_points):  # more labelled points, at (k, k)
        kps[3 * k : 3 * k + 3] = [k, k, 2]
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
        _person(2, 1, labelled=False, crowd=1, bbox=(0, 0, 40, 20)),
        _person(3, 1, labelled=False, bbox=(2, 3, 8, 9)),
        _person(4, 2, labelled=False, crowd=1),
        _person(5, 1, bbox=(1, 1, 0, 10)),
    ]
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [COCO23.coco_category(1)]})
    )
    return path, tmp_path


def test_train_mode_keeps_unlabelled_people_as_boxes_and_crowds_as_ignored_regions(tiny):
    path, images = tiny
    dataset = KeypointDataset(path, images, train=True, min_keypoints_per_image=1)
    assert len(dataset) == 1  # image 2 has a crowd only, image 3 nobody
    image, target = dataset[0]
    assert image.shape == (3, 40, 48) and image.dtype == torch.float32
    assert image.max().item() == pytest.approx(50 / 255)
    # the labelled person and the unlabelled one; the crowd and the 0-wide box are not targets
    assert target["boxes"].tolist() == [[10, 5, 30, 35], [2, 3, 10, 12]]
    assert target["labels"].tolist() == [1, 1] and target["labels"].dtype == torch.int64
    assert target["keypoints"].shape == (2, 23, 3)
    assert target["keypoints"][0, 0].tolist() == [15, 12, 2]
    assert target["keypoints"][0, 20].tolist() == [18, 30, 1]
    assert target["keypoints"][1].abs().sum().item() == 0  # v = 0 everywhere: no keypoint loss
    assert target["image_id"].ndim == 0 and int(target["image_id"]) == 1
    assert target["area"].tolist() == [101.0, 103.0]
    assert target["iscrowd"].tolist() == [0, 0]
    assert target["crowd_boxes"].tolist() == [[0, 0, 40, 20]]
    assert target["crowd_boxes"].dtype == torch.float32


def test_train_images_need_ten_labelled_keypoints_as_torchvision(tmp_path):
    images, anns = [], []
    # image 1: 2 + 8 points on one person and an unlabelled person; image 2: 4 + 4 points;
    # image 3: 2 + 8 points spread over two people; image 4: 12 points, but on a crowd region
    people = {1: [(2 + 8, True), (0, False)], 2: [(4, True), (4, True)], 3: [(2, True), (8, False)], 4: []}
    for image_id, persons in people.items():
        Image.fromarray(np.zeros((40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 48, "height": 40})
        for points, labelled in persons:
            extra = points - 2 if labelled else points
            anns.append(_person(len(anns) + 1, image_id, labelled=labelled, extra_points=extra))
    crowd = _person(len(anns) + 1, 4, crowd=1, extra_points=10)
    anns.append(crowd)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [COCO23.coco_category(1)]}))
    dataset = KeypointDataset(path, tmp_path, train=True)
    assert [dataset.image_id(i) for i in range(len(dataset))] == [1, 3]
    assert [len(dataset.target(i)["boxes"]) for i in range(len(dataset))] == [2, 2]
    assert len(KeypointDataset(path, tmp_path, train=True, min_keypoints_per_image=8)) == 3


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
    with pytest.raises(InputError, match=r"3\.png: cannot read image \(image id 3 in .*ann\.json\)"):
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
            assert (kps[..., 0][labelled] < width).all() and (kps[..., 1][labelled] < height).all()
            crowd = target["crowd_boxes"]
            assert crowd.shape[1:] == (4,) and (crowd[:, 2] <= width).all() and (crowd[:, 3] <= height).all()
            assert (kps[..., :2][~labelled] == 0).all()
            seen += 1
    assert seen == len(dataset)


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 7), {"a": 2})]
    images, targets = collate_fn(batch)
    assert [im.shape[1] for im in images] == [4, 6] and [t["a"] for t in targets] == [1, 2]


def test_a_16bit_png_loads_like_its_8bit_version(tiny):
    from tests.test_images import gray_gradient, save_gray16

    path, images = tiny
    gray = gray_gradient(40, 48)
    Image.fromarray(gray).save(images / "1.png")
    save_gray16(images / "2.png", gray)
    dataset = KeypointDataset(path, images)
    image8, image16 = dataset.load_image(0), dataset.load_image(1)
    assert image16.shape == image8.shape == (3, 40, 48)
    assert (image16 - image8).abs().max().item() <= 1 / 255 + 1e-6


def test_a_bad_image_in_a_loader_worker_raises_raypose_own_message(tiny):
    """torch re-raises a worker's exception with its whole traceback as the message; the user
    must get the dataset's one-line message instead."""
    path, images = tiny
    (images / "2.png").write_bytes(b"not an image")
    loader = torch.utils.data.DataLoader(
        KeypointDataset(path, images), batch_size=1, num_workers=1, collate_fn=collate_fn
    )
    with pytest.raises(InputError) as caught:
        list(loader)
    message = str(caught.value)
    assert "Traceback" not in message and "DataLoader worker" not in message
    assert message.startswith(f"{images / '2.png'}: cannot read image") and "image id 2" in message
    assert "\n" not in message
