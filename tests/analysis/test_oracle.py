"""Oracle-box study with a tiny untrained KeypointRCNN (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from raypose.analysis.data import analysis_input_from_dicts
from raypose.analysis.oracle import oracle_data, oracle_study, predict_on_boxes
from raypose.checkpoint import save_checkpoint
from raypose.errors import WeightsError
from raypose.model import ModelConfig, build_model
from tests.analysis.test_error_types import coco, det, gt_ann, template

TINY = dict(
    backbone="resnet18",
    weights=None,
    backbone_weights=None,
    min_size=128,
    max_size=192,
    keypoint_head_channels=[64] * 4,
    box_head_size=256,
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(num_keypoints=23, **TINY)
    model = build_model(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, model, config)
    return path


def small_scene(num_kpts: int, image_dir):
    """Two 240x180 images, one or two small people each, image files written to ``image_dir``."""
    images, anns, dets = [], [], []
    for image_id, origins in ((1, [(20, 20)]), (2, [(10, 30), (130, 40)])):
        images.append((image_id, 240, 180))
        Image.new("RGB", (240, 180), (120, 100, 80)).save(image_dir / f"{image_id:06d}.png")
        for n, origin in enumerate(origins):
            kpts = template(num_kpts, (0, 0))
            kpts[:, :2] = kpts[:, :2] * 0.25 + origin
            anns.append(gt_ann(image_id * 10 + n, image_id, kpts, area=3000.0))
            shifted = kpts.copy()
            shifted[:, 0] += 3
            dets.append(det(image_id, shifted, 0.9 - 0.1 * n))
    return coco(num_kpts, images, anns), dets


def test_predict_on_boxes_returns_points_in_original_pixels(tiny_checkpoint):
    from raypose.checkpoint import load_model_from_checkpoint

    model, _ = load_model_from_checkpoint(tiny_checkpoint)
    images = [torch.rand(3, 180, 240), torch.rand(3, 300, 150)]
    boxes = [
        torch.tensor([[20.0, 30.0, 120.0, 170.0]]),
        torch.tensor([[10.0, 10.0, 60.0, 90.0], [70.0, 150.0, 140.0, 290.0]]),
    ]
    out = predict_on_boxes(model, images, boxes)
    assert [o["keypoints"].shape for o in out] == [(1, 23, 3), (2, 23, 3)]
    assert [o["scores"].shape for o in out] == [(1,), (2,)]
    assert out[1]["keypoints_scores"].shape == (2, 23)
    for o, b in zip(out, boxes):
        kp = o["keypoints"]
        # heatmap cells map back inside the box they were pooled from (in original pixels)
        assert (kp[..., 0] >= b[:, None, 0] - 1).all() and (kp[..., 0] <= b[:, None, 2] + 1).all()
        assert (kp[..., 1] >= b[:, None, 1] - 1).all() and (kp[..., 1] <= b[:, None, 3] + 1).all()
        assert ((o["scores"] >= 0) & (o["scores"] <= 1)).all()


def test_oracle_study_produces_the_numbers(tiny_checkpoint, tmp_path):
    gt, dets = small_scene(23, tmp_path)
    inp = analysis_input_from_dicts(gt, dets)
    result = oracle_study(inp, tiny_checkpoint, tmp_path, device="cpu")
    assert result["num_boxes"] == 3
    for key in ("detections", "oracle_boxes"):
        assert 0.0 <= result[key]["ap"] <= 1.0
    # the detections are 3 px off every point: close to perfect
    assert result["detections"]["ap50"] == pytest.approx(1.0)
    assert result["detection_error_ap"] == pytest.approx(
        result["oracle_boxes"]["ap"] - result["detections"]["ap"]
    )
    assert sum(result["errors"].values()) == 3 * 23  # every oracle box is matched to its own person
    assert set(result["oks_loss_share"]) == set(inp.schema.names)
    assert sum(result["oks_loss_share"].values()) == pytest.approx(1.0, abs=1e-5)


def test_oracle_data_keeps_ground_truth_and_sorts_by_score(tmp_path):
    gt, dets = small_scene(17, tmp_path)
    inp = analysis_input_from_dicts(gt, dets)
    kpts = inp.data.gt_kpts[[2, 0, 1]].copy()
    data = oracle_data(inp, np.array([2, 0, 1]), kpts, np.array([0.2, 0.5, 0.7]))
    assert data.dt_img.tolist() == [0, 1, 1]
    assert data.dt_scores.tolist() == [0.5, 0.7, 0.2]
    assert data.dt_rank.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(data.gt_kpts, inp.data.gt_kpts)


def test_keypoint_count_mismatch_is_an_error(tiny_checkpoint, tmp_path):
    gt, dets = small_scene(17, tmp_path)
    with pytest.raises(WeightsError, match="23 keypoints"):
        oracle_study(analysis_input_from_dicts(gt, dets), tiny_checkpoint, tmp_path, device="cpu")
