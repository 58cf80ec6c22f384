"""Inference options: the refined path is torchvision's with every option off; the flip test's
mirrored pass lands on the same heatmap bins; probabilities, rescoring and OKS-NMS by the numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raypose.inference_options import (
    InferenceOptions,
    decode_heatmaps,
    keypoint_flip_index,
    mirror_boxes,
    oks_nms,
    refined_detections,
    rescored,
)
from raypose.model import ModelConfig, build_model
from raypose.schema import COCO23
from raypose.training.loop import detect
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model(ModelConfig(**TINY_MODEL, num_keypoints=23)).eval()
    net.roi_heads.score_thresh = 0.0  # an untrained model: keep its low-scoring boxes, so there are people
    net.roi_heads.detections_per_img = 12
    return net


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 150, 171, generator=g), torch.rand(3, 133, 160, generator=g)]


def _refined(model, images, options):
    batch, _ = model.transform(images)
    features = model.backbone(batch.tensors)
    proposals, _ = model.rpn(batch, features)
    return refined_detections(model, images, batch, features, proposals, options, model.backbone)


@torch.inference_mode()
def test_with_every_option_off_the_refined_path_is_torchvisions(model, images):
    stock = model(images)
    mine = _refined(model, images, InferenceOptions())
    assert sum(len(d["boxes"]) for d in stock) >= 10
    for a, b in zip(stock, mine):
        assert set(b) == {"boxes", "labels", "scores", "keypoints", "keypoints_scores"}
        for key in b:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)


@torch.inference_mode()
def test_detect_routes_options_and_the_flip_test_keeps_boxes_and_moves_keypoints(model, images):
    stock = detect(model, images)
    flipped = detect(model, images, options=InferenceOptions(flip_test=True))
    for a, b in zip(stock, flipped):
        torch.testing.assert_close(b["boxes"], a["boxes"])
        torch.testing.assert_close(b["scores"], a["scores"])
        assert not torch.allclose(b["keypoints"], a["keypoints"])


def test_a_mirrored_pixel_falls_in_the_mirrored_heatmap_bin():
    """Input pixel x mirrors to W - 1 - x; after a resize by s its heatmap bin j in a box must be
    bin 55 - j of the mirrored box (torchvision's encoding: floor((x' - x1) * 56 / w)). Mirroring
    boxes by W' - x instead is s pixels off: many bins for small boxes."""
    input_width, resized_width = 171, 256  # s = 1.497
    s = resized_width / input_width
    box = torch.tensor([[40.3, 10.0, 61.7, 90.0]])  # 21.4 px wide: a bin is 0.38 px
    mirrored = mirror_boxes(box, resized_width, input_width)
    torch.testing.assert_close(mirror_boxes(mirrored, resized_width, input_width), box)
    w = float(box[0, 2] - box[0, 0])
    agree = naive = 0
    xs = np.arange(28, 41) + 0.37  # input pixels inside the box, off the bin edges
    for x in xs:
        j = math.floor((x * s - float(box[0, 0])) * 56 / w)
        j_mirror = math.floor(((input_width - 1 - x) * s - float(mirrored[0, 0])) * 56 / w)
        agree += j_mirror == 55 - j
        shifted = resized_width - float(box[0, 2])  # x -> W' - x
        naive += math.floor(((input_width - 1 - x) * s - shifted) * 56 / w) == 55 - j
    assert agree == len(xs)
    assert naive == 0


@torch.inference_mode()
def test_the_flip_test_is_mirror_symmetric(model, images):
    """Averaging a pass with its mirror makes keypoints of a mirrored image the mirror of the
    image's, with left and right swapped, once the boxes are the same (here: given)."""
    from raypose.inference_options import _keypoint_logits

    image = images[0]
    mirrored_image = image.flip(-1)
    boxes = [torch.tensor([[30.0, 20.0, 120.0, 140.0], [60.5, 5.25, 99.0, 70.0]])]

    def averaged(img, bxs):
        batch, _ = model.transform([img])
        plain = _keypoint_logits(model, model.backbone(batch.tensors), bxs, batch.image_sizes)
        flipped_batch, _ = model.transform([img.flip(-1)])
        width = batch.image_sizes[0][1]
        mirror = [mirror_boxes(bxs[0], width, img.shape[-1])]
        flipped = _keypoint_logits(model, model.backbone(flipped_batch.tensors), mirror, batch.image_sizes)
        return (plain + flipped.flip(-1)[:, keypoint_flip_index(model)]) / 2, batch.image_sizes[0][1]

    a, width = averaged(image, boxes)
    b, _ = averaged(mirrored_image, [mirror_boxes(boxes[0], width, image.shape[-1])])
    torch.testing.assert_close(b, a.flip(-1)[:, keypoint_flip_index(model)], rtol=0, atol=1e-4)
    assert keypoint_flip_index(model)[COCO23.index("left_heel")] == COCO23.index("right_heel")


def test_probabilities_are_the_softmax_of_the_peak_and_ignore_a_shift():
    maps = torch.zeros(2, 3, 56, 56)
    maps[0, 0, 10, 20] = 30.0  # all the mass in one bin
    maps[0, 1] = torch.randn(56, 56)
    maps[1] = maps[0] + 7.0  # the same maps, shifted: torchvision's peak logit moves, the probability does not
    rois = torch.tensor([[0.0, 0.0, 56.0, 56.0], [0.0, 0.0, 56.0, 56.0]])
    keypoints, peaks, probs = decode_heatmaps(maps, rois)
    assert probs[0, 0] > 0.99
    assert probs[0, 2] == pytest.approx(1 / 56**2, rel=1e-4)  # a flat map: one bin's share
    assert 0 < probs[0, 1] < 0.05
    torch.testing.assert_close(probs[1], probs[0])
    torch.testing.assert_close(peaks[1], peaks[0] + 7.0)
    assert keypoints[0, 0, :2].tolist() == [20.5, 10.5]  # bin centre, as torchvision decodes


def test_rescoring_multiplies_by_the_mean_probability_of_the_confident_points():
    probs = torch.tensor([[0.9, 0.5, 0.1, 0.05], [0.1, 0.1, 0.0, 0.19], [0.3, 0.3, 0.3, 0.3]])
    scores = torch.tensor([0.8, 0.9, 0.5])
    torch.testing.assert_close(rescored(scores, probs, 0.2), torch.tensor([0.8 * 0.7, 0.0, 0.5 * 0.3]))


def test_oks_nms_drops_a_duplicate_person_that_box_nms_keeps():
    """Two detections of one person (the same keypoints) whose boxes overlap by IoU 0.4 survive box
    NMS at 0.5; OKS-NMS keeps the better-scored one, and a second person nearby."""
    g = torch.Generator().manual_seed(0)
    person = torch.rand(23, 2, generator=g) * 40 + torch.tensor([50.0, 50.0])
    keypoints = torch.stack([person, person + 0.5, person + torch.tensor([60.0, 0.0])])
    keypoints = torch.cat([keypoints, torch.ones(3, 23, 1)], dim=-1)
    boxes = torch.tensor([[50.0, 50.0, 90.0, 90.0], [50.0, 50.0, 90.0, 66.0], [110.0, 50.0, 150.0, 90.0]])
    assert oks_nms(keypoints, boxes, 0.9).tolist() == [0, 2]
    assert oks_nms(keypoints[[1, 0, 2]], boxes[[1, 0, 2]], 0.9).tolist() == [0, 2]  # score order decides
    assert oks_nms(keypoints, boxes, 1.0).tolist() == [0, 1, 2]


@torch.inference_mode()
def test_all_options_together_reorder_and_thin_the_people(model, images):
    options = InferenceOptions(flip_test=True, rescore=True, oks_nms=True, keypoint_probs=True, oks_nms_thresh=0.01)
    stock = detect(model, images)
    out = detect(model, images, options=options)
    for a, b in zip(stock, out):
        assert len(b["scores"]) <= len(a["scores"])
        assert (b["scores"][:-1] >= b["scores"][1:]).all()
        assert (b["scores"] <= a["scores"].max() + 1e-6).all()
        assert ((b["keypoints_scores"] >= 0) & (b["keypoints_scores"] <= 1)).all()
    assert sum(len(b["scores"]) for b in out) < sum(len(a["scores"]) for a in stock)


def test_option_names_and_labels():
    assert InferenceOptions().stock and InferenceOptions().label() == "stock"
    both = InferenceOptions.from_names(["flip_test", "oks_nms"])
    assert both.label() == "flip_test+oks_nms" and not both.stock
    with pytest.raises(ValueError, match="unknown inference options.*valid: flip_test"):
        InferenceOptions.from_names(["flip"])


def test_the_config_key_is_checked_and_reaches_every_evaluation(tiny_train_config):
    from raypose.errors import ConfigError
    from raypose.training.config import validate_train_config

    config = validate_train_config({**tiny_train_config, "inference": {"flip_test": True, "oks_nms_thresh": 0.8}})
    assert config.inference == InferenceOptions(flip_test=True, oks_nms_thresh=0.8)
    with pytest.raises(ConfigError, match="inference.flip"):
        validate_train_config({**tiny_train_config, "inference": {"flip": True}})
    with pytest.raises(ConfigError, match="inference.rescore_thresh"):
        validate_train_config({**tiny_train_config, "inference": {"rescore_thresh": 2}})
