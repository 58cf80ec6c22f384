"""Model factory: torchvision KeypointRCNN with 17 or 23 keypoints, ResNet + FPN backbones.

Pure torch/torchvision: no Ray, no MLflow. The one entry point is :func:`build_model`, which takes
a validated :class:`ModelConfig`.

Weights (``ModelConfig.weights``):

* ``"coco"``: torchvision's COCO 17-keypoint KeypointRCNN weights (ResNet-50 FPN). They are read
  from torch's hub cache (``$TORCH_HOME/hub/checkpoints``) and downloaded there when missing and
  online. For 23 keypoints the 17 keypoint channels are copied and the 6 foot channels start
  from the ankle channel of the same side (:func:`transfer_keypoint_state_dict`). For a
  ResNet-101/152 backbone every tensor outside the ResNet body is copied (the FPN and heads have
  the same shapes) and the body starts from ImageNet.
* a path to a ``.pth``: a torchvision state dict or a raypose checkpoint, 17 or 23 keypoints.
* ``None``: no detector weights; ``backbone_weights`` (``"imagenet"``, a path, or ``None``) then
  initialises the ResNet body.

Weights that match too few of the model's tensors by name and shape (fewer than
``ModelConfig.weights_min_match``, a fraction) are refused: a file for another model would
otherwise leave the model at random initialisation without a word.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torchvision
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import box_area
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from raypose.errors import WeightsError
from raypose.schema import KeypointSchema, schema_for

log = logging.getLogger(__name__)

# torchvision's weight enums by backbone; looked up by name so a search can choose the backbone.
BACKBONE_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": torchvision.models.ResNet152_Weights.IMAGENET1K_V1,
}
COCO_KEYPOINT_WEIGHTS = torchvision.models.detection.KeypointRCNN_ResNet50_FPN_Weights.COCO_V1
COCO_WEIGHTS_BACKBONE = "resnet50"

# Named freezing depths: which parameter-name prefixes stay trainable.
FREEZE_LEVELS: dict[str, tuple[str, ...] | None] = {
    "none": None,  # everything trainable (subject to trainable_backbone_layers)
    "backbone": ("backbone.fpn.", "rpn.", "roi_heads."),  # ResNet body frozen
    "fpn": ("rpn.", "roi_heads."),  # body and FPN frozen: the design notes' vanilla setup
    "roi": ("roi_heads.",),  # all but the ROI heads frozen: the notes' 23-keypoint setup
}

# Foot channels start from the ankle of the same side when 17-keypoint weights grow to 23.
FOOT_INIT_FROM = {
    "left_big_toe": "left_ankle",
    "left_small_toe": "left_ankle",
    "left_heel": "left_ankle",
    "right_big_toe": "right_ankle",
    "right_small_toe": "right_ankle",
    "right_heel": "right_ankle",
}
KEYPOINT_PREDICTOR_PREFIX = "roi_heads.keypoint_predictor.kps_score_lowres."
# A background anchor or proposal lying this much (intersection over its own area) inside a crowd
# region is ignored rather than trained as background: Detectron's CROWD_FILTER_THRESH, and the
# overlap COCO's evaluation uses to match detections with crowd regions.
CROWD_IGNORE_OVERLAP = 0.7


class ModelConfig(BaseModel):
    """What :func:`build_model` builds. Validated once; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] = "resnet50"
    num_keypoints: Literal[17, 23] = 23
    weights: str | None = Field(
        default="coco", description="'coco', a path to a .pth state dict / raypose checkpoint, or null"
    )
    backbone_weights: str | None = Field(
        default="imagenet", description="'imagenet', a path, or null; used when `weights` is null"
    )
    weights_min_match: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="smallest fraction of the model's tensors `weights` must fill (by name and shape); "
        "0 accepts any partial match",
    )
    freeze: Literal["none", "backbone", "fpn", "roi"] = "none"
    trainable_backbone_layers: int | None = Field(
        default=None, ge=0, le=5, description="trainable ResNet stages (with freeze=none); null: torchvision's "
        "default, 3 when the model starts from weights (weights or backbone_weights), 5 from scratch",
    )
    norm: Literal["frozen", "batch"] = Field(
        default="frozen", description="ResNet norm layers: frozen batch norm (detection default) or batch norm"
    )
    keypoint_head_channels: list[int] | None = Field(
        default=None, description="conv widths of the keypoint head; null = torchvision's 8 x 512"
    )
    box_head_size: int | None = Field(
        default=None, gt=0, description="box head MLP width; null = torchvision's 1024"
    )
    fpn_channels: int = Field(
        default=256, gt=0, description="FPN output width; 256 is torchvision's (and its weights'), 64 suits tiny CPU models"
    )
    box_batch_size_per_image: int = Field(default=512, gt=0, description="ROIs sampled per image for the box head")
    rpn_post_nms_top_n_train: int = Field(default=2000, gt=0, description="proposals kept per image in training")
    min_size: list[int] = Field(default_factory=lambda: [640, 672, 704, 736, 768, 800])
    max_size: int = Field(default=1333, gt=0)
    box_detections_per_img: int = Field(default=100, gt=0)
    box_score_thresh: float = Field(default=0.05, ge=0.0, le=1.0)

    @field_validator("min_size", mode="before")
    @classmethod
    def _min_size_list(cls, v: object) -> object:
        return [v] if isinstance(v, int) else v

    @field_validator("min_size")
    @classmethod
    def _min_size_positive(cls, v: list[int]) -> list[int]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("min_size must be a positive size or a non-empty list of them")
        return v

    @property
    def schema(self) -> KeypointSchema:
        return schema_for(self.num_keypoints)


def build_model(config: ModelConfig) -> KeypointRCNN:
    """Build KeypointRCNN as ``config`` says: backbone, weights, freezing.

    Raises:
        WeightsError: named weights are not cached and cannot be downloaded, or a weights file
            does not fit the model.
    """
    use_detector_weights = config.weights is not None
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if config.norm == "frozen" else nn.BatchNorm2d
    body = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=norm_layer)
    coco_heads_only = config.weights == "coco" and config.backbone != COCO_WEIGHTS_BACKBONE
    if not use_detector_weights or coco_heads_only:
        _load_backbone_body(body, config)
    backbone = _resnet_fpn_extractor(body, trainable_layers(config))
    if config.fpn_channels != backbone.out_channels:
        backbone = BackboneWithFPN(
            body, {f"layer{k}": str(k - 1) for k in range(1, 5)}, [body.inplanes // 8 * 2**i for i in range(4)], config.fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
    heads = _head_overrides(config, backbone.out_channels)
    model = KeypointRCNN(
        backbone,
        num_classes=None if "box_predictor" in heads else 2,
        num_keypoints=None if "keypoint_predictor" in heads else config.num_keypoints,
        **heads,
        min_size=tuple(config.min_size),
        max_size=config.max_size,
        box_detections_per_img=config.box_detections_per_img,
        box_score_thresh=config.box_score_thresh,
        box_batch_size_per_image=config.box_batch_size_per_image,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
    )
    if use_detector_weights:
        state, source = _detector_state_dict(config)
        skip = ("backbone.body.",) if coco_heads_only else ()
        transfer_keypoint_state_dict(
            model, state, source=source, skip_prefixes=skip, min_match=config.weights_min_match
        )
    ignore_crowd_regions(model)
    reason = frozen_untrained_reason(config)
    if reason is not None:
        log.warning("model.freeze=%s: %s", config.freeze, reason)
    apply_freeze(model, config.freeze)
    return model


def trainable_layers(config: ModelConfig) -> int:
    """The ResNet stages left trainable: ``trainable_backbone_layers``, or as torchvision's
    ``keypointrcnn_resnet50_fpn`` decides: 3 for a model started from trained weights (the stem
    and the first stage keep their pretrained filters), 5 for one trained from scratch."""
    if config.trainable_backbone_layers is not None:
        return config.trainable_backbone_layers
    return 3 if config.weights is not None or config.backbone_weights is not None else 5


# --- crowd regions ------------------------------------------------------------------------------
# torchvision has no ignore regions. Training targets may carry ``crowd_boxes`` (M, 4) xyxy
# (see raypose.data.dataset); these subclasses resize them with the image and turn background
# anchors / proposals inside them into "ignore" (-1), which the samplers skip. Foreground stays
# foreground, so a labelled person standing in front of a crowd is still learned.


def crowd_overlap(boxes: torch.Tensor, crowd_boxes: torch.Tensor) -> torch.Tensor:
    """For each of ``boxes`` (N, 4) xyxy, the largest fraction of its area inside one of
    ``crowd_boxes`` (M, 4) xyxy; shape (N,), zeros when M = 0."""
    if crowd_boxes.numel() == 0:
        return boxes.new_zeros(len(boxes))
    boxes, crowd_boxes = boxes.float(), crowd_boxes.to(boxes.device).float()
    top_left = torch.max(boxes[:, None, :2], crowd_boxes[None, :, :2])
    bottom_right = torch.min(boxes[:, None, 2:], crowd_boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return (inter / box_area(boxes).clamp(min=1e-6)[:, None]).amax(dim=1)


def _ignore_in_crowd(labels: torch.Tensor, boxes: torch.Tensor, crowd_boxes: torch.Tensor | None) -> None:
    """Set background (0) labels (N,) of ``boxes`` (N, 4) inside a crowd region to ignore (-1), in place."""
    if crowd_boxes is None or crowd_boxes.numel() == 0:
        return
    inside = crowd_overlap(boxes, crowd_boxes) > CROWD_IGNORE_OVERLAP
    labels[(labels == 0) & inside] = -1


class _CrowdResizingTransform(GeneralizedRCNNTransform):
    def resize(self, image, target=None):
        size = image.shape[-2:]
        image, target = super().resize(image, target)
        if target is not None and "crowd_boxes" in target:
            target["crowd_boxes"] = resize_boxes(target["crowd_boxes"], size, image.shape[-2:])
        return image, target


class _CrowdIgnoringRPN(RegionProposalNetwork):
    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        for labels_per_image, anchors_per_image, target in zip(labels, anchors, targets):
            _ignore_in_crowd(labels_per_image, anchors_per_image, target.get("crowd_boxes"))
        return labels, matched_gt_boxes


class _CrowdIgnoringRoIHeads(RoIHeads):
    _crowd_boxes: list | None = None

    def select_training_samples(self, proposals, targets):
        # assign_targets_to_proposals is not given the targets: hand it the crowd boxes for this call.
        self._crowd_boxes = [t.get("crowd_boxes") for t in targets] if targets is not None else None
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._crowd_boxes = None

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        matched_idxs, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        for labels_per_image, proposals_per_image, crowd in zip(labels, proposals, self._crowd_boxes or []):
            _ignore_in_crowd(labels_per_image, proposals_per_image, crowd)
        return matched_idxs, labels


def ignore_crowd_regions(model: KeypointRCNN) -> KeypointRCNN:
    """Make ``model`` resize ``crowd_boxes`` with its inputs and ignore background inside them.

    KeypointRCNN builds its transform, RPN and ROI heads in its constructor; the subclasses add
    methods only (no state, no parameters), so the built modules are re-classed in place and
    state dicts and checkpoints are unchanged. Targets without ``crowd_boxes`` train as before.
    """
    model.transform.__class__ = _CrowdResizingTransform
    model.rpn.__class__ = _CrowdIgnoringRPN
    model.roi_heads.__class__ = _CrowdIgnoringRoIHeads
    return model


def frozen_untrained_reason(config: ModelConfig) -> str | None:
    """Why ``config.freeze`` freezes layers that were never trained with this backbone, or None.

    COCO detector weights exist for ResNet-50 only: on a deeper body the FPN (and RPN) come from
    a ResNet-50 model, so freezing them (``fpn``, ``roi``) fixes layers fed features they were
    never trained on. Without detector weights they are random. A weights file is trusted.
    """
    if config.freeze not in ("fpn", "roi") or (config.weights is not None and config.weights != "coco"):
        return None
    if config.weights is None:
        return "the FPN has no pretrained weights (weights: null) and stays at its random init"
    if config.backbone != COCO_WEIGHTS_BACKBONE:
        return (
            f"the COCO FPN was trained on {COCO_WEIGHTS_BACKBONE} features and is frozen on a {config.backbone} body; "
            f"use freeze none or backbone with {config.backbone}, or backbone {COCO_WEIGHTS_BACKBONE}"
        )
    return None


def _head_overrides(config: ModelConfig, channels: int) -> dict[str, nn.Module]:
    """Smaller heads for fast CPU runs; torchvision's defaults (and its weights) otherwise."""
    heads: dict[str, nn.Module] = {}
    if config.keypoint_head_channels is not None:
        widths = config.keypoint_head_channels
        heads["keypoint_head"] = KeypointRCNNHeads(channels, widths)
        heads["keypoint_predictor"] = KeypointRCNNPredictor(widths[-1], config.num_keypoints)
    if config.box_head_size is not None:
        heads["box_head"] = TwoMLPHead(channels * 7 * 7, config.box_head_size)
        heads["box_predictor"] = FastRCNNPredictor(config.box_head_size, 2)
    return heads


def apply_freeze(model: nn.Module, level: str) -> None:
    """Freeze parameters by named depth (see :data:`FREEZE_LEVELS`); ``none`` changes nothing.

    Raises:
        ValueError: unknown level; the message lists the valid ones.
    """
    if level not in FREEZE_LEVELS:
        raise ValueError(f"unknown freeze level {level!r}; valid: {', '.join(FREEZE_LEVELS)}")
    keep = FREEZE_LEVELS[level]
    if keep is None:
        return
    for name, param in model.named_parameters():
        if not name.startswith(keep):
            param.requires_grad_(False)


def buffers_change_in_training(model: nn.Module) -> bool:
    """Whether training updates any buffer: batch norm layers that track running statistics do;
    frozen batch norm (the detection default) and the rest of KeypointRCNN hold constant buffers.
    DDP then need not broadcast rank 0's buffers before every forward pass."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in model.modules())


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def transfer_keypoint_state_dict(
    model: KeypointRCNN,
    state: Mapping[str, torch.Tensor],
    source: str = "state dict",
    skip_prefixes: tuple[str, ...] = (),
    min_match: float = 0.0,
) -> dict[str, list[str]]:
    """Copy ``state`` into ``model``, growing or shrinking the keypoint predictor as needed.

    Every tensor whose name and shape match is copied. The keypoint predictor
    (``kps_score_lowres``; weight (C_in, K, 4, 4), bias (K,)) is copied channel by channel by
    keypoint name: 17 -> 23 copies the 17 body channels and starts each foot channel from the
    ankle of its side (:data:`FOOT_INIT_FROM`); 23 -> 17 keeps the body channels.

    Returns:
        ``{"copied": [...], "skipped": [...], "missing": [...]}`` tensor names.

    Raises:
        WeightsError: a tensor outside the keypoint predictor has the wrong shape (e.g. weights
            of another backbone), naming the tensor, both shapes and the source; or fewer than
            ``min_match`` of the model's tensors (outside ``skip_prefixes``) are copied.
    """
    target = model.state_dict()
    copied, skipped = [], []
    src_k = _predictor_keypoints(state)
    dst_k = model.roi_heads.keypoint_predictor.out_channels
    for name, value in state.items():
        if name.startswith(skip_prefixes) or name not in target:
            skipped.append(name)
            continue
        if name.startswith(KEYPOINT_PREDICTOR_PREFIX) and src_k != dst_k:
            target[name] = _remap_keypoint_channels(value, src_k, dst_k, channel_dim=1 if value.dim() == 4 else 0)
        elif target[name].shape != value.shape:
            raise WeightsError(
                f"{source}: tensor {name} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(target[name].shape)}: were these weights made for another backbone?"
            )
        else:
            target[name] = value
        copied.append(name)
    _check_match(target, copied, skip_prefixes, min_match, source, list(state))
    model.load_state_dict(target)
    missing = [n for n in target if n not in state or n.startswith(skip_prefixes)]
    log.info("loaded %d tensors from %s (%d skipped, %d left at init)", len(copied), source, len(skipped), len(missing))
    return {"copied": copied, "skipped": skipped, "missing": missing}


def _check_match(
    target: Mapping[str, torch.Tensor],
    copied: list[str],
    skip_prefixes: tuple[str, ...],
    min_match: float,
    source: str,
    source_names: list[str],
) -> None:
    """Raise WeightsError when fewer than ``min_match`` of the expected tensors were copied.

    Expected: the model's tensors outside ``skip_prefixes``, less BatchNorm's step counters
    (``num_batches_tracked``), which torchvision's frozen-norm weights never hold.
    """
    expected = {n for n in target if not n.startswith(skip_prefixes) and not n.endswith("num_batches_tracked")}
    if not expected:
        return
    matched = len(expected.intersection(copied))
    if matched / len(expected) >= min_match:
        return
    example = ", ".join(source_names[:3]) or "none"
    raise WeightsError(
        f"{source}: only {matched} of the model's {len(expected)} tensors ({matched / len(expected):.0%}) "
        f"match a tensor in the file by name and shape; model.weights_min_match is {min_match:g}. "
        f"The file's names start {example}; the model's look like {sorted(expected)[0]}. Point "
        "`model.weights` at KeypointRCNN weights (a 'module.' prefix means DDP weights saved unwrapped; "
        "ResNet classification weights go in `model.backbone_weights`), or set "
        "model.weights_min_match=0 (e.g. --set model.weights_min_match=0) to train from the partial match."
    )


def _predictor_keypoints(state: Mapping[str, torch.Tensor]) -> int | None:
    bias = state.get(KEYPOINT_PREDICTOR_PREFIX + "bias")
    return None if bias is None else int(bias.shape[0])


def _remap_keypoint_channels(value: torch.Tensor, src_k: int, dst_k: int, channel_dim: int) -> torch.Tensor:
    src, dst = schema_for(src_k), schema_for(dst_k)
    picks = []
    for name in dst.names:
        picks.append(src.index(name) if name in src.names else src.index(FOOT_INIT_FROM[name]))
    return value.index_select(channel_dim, torch.tensor(picks)).clone()


# --- weight files -----------------------------------------------------------------------------


def _hub_checkpoint_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_weights(url: str) -> dict[str, torch.Tensor]:
    """A torchvision weights file: from the hub cache, downloaded there if missing and online.

    Set ``RAYPOSE_OFFLINE=1`` to never try the network.

    Raises:
        WeightsError: not cached and cannot be downloaded; the message names the URL and the
            exact path to put the file at.
    """
    path = _hub_checkpoint_path(url)
    if not path.is_file():
        if os.environ.get("RAYPOSE_OFFLINE", "0") not in ("", "0"):
            raise WeightsError(_missing_weights_message(url, path, "RAYPOSE_OFFLINE is set"))
        try:
            log.info("downloading %s to %s", url, path)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as e:  # any network failure ends in the same instruction
            raise WeightsError(_missing_weights_message(url, path, f"download failed: {e}")) from None
    return load_state_dict_file(path)


def _missing_weights_message(url: str, path: Path, why: str) -> str:
    return (
        f"pretrained weights not found at {path} ({why}). Download {url} and save it as {path} "
        "(or set TORCH_HOME to where it is), or set `weights: null` / a local .pth path in the config."
    )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A model state dict from a ``.pth``: a plain state dict or a raypose checkpoint's ``model``.

    Raises:
        WeightsError: missing or unreadable file, or no state dict inside.
    """
    path = Path(path)
    obj = torch_load(path, what="weights file")
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict (a mapping of tensor names to tensors)")
    return dict(obj)


def torch_load(path: Path, what: str) -> object:
    """``torch.load(weights_only=True)`` on the CPU, with errors that name the file.

    Raises:
        WeightsError: the file is missing or cannot be read as a torch file.
    """
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read as a torch {what} ({e})") from None


def _detector_state_dict(config: ModelConfig) -> tuple[dict[str, torch.Tensor], str]:
    if config.weights == "coco":
        return fetch_weights(COCO_KEYPOINT_WEIGHTS.url), "torchvision COCO keypoint weights"
    return load_state_dict_file(config.weights), str(config.weights)


def _load_backbone_body(body: nn.Module, config: ModelConfig) -> None:
    if config.backbone_weights is None:
        return
    if config.backbone_weights == "imagenet":
        state = fetch_weights(BACKBONE_WEIGHTS[config.backbone].url)
    else:
        state = load_state_dict_file(config.backbone_weights)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    result = body.load_state_dict(state, strict=False)
    real_missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if real_missing:
        raise WeightsError(
            f"backbone weights {config.backbone_weights!r} do not fit {config.backbone}: "
            f"missing {real_missing[:5]}{' ...' if len(real_missing) > 5 else ''}"
        )
