"""Inference options on top of torchvision's KeypointRCNN: flip test, keypoint-aware rescoring,
OKS-based NMS of people, and spatial-softmax keypoint probabilities.

Stock inference (every option off) is torchvision's own ``RoIHeads`` forward. With any option on,
:func:`refined_detections` runs the same box head, then the keypoint head itself, so that:

- **flip test** (``flip_test``): the keypoint head also runs on the mirrored image with the
  mirrored boxes; its heatmaps are flipped back, their channels swapped left for right, and
  averaged with the first before decoding. Mirroring maps a pixel index ``x`` to ``W - 1 - x``
  in the input image (as training's flips do); after torchvision's resize by ``s`` that is
  ``W' - s - x`` in the resized image, which is how the boxes are mirrored, so heatmap column
  ``j`` of one pass lands exactly on column ``55 - j`` of the other.
- **keypoint probabilities** (``keypoint_probs``): ``keypoints_scores`` become the spatial-softmax
  probability of each keypoint's peak (detectron2's ``heatmaps_to_keypoints``): the head is trained
  with a softmax over the heatmap, whose logits are shift-invariant, so the raw peak logit that
  torchvision returns is not comparable between people or keypoints, and thresholds on its
  sigmoid filter almost nothing.
- **rescoring** (``rescore``): a person's score becomes box score x the mean probability of its
  keypoints above ``rescore_thresh`` (0 when none is; MMPose's ``score_mode='bbox_keypoint'``;
  the default threshold 0 averages every point).
- **OKS-NMS** (``oks_nms``): people are kept in score order and a later one is dropped when its
  OKS with a kept one exceeds ``oks_nms_thresh`` (MMPose's ``oks_nms``; the area is the mean of the
  two boxes' areas), which removes duplicates whose boxes overlap less than box NMS requires.

Rescoring and OKS-NMS run in input-image pixels, after torchvision's ``postprocess``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from raypose.schema import schema_for

OPTION_NAMES = ("flip_test", "rescore", "oks_nms", "keypoint_probs")


class InferenceOptions(BaseModel):
    """Which inference options run (see the module docstring); all off is stock KeypointRCNN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    flip_test: bool = Field(default=False, description="average the keypoint heatmaps of the image and its mirror")
    rescore: bool = Field(default=False, description="score = box score x mean keypoint probability above rescore_thresh")
    oks_nms: bool = Field(default=False, description="drop people whose OKS with a better-scored one exceeds oks_nms_thresh")
    keypoint_probs: bool = Field(default=False, description="keypoints_scores as spatial-softmax probabilities")
    rescore_thresh: float = Field(
        default=0.0, ge=0.0, le=1.0, description="keypoint probability a point needs to count (0: every point). "
        "MMPose's 0.2 is for Gaussian-heatmap peaks; on spatial-softmax probabilities 0 scored best of "
        "0-0.2 for both models of benchmarks/bench_inference_options.py",
    )
    oks_nms_thresh: float = Field(default=0.9, gt=0.0, le=1.0, description="OKS above which the worse person is dropped")

    @property
    def stock(self) -> bool:
        """True when no option is on (torchvision's inference as it is)."""
        return not any(getattr(self, name) for name in OPTION_NAMES)

    def label(self) -> str:
        """The options that are on, joined by ``+``, or ``stock``."""
        on = [name for name in OPTION_NAMES if getattr(self, name)]
        return "+".join(on) if on else "stock"

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], **settings) -> InferenceOptions:
        """Options with the named ones on (``stock`` or an empty list: none)."""
        unknown = [n for n in names if n not in OPTION_NAMES and n != "stock"]
        if unknown:
            raise ValueError(f"unknown inference options {unknown}; valid: {', '.join(OPTION_NAMES)}")
        return cls(**{n: True for n in names if n != "stock"}, **settings)


def keypoint_flip_index(model: torch.nn.Module) -> torch.Tensor:
    """The left/right channel permutation of ``model``'s keypoint head (17 or 23 keypoints)."""
    num_keypoints = model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels
    return torch.as_tensor(schema_for(num_keypoints).flip_index, dtype=torch.long)


def _keypoint_logits(model, features, boxes: list[torch.Tensor], image_sizes) -> torch.Tensor:
    heads = model.roi_heads
    pooled = heads.keypoint_roi_pool(features, boxes, image_sizes)
    return heads.keypoint_predictor(heads.keypoint_head(pooled))


def mirror_boxes(boxes: torch.Tensor, resized_width: int, input_width: int) -> torch.Tensor:
    """Boxes (N, 4) xyxy in a resized image, mirrored the way a pixel index ``x -> W - 1 - x``
    of the input image is: ``x -> W' - s - x`` with ``s = W' / W``."""
    shift = resized_width - resized_width / input_width
    return torch.stack([shift - boxes[:, 2], boxes[:, 1], shift - boxes[:, 0], boxes[:, 3]], dim=1)


def refined_detections(
    model,
    images: list[torch.Tensor],
    batch,
    features,
    proposals: list[torch.Tensor],
    options: InferenceOptions,
    backbone,
) -> list[dict[str, torch.Tensor]]:
    """Detections of a KeypointRCNN with ``options``, in input-image pixels.

    Args:
        images: the input images (3, H, W), as given to ``model.transform`` (for the flip test).
        batch, features, proposals: the transformed batch, its backbone features and the RPN's proposals.
        backbone: a callable from an image tensor batch to features (the flip test's second pass).
    """
    heads = model.roi_heads
    sizes = batch.image_sizes
    box_features = heads.box_head(heads.box_roi_pool(features, proposals, sizes))
    class_logits, box_regression = heads.box_predictor(box_features)
    boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals, sizes)
    logits = _keypoint_logits(model, features, boxes, sizes)
    if options.flip_test and logits.shape[0] > 0:
        mirrored, _ = model.transform([im.flip(-1) for im in images])
        if list(mirrored.image_sizes) != list(sizes):  # resizing commutes with mirroring; never expected
            raise RuntimeError(f"mirrored images resized to {mirrored.image_sizes}, not {sizes}")
        mirrored_boxes = [mirror_boxes(b, size[1], im.shape[-1]) for b, size, im in zip(boxes, sizes, images)]
        flipped = _keypoint_logits(model, backbone(mirrored.tensors), mirrored_boxes, sizes)
        flip_index = keypoint_flip_index(model).to(flipped.device)
        logits = (logits + flipped.flip(-1)[:, flip_index]) / 2
    per_image = [len(b) for b in boxes]
    detections = []
    for b, s, lab, lg in zip(boxes, scores, labels, logits.split(per_image)):
        keypoints, peak_logits, probs = decode_heatmaps(lg, b)
        detections.append({"boxes": b, "labels": lab, "scores": s, "keypoints": keypoints,
                           "keypoints_scores": probs if options.keypoint_probs else peak_logits,
                           "keypoint_probs": probs})
    original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    detections = model.transform.postprocess(detections, sizes, original_sizes)
    for det in detections:
        if options.rescore:
            det["scores"] = rescored(det["scores"], det["keypoint_probs"], options.rescore_thresh)
        order = torch.argsort(det["scores"], descending=True)
        if options.oks_nms:
            order = order[oks_nms(det["keypoints"][order], det["boxes"][order], options.oks_nms_thresh)]
        for key in list(det):
            det[key] = det[key][order]
        del det["keypoint_probs"]
    return detections


def decode_heatmaps(maps: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's ``heatmaps_to_keypoints`` plus the spatial-softmax probability of each peak.

    Args:
        maps: (N, K, H, W) keypoint logits; rois: (N, 4) xyxy boxes they cover.

    Returns:
        ``keypoints`` (N, K, 3) as (x, y, 1), the peak logits (N, K) torchvision returns as
        ``keypoints_scores``, and their probabilities (N, K): ``exp(peak) / sum(exp(maps))`` with
        the peak taken from the upsampled map and the sum over the head's H x W bins (detectron2).
    """
    num, k = maps.shape[:2]
    keypoints = torch.zeros((num, k, 3), dtype=torch.float32, device=maps.device)
    peaks = torch.zeros((num, k), dtype=torch.float32, device=maps.device)
    if num == 0:
        return keypoints, peaks, peaks.clone()
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    arange = torch.arange(k, device=maps.device)
    for i in range(num):
        map_w, map_h = int(widths_ceil[i].item()), int(heights_ceil[i].item())
        roi_map = F.interpolate(maps[i][:, None], size=(map_h, map_w), mode="bicubic", align_corners=False)[:, 0]
        pos = roi_map.reshape(k, -1).argmax(dim=1)
        x_int = pos % map_w
        y_int = torch.div(pos - x_int, map_w, rounding_mode="floor")
        keypoints[i, :, 0] = (x_int.float() + 0.5) * (widths[i] / map_w) + rois[i, 0]
        keypoints[i, :, 1] = (y_int.float() + 0.5) * (heights[i] / map_h) + rois[i, 1]
        keypoints[i, :, 2] = 1
        peaks[i] = roi_map[arange, y_int, x_int]
    probs = torch.exp(peaks - torch.logsumexp(maps.float().flatten(2), dim=2)).clamp(max=1.0)
    return keypoints, peaks, probs


def rescored(box_scores: torch.Tensor, keypoint_probs: torch.Tensor, thresh: float) -> torch.Tensor:
    """Box score x mean keypoint probability over the points above ``thresh`` (0 when none is)."""
    above = keypoint_probs > thresh
    mean = (keypoint_probs * above).sum(dim=1) / above.sum(dim=1).clamp(min=1)
    return box_scores * mean


def oks_nms(keypoints: torch.Tensor, boxes: torch.Tensor, thresh: float, sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the people kept by greedy OKS-NMS, for people already sorted by score.

    OKS between two people uses every keypoint, the COCO sigmas of their schema, and the mean of
    their boxes' areas as the scale.
    """
    num, k = keypoints.shape[:2]
    if num == 0:
        return torch.zeros(0, dtype=torch.long, device=keypoints.device)
    if sigmas is None:
        sigmas = torch.as_tensor(schema_for(k).sigmas, dtype=torch.float32)
    variances = (2 * sigmas.to(keypoints.device, torch.float32)) ** 2
    xy = keypoints[..., :2].float()
    d2 = ((xy[:, None] - xy[None]) ** 2).sum(-1)  # (N, N, K)
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).float()
    scale = (areas[:, None] + areas[None]) / 2 + torch.finfo(torch.float32).eps
    oks = torch.exp(-d2 / variances / scale[..., None] / 2).mean(-1)
    suppressed = torch.zeros(num, dtype=torch.bool, device=keypoints.device)
    keep = []
    for i in range(num):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= oks[i] > thresh
    return torch.as_tensor(keep, dtype=torch.long, device=keypoints.device)
