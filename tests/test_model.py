"""Model factory: backbones, freezing depths, 17 -> 23 keypoint weight transfer, checkpoints, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

from raypose.checkpoint import load_model_from_checkpoint, save_checkpoint
from raypose.cli.main import main
from raypose.errors import WeightsError
from raypose.model import (
    BACKBONE_WEIGHTS,
    COCO_KEYPOINT_WEIGHTS,
    KEYPOINT_PREDICTOR_PREFIX,
    ModelConfig,
    build_model,
    count_parameters,
)
from raypose.schema import COCO17, COCO23

TINY = dict(
    backbone="resnet18", weights=None, backbone_weights=None, min_size=128, max_size=160,
    keypoint_head_channels=[32, 32], box_head_size=64,
)


def trainable_prefixes(model) -> set[str]:
    return {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("backbone") else "")
            for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("none", {"backbone.body", "backbone.fpn", "rpn", "roi_heads"}),
        ("backbone", {"backbone.fpn", "rpn", "roi_heads"}),
        ("fpn", {"rpn", "roi_heads"}),
        ("roi", {"roi_heads"}),
    ],
)
def test_freeze_levels(level, expected):
    model = build_model(ModelConfig(**TINY, freeze=level))
    assert trainable_prefixes(model) == expected
    counts = count_parameters(model)
    assert 0 < counts["trainable"] <= counts["total"]


def test_trainable_backbone_layers_and_output_shapes():
    model = build_model(ModelConfig(**TINY, trainable_backbone_layers=2))
    body = {n.split(".")[2] for n, p in model.named_parameters() if n.startswith("backbone.body") and p.requires_grad}
    assert body == {"layer3", "layer4"}
    model.eval()
    out = model([torch.rand(3, 120, 150)])[0]
    assert out["keypoints"].shape[1:] == (23, 3) and out["keypoints_scores"].shape[1:] == (23,)


def test_a_model_started_from_weights_trains_three_resnet_stages_as_torchvision(tmp_path):
    """torchvision's keypointrcnn_resnet50_fpn leaves 3 stages trainable when it starts from
    trained weights (5 from scratch); raypose's null trainable_backbone_layers does the same."""
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)

    def body(**kw) -> set[str]:
        model = build_model(ModelConfig(**{**TINY, **kw}))
        return {n.split(".")[2] for n, p in model.named_parameters() if n.startswith("backbone.body") and p.requires_grad}

    assert body(backbone_weights=str(path)) == {"layer2", "layer3", "layer4"}
    assert body() == {"conv1", "layer1", "layer2", "layer3", "layer4"}  # from scratch: all 5 stages
    assert body(backbone_weights=str(path), trainable_backbone_layers=5) >= {"conv1", "layer1"}


def test_a_narrower_fpn_feeds_every_head_and_keeps_the_trainable_layers():
    wide = build_model(ModelConfig(**{**TINY, "fpn_channels": 256}, trainable_backbone_layers=2))
    narrow = build_model(ModelConfig(**{**TINY, "fpn_channels": 64}, trainable_backbone_layers=2))
    assert narrow.backbone.out_channels == 64
    assert narrow.rpn.head.conv[0][0].in_channels == 64
    assert narrow.roi_heads.keypoint_head[0].in_channels == 64
    assert narrow.roi_heads.box_head.fc6.in_features == 64 * 7 * 7
    trainable = {n.split(".")[2] for n, p in narrow.named_parameters() if n.startswith("backbone.body") and p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(narrow) < count(wide) - 2_000_000
    narrow.eval()
    out = narrow([torch.rand(3, 120, 150)])[0]
    assert out["keypoints"].shape[1:] == (23, 3)


@pytest.fixture(scope="module")
def coco17_state(tmp_path_factory):
    """A 17-keypoint ResNet-50 KeypointRCNN state dict in torchvision's layout (frozen batch norm,
    as the published COCO weights), every tensor random so that a copy is told from an init."""
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    model = torchvision.models.detection.KeypointRCNN(_resnet_fpn_extractor(body, 3), num_classes=2, num_keypoints=17)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g).to(v.dtype) for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "kprcnn17.pth"
    torch.save(state, path)
    return path, state


def test_17_keypoint_weights_grow_to_23(coco17_state):
    path, state = coco17_state
    model = build_model(ModelConfig(backbone="resnet50", num_keypoints=23, weights=str(path), min_size=128))
    new = model.state_dict()
    for name, value in state.items():
        if name.startswith(KEYPOINT_PREDICTOR_PREFIX):
            continue
        assert torch.equal(new[name], value), name
    w_old, w_new = state[KEYPOINT_PREDICTOR_PREFIX + "weight"], new[KEYPOINT_PREDICTOR_PREFIX + "weight"]
    b_old, b_new = state[KEYPOINT_PREDICTOR_PREFIX + "bias"], new[KEYPOINT_PREDICTOR_PREFIX + "bias"]
    assert w_new.shape == (512, 23, 4, 4)
    assert torch.equal(w_new[:, :17], w_old) and torch.equal(b_new[:17], b_old)
    left_ankle, right_ankle = COCO17.index("left_ankle"), COCO17.index("right_ankle")
    for name in ("left_big_toe", "left_small_toe", "left_heel"):
        assert torch.equal(w_new[:, COCO23.index(name)], w_old[:, left_ankle])
    for name in ("right_big_toe", "right_small_toe", "right_heel"):
        assert torch.equal(w_new[:, COCO23.index(name)], w_old[:, right_ankle])
        assert torch.equal(b_new[COCO23.index(name)], b_old[right_ankle])


def test_23_keypoint_weights_shrink_to_17_and_freeze_roi(coco17_state, tmp_path):
    path, _ = coco17_state
    m23 = build_model(ModelConfig(backbone="resnet50", num_keypoints=23, weights=str(path), min_size=128))
    save_checkpoint(tmp_path / "m23.pth", m23, ModelConfig(backbone="resnet50", num_keypoints=23, min_size=128))
    m17 = build_model(ModelConfig(backbone="resnet50", num_keypoints=17, weights=str(tmp_path / "m23.pth"),
                                  freeze="roi", min_size=128))
    w23 = m23.state_dict()[KEYPOINT_PREDICTOR_PREFIX + "weight"]
    assert torch.equal(m17.state_dict()[KEYPOINT_PREDICTOR_PREFIX + "weight"], w23[:, :17])
    assert not m17.backbone.body.conv1.weight.requires_grad and m17.roi_heads.keypoint_head[0].weight.requires_grad


def test_named_coco_weights_come_from_the_hub_cache(coco17_state, tmp_path, monkeypatch):
    path, state = coco17_state
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RAYPOSE_OFFLINE", "1")
    target = tmp_path / "torch" / "hub" / "checkpoints" / COCO_KEYPOINT_WEIGHTS.url.rsplit("/", 1)[1]
    with pytest.raises(WeightsError) as err:
        build_model(ModelConfig(backbone="resnet50", weights="coco", min_size=128))
    assert str(target) in str(err.value) and COCO_KEYPOINT_WEIGHTS.url in str(err.value)
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    model = build_model(ModelConfig(backbone="resnet50", weights="coco", min_size=128))
    assert torch.equal(model.state_dict()["rpn.head.conv.0.0.weight"], state["rpn.head.conv.0.0.weight"])


def test_coco_heads_on_a_deeper_backbone_take_the_body_from_imagenet(coco17_state, tmp_path, monkeypatch):
    _, state = coco17_state
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RAYPOSE_OFFLINE", "1")
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / COCO_KEYPOINT_WEIGHTS.url.rsplit("/", 1)[1])
    imagenet = torchvision.models.resnet101().state_dict()
    torch.save(imagenet, cache / BACKBONE_WEIGHTS["resnet101"].url.rsplit("/", 1)[1])
    model = build_model(ModelConfig(backbone="resnet101", weights="coco", min_size=128)).state_dict()
    assert torch.equal(model["backbone.body.layer3.22.conv1.weight"], imagenet["layer3.22.conv1.weight"])
    assert torch.equal(model["backbone.fpn.inner_blocks.0.0.weight"], state["backbone.fpn.inner_blocks.0.0.weight"])
    assert torch.equal(model["roi_heads.box_head.fc6.weight"], state["roi_heads.box_head.fc6.weight"])


def test_weights_of_another_backbone_are_refused(tmp_path):
    small = build_model(ModelConfig(**{**TINY, "keypoint_head_channels": None, "box_head_size": None}))
    path = tmp_path / "r18.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(WeightsError, match="another backbone"):
        build_model(ModelConfig(backbone="resnet50", weights=str(path), min_size=128))
    with pytest.raises(WeightsError, match="not found"):
        build_model(ModelConfig(backbone="resnet50", weights=str(tmp_path / "nope.pth")))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        build_model(ModelConfig(backbone="resnet50", weights=str(tmp_path / "junk.pth")))


def test_checkpoint_round_trip_and_predict_cli(tmp_path, synth_data, capsys):
    config = ModelConfig(**TINY, box_score_thresh=0.0)
    torch.manual_seed(1)
    model = build_model(config).eval()
    ckpt = save_checkpoint(tmp_path / "ckpt.pth", model, config, epoch=3)
    loaded, loaded_cfg = load_model_from_checkpoint(ckpt)
    assert loaded_cfg == config.model_copy(update={"weights": None, "backbone_weights": None})
    image = torch.rand(3, 128, 160)
    torch.testing.assert_close(loaded([image])[0]["keypoints"], model([image])[0]["keypoints"])

    out = tmp_path / "dets.json"
    assert main(["predict", str(ckpt), str(synth_data.val_images), "--out", str(out), "--ann", str(synth_data.val_ann),
                 "--no-flip-test"]) == 0  # stock KeypointRCNN
    dets = json.loads(out.read_text())
    gt_ids = {img["id"] for img in json.loads(synth_data.val_ann.read_text())["images"]}
    assert dets and {d["image_id"] for d in dets} <= gt_ids
    assert len(dets[0]["keypoints"]) == 69 and len(dets[0]["keypoint_scores"]) == 23
    assert f"detections on {len(gt_ids)} images" in capsys.readouterr().out
    assert main(["eval", str(synth_data.val_ann), str(out), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
                                                        "body_ap", "foot_ap"}
    stock_scores = [d["keypoint_scores"] for d in dets]
    refined = tmp_path / "refined.json"
    assert main(["predict", str(ckpt), str(synth_data.val_images), "--out", str(refined), "--ann",
                 str(synth_data.val_ann), "--flip-test", "--keypoint-probs", "--rescore", "--oks-nms"]) == 0
    refined_dets = json.loads(refined.read_text())
    assert 0 < len(refined_dets) <= len(dets)
    probs = np.array([d["keypoint_scores"] for d in refined_dets])
    assert ((probs > 0) & (probs <= 1)).all() and not (np.array(stock_scores) <= 1).all()  # logits before
    assert main(["predict", str(tmp_path / "none.pth"), str(synth_data.val_images), "--out", str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_freezing_an_fpn_not_trained_for_the_body_warns(caplog):
    from raypose.model import frozen_untrained_reason

    assert "trained on resnet50 features and is frozen on a resnet152 body" in frozen_untrained_reason(
        ModelConfig(backbone="resnet152", weights="coco", freeze="fpn")
    )
    assert frozen_untrained_reason(ModelConfig(backbone="resnet101", weights="coco", freeze="roi")) is not None
    for fine in (
        ModelConfig(backbone="resnet152", weights="coco", freeze="backbone"),
        ModelConfig(backbone="resnet50", weights="coco", freeze="roi"),
        ModelConfig(backbone="resnet152", weights="my_r152.pth", freeze="fpn"),
    ):
        assert frozen_untrained_reason(fine) is None
    with caplog.at_level("WARNING", logger="raypose.model"):
        build_model(ModelConfig(**TINY, freeze="fpn"))  # weights: null, so a random FPN
    assert any("model.freeze=fpn" in r.message and "random init" in r.message for r in caplog.records)


def person_target(boxes, visible: bool, crowd=()) -> dict:
    """Targets for people at ``boxes`` (xyxy); each labelled at its box centre, or with v = 0 only."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    keypoints = torch.zeros(len(boxes), 23, 3)
    if visible:
        keypoints[:, :, 0] = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]
        keypoints[:, :, 1] = ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]
        keypoints[:, :, 2] = 2
    return {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "keypoints": keypoints,
            "crowd_boxes": torch.tensor(crowd, dtype=torch.float32).reshape(-1, 4)}


def test_keypoint_loss_ignores_people_without_labelled_keypoints():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY)).train()
    images = [torch.rand(3, 120, 150), torch.rand(3, 120, 150)]
    mixed = [person_target([[10, 10, 60, 110]], visible=True), person_target([[20, 5, 90, 100]], visible=False)]
    losses = model(images, mixed)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_keypoint"] > 0
    none_visible = [person_target([[10, 10, 60, 110]], visible=False, crowd=[[70, 0, 150, 60]]),
                    person_target([[20, 5, 90, 100], [95, 10, 140, 110]], visible=False)]
    losses = model(images, none_visible)
    assert losses["loss_keypoint"].item() == 0.0 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()  # the boxes still train
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


ANCHORS = torch.tensor([
    [100.0, 100, 120, 120],  # background, inside the crowd region: ignored
    [300, 300, 320, 320],  # background outside it
    [10, 10, 50, 90],  # person 1
    [150, 150, 250, 250],  # background, a quarter inside the crowd region: still background
    [100, 100, 140, 180],  # person 2, standing in front of the crowd: still a person
])
PEOPLE, CROWD = [[10, 10, 50, 90], [100, 100, 140, 180]], [[90, 90, 200, 200]]


def test_rpn_ignores_background_anchors_inside_crowd_regions():
    model = build_model(ModelConfig(**TINY))
    target = person_target(PEOPLE, visible=True, crowd=CROWD)
    labels, _ = model.rpn.assign_targets_to_anchors([ANCHORS], [target])
    assert labels[0].tolist() == [-1, 0, 1, 0, 1]
    no_crowd = {k: v for k, v in target.items() if k != "crowd_boxes"}
    assert model.rpn.assign_targets_to_anchors([ANCHORS], [no_crowd])[0][0].tolist() == [0, 0, 1, 0, 1]


def test_roi_heads_never_sample_background_inside_crowd_regions():
    model = build_model(ModelConfig(**TINY))  # 512 ROIs per image: every non-ignored proposal is sampled
    target = person_target(PEOPLE, visible=True, crowd=CROWD)
    proposals, _, labels, _ = model.roi_heads.select_training_samples([ANCHORS.clone()], [target])
    sampled = {tuple(b): int(label) for b, label in zip(proposals[0].tolist(), labels[0].tolist())}
    # the 4 other proposals, plus the 2 ground-truth boxes torchvision adds as proposals (same boxes)
    assert sampled == {(300, 300, 320, 320): 0, (150, 150, 250, 250): 0, (10, 10, 50, 90): 1, (100, 100, 140, 180): 1}
    assert len(proposals[0]) == 6 and model.roi_heads._crowd_boxes is None


def test_crowd_boxes_are_resized_with_the_image():
    model = build_model(ModelConfig(**TINY)).train()  # min_size 128, max_size 160
    target = person_target([[10, 10, 60, 90]], visible=True, crowd=[[100, 20, 200, 80]])
    _, (out,) = model.transform([torch.rand(3, 100, 200)], [target])
    assert out["boxes"][0].tolist() == pytest.approx([8, 8, 48, 72])  # x 0.8: 200 px wide -> 160
    assert out["crowd_boxes"][0].tolist() == pytest.approx([80, 16, 160, 64])


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(2)
    return build_model(ModelConfig(**TINY)).state_dict()


@pytest.mark.parametrize(
    ("rename", "hint"),
    [
        (lambda name: "module." + name, "'module.' prefix"),  # saved from a DDP wrapper
        (lambda name: name.replace("backbone.body.", "").replace(".", "_"), "model.backbone_weights"),
    ],
)
def test_weights_that_match_no_tensor_are_refused(tmp_path, tiny_state, rename, hint):
    path = tmp_path / "w.pth"
    torch.save({rename(k): v for k, v in tiny_state.items()}, path)
    with pytest.raises(WeightsError) as info:
        build_model(ModelConfig(**{**TINY, "weights": str(path)}))
    message = str(info.value)
    assert message.startswith(f"{path}: only 0 of the model's ") and "(0%)" in message
    assert "model.weights_min_match is 0.5" in message and hint in message
    assert "--set model.weights_min_match=0" in message
    build_model(ModelConfig(**{**TINY, "weights": str(path), "weights_min_match": 0}))  # the explicit override


def test_weights_min_match_is_a_fraction_of_the_expected_tensors(tmp_path, tiny_state):
    heads = {k: v for k, v in tiny_state.items() if k.startswith("roi_heads.")}
    path = tmp_path / "heads.pth"
    torch.save(heads, path)
    expected = [k for k in tiny_state if not k.endswith("num_batches_tracked")]
    fraction = len(heads) / len(expected)
    assert 0 < fraction < 0.5
    with pytest.raises(WeightsError, match=rf"only {len(heads)} of the model's {len(expected)} tensors"):
        build_model(ModelConfig(**{**TINY, "weights": str(path)}))
    model = build_model(ModelConfig(**{**TINY, "weights": str(path), "weights_min_match": fraction - 1e-6}))
    for name, value in heads.items():
        torch.testing.assert_close(model.state_dict()[name], value)
    with pytest.raises(WeightsError, match="only"):
        build_model(ModelConfig(**{**TINY, "weights": str(path), "weights_min_match": fraction + 1e-6}))


def test_a_full_match_passes_even_at_min_match_1(tmp_path, tiny_state):
    path = tmp_path / "all.pth"
    torch.save(tiny_state, path)
    model = build_model(ModelConfig(**{**TINY, "weights": str(path), "weights_min_match": 1.0}))
    for name, value in tiny_state.items():
        torch.testing.assert_close(model.state_dict()[name], value)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_weights_min_match_must_be_a_fraction(value):
    with pytest.raises(ValueError, match="weights_min_match"):
        ModelConfig(**TINY, weights_min_match=value)
