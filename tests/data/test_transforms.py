import pytest
import torch

from raypose.data.transforms import (
    PhotometricJitter,
    RandomHorizontalFlip,
    RandomScaleJitter,
    build_eval_transforms,
    build_train_transforms,
)
from raypose.schema import COCO23

W, H = 40, 30


def _sample():
    """An image with one bright pixel under the left wrist, and a target with 2 people."""
    image = torch.zeros(3, H, W)
    kps = torch.zeros(2, 23, 3)
    left_wrist, right_wrist = COCO23.index("left_wrist"), COCO23.index("right_wrist")
    kps[0, left_wrist] = torch.tensor([5.0, 10.0, 2])  # on pixel (col 5, row 10): COCO points are pixel indices
    kps[0, right_wrist] = torch.tensor([20.0, 12.0, 1])
    kps[1, left_wrist] = torch.tensor([30.0, 20.0, 2])
    image[:, 10, 5] = 1.0
    target = {
        "boxes": torch.tensor([[2.0, 4.0, 24.0, 20.0], [28.0, 15.0, 36.0, 28.0]]),
        "labels": torch.ones(2, dtype=torch.int64),
        "keypoints": kps,
        "area": torch.tensor([100.0, 50.0]),
        "iscrowd": torch.zeros(2, dtype=torch.int64),
        "image_id": torch.tensor(7),
    }
    return image, target


def test_flip_mirrors_pixels_points_and_boxes_and_swaps_sides():
    image, target = _sample()
    flipped, out = RandomHorizontalFlip(COCO23, p=1.0)(image, target)
    lw, rw = COCO23.index("left_wrist"), COCO23.index("right_wrist")
    # The old left wrist is now labelled right wrist, at W - 1 - x, still on the bright pixel.
    assert out["keypoints"][0, rw].tolist() == [W - 1 - 5, 10, 2]
    assert out["keypoints"][0, lw].tolist() == [W - 1 - 20, 12, 1]
    assert flipped[0, 10, W - 1 - 5] == 1.0
    assert out["boxes"][0].tolist() == [W - 24.0, 4.0, W - 2.0, 20.0]
    unlabelled = out["keypoints"][..., 2] == 0
    assert (out["keypoints"][..., :2][unlabelled] == 0).all()
    again, back = RandomHorizontalFlip(COCO23, p=1.0)(flipped, out)
    assert torch.equal(again, image) and torch.allclose(back["keypoints"], target["keypoints"])
    assert torch.equal(target["boxes"], _sample()[1]["boxes"])  # input not modified


def test_a_keypoint_on_a_pixel_stays_on_that_pixel_when_flipped():
    """COCO keypoints are pixel indices: a point at column x of a W-wide image lands on column
    W - 1 - x, where its pixel goes. W - x would be one pixel off, on every flipped image."""
    image, target = _sample()
    image.zero_()
    lw, rw = COCO23.index("left_wrist"), COCO23.index("right_wrist")
    for x in (0, 5, W - 1):
        target["keypoints"][0, lw] = torch.tensor([float(x), 10.0, 2])
        image[:, 10, x] = 1.0
        flipped, out = RandomHorizontalFlip(COCO23, p=1.0)(image, target)
        fx, fy = out["keypoints"][0, rw, :2].tolist()
        assert fx == W - 1 - x and fy == 10 and fx.is_integer()
        assert flipped[0, 10, int(fx)] == 1.0  # on the mirrored pixel, not its neighbour
        image[:, 10, x] = 0.0


def test_flip_probability_zero_is_identity():
    image, target = _sample()
    out_image, out = RandomHorizontalFlip(COCO23, p=0.0)(image, target)
    assert out_image is image and out is target


def test_scale_jitter_moves_points_with_the_pixels():
    torch.manual_seed(3)
    image, target = _sample()
    out_image, out = RandomScaleJitter((0.5, 0.5))(image, target)
    assert out_image.shape == image.shape
    lw = COCO23.index("left_wrist")
    x, y, v = out["keypoints"][0, lw].tolist()
    assert v == 2
    col, row = int(x), int(y)
    patch = out_image[0, max(0, row - 1) : row + 2, max(0, col - 1) : col + 2]
    assert patch.max() > 0.2  # the bright pixel shrank to a dimmer blob around the moved point
    assert out["area"].tolist() == pytest.approx([25.0, 12.5])
    w0 = target["boxes"][0, 2] - target["boxes"][0, 0]
    assert (out["boxes"][0, 2] - out["boxes"][0, 0]).item() == pytest.approx(w0.item() / 2)


def test_scale_jitter_zoom_in_drops_points_that_leave_the_canvas():
    torch.manual_seed(0)
    image, target = _sample()
    _, out = RandomScaleJitter((3.0, 3.0))(image, target)
    kps = out["keypoints"]
    labelled = kps[..., 2] > 0
    assert (kps[..., 0][labelled] < W).all() and (kps[..., 1][labelled] < H).all()
    assert (kps[..., 0][labelled] >= 0).all()
    assert (out["boxes"][:, 2] <= W).all() and (out["boxes"][:, 0] >= 0).all()
    assert ((out["boxes"][:, 2:] - out["boxes"][:, :2]) >= 2).all()  # slivers under min_box_size go
    assert len(out["labels"]) == len(out["boxes"]) == len(kps) == len(out["area"])


def _with_crowd_and_unlabelled():
    """The sample plus a crowd region and a third person without labelled keypoints."""
    image, target = _sample()
    target["boxes"] = torch.cat([target["boxes"], torch.tensor([[8.0, 22.0, 14.0, 29.0]])])
    target["keypoints"] = torch.cat([target["keypoints"], torch.zeros(1, 23, 3)])
    target["labels"] = torch.ones(3, dtype=torch.int64)
    target["area"] = torch.tensor([100.0, 50.0, 20.0])
    target["iscrowd"] = torch.zeros(3, dtype=torch.int64)
    target["crowd_boxes"] = torch.tensor([[1.0, 2.0, 11.0, 12.0]])
    return image, target


def test_flip_moves_crowd_regions():
    image, target = _with_crowd_and_unlabelled()
    _, out = RandomHorizontalFlip(COCO23, p=1.0)(image, target)
    assert out["crowd_boxes"].tolist() == [[W - 11.0, 2.0, W - 1.0, 12.0]]
    assert out["boxes"][2].tolist() == [W - 14.0, 22.0, W - 8.0, 29.0]


def test_scale_jitter_keeps_unlabelled_people_and_moves_crowd_regions_with_the_boxes():
    torch.manual_seed(3)
    image, target = _with_crowd_and_unlabelled()
    _, out = RandomScaleJitter((0.5, 0.5))(image, target)
    assert len(out["boxes"]) == len(out["keypoints"]) == 3
    assert out["keypoints"][2].abs().sum().item() == 0
    shift = out["boxes"][0, :2] - target["boxes"][0, :2] * 0.5  # the random offset (dx, dy)
    expected = target["crowd_boxes"] * 0.5 + shift.repeat(2)
    assert torch.allclose(out["crowd_boxes"], expected)
    assert torch.allclose(out["boxes"][2], target["boxes"][2] * 0.5 + shift.repeat(2))


def test_photometric_changes_pixels_not_targets_and_is_seeded():
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(1))
    _, target = _sample()
    torch.manual_seed(5)
    a, out = PhotometricJitter()(image, target)
    torch.manual_seed(5)
    b, _ = PhotometricJitter()(image, target)
    assert torch.equal(a, b) and not torch.equal(a, image)
    assert a.min() >= 0 and a.max() <= 1
    assert out is target


def test_builders():
    train = build_train_transforms(COCO23)
    assert [type(t).__name__ for t in train.transforms] == [
        "RandomHorizontalFlip",
        "RandomScaleJitter",
        "PhotometricJitter",
    ]
    plain = build_train_transforms(COCO23, hflip_prob=0, scale_range=None, photometric=False)
    image, target = _sample()
    assert plain(image, target)[0] is image
    assert build_eval_transforms()(image, target) == (image, target)
    with pytest.raises(ValueError):
        RandomScaleJitter((1.5, 0.5))
