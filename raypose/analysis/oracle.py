"""Oracle-box study: the keypoint head run on ground-truth boxes, to split detection from keypoint error.

With perfect person boxes the only errors left are the keypoint head's. Comparing COCO AP of
the model's own detections with AP of keypoints predicted inside the ground-truth boxes says
how much AP detection costs (``oracle AP - detection AP``) and how much the keypoints cost
(``1 - oracle AP``). An oracle detection's score is the box head's person probability for that
ground-truth box, so the ranking is still the model's own.

Coordinates: boxes xyxy and keypoints ``(x, y, v)`` in original-image pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.roi_heads import keypointrcnn_inference

from raypose.analysis.data import MAX_DETS, AnalysisInput, select_detections, with_scores
from raypose.analysis.error_types import classify_keypoints, oks_loss_share
from raypose.analysis.progressive import evaluate_category
from raypose.checkpoint import load_model_from_checkpoint
from raypose.errors import WeightsError
from raypose.evaluation.fast import CategoryData
from raypose.inference import load_image, resolve_device

logger = logging.getLogger(__name__)


@torch.inference_mode()
def predict_on_boxes(
    model: KeypointRCNN, images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]
) -> list[dict[str, torch.Tensor]]:
    """Run the keypoint (and box-score) branch of ``model`` on given boxes instead of proposals.

    Args:
        model: a KeypointRCNN in eval mode.
        images: tensors (3, H, W) in [0, 1], on the model's device.
        boxes: per image (B_i, 4) xyxy boxes in original pixels, on the model's device.

    Returns:
        Per image: ``keypoints`` (B_i, K, 3) as (x, y, 1) in original pixels, ``keypoints_scores``
        (B_i, K) heatmap logits, ``scores`` (B_i,) the box head's person probability.
    """
    model.eval()
    batch, _ = model.transform(list(images))
    scaled = []
    for image, box, size in zip(images, boxes, batch.image_sizes):
        ratio_h, ratio_w = size[0] / image.shape[-2], size[1] / image.shape[-1]
        scaled.append(box.float() * box.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h]))
    features = model.backbone(batch.tensors)
    heads = model.roi_heads
    kp_features = heads.keypoint_head(heads.keypoint_roi_pool(features, scaled, batch.image_sizes))
    keypoints, kp_scores = keypointrcnn_inference(heads.keypoint_predictor(kp_features), scaled)
    box_features = heads.box_head(heads.box_roi_pool(features, scaled, batch.image_sizes))
    class_logits, _ = heads.box_predictor(box_features)
    person = torch.softmax(class_logits, -1)[:, 1].split([len(b) for b in scaled])
    out = []
    for image, size, kps, kp_s, score in zip(images, batch.image_sizes, keypoints, kp_scores, person):
        kps = kps.clone()
        kps[..., 0] *= image.shape[-1] / size[1]
        kps[..., 1] *= image.shape[-2] / size[0]
        out.append({"keypoints": kps, "keypoints_scores": kp_s, "scores": score})
    return out


def _oracle_predictions(
    model: KeypointRCNN, inp: AnalysisInput, images_dir: Path, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints on every regular ground-truth box: (gt index (B,), image (B,), kpts (B,K,3), scores (B,))."""
    data = inp.data
    regular = np.flatnonzero(~data.gt_ignore)
    image_list = np.unique(data.gt_img[regular])
    gt_idx, kpts, scores = [], [], []
    for start in range(0, len(image_list), batch_size):
        chunk = image_list[start : start + batch_size]
        tensors, boxes, owners = [], [], []
        for img in chunk:
            owners.append(regular[data.gt_img[regular] == img])
            xywh = data.gt_boxes[owners[-1]]
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + np.maximum(xywh[:, 2:], 1.0)], axis=1)
            boxes.append(torch.as_tensor(xyxy, dtype=torch.float32, device=device))
            tensors.append(load_image(images_dir / inp.file_names[img]).to(device))
        for owner, pred in zip(owners, predict_on_boxes(model, tensors, boxes)):
            gt_idx.append(owner)
            kpts.append(pred["keypoints"].float().cpu().numpy())
            scores.append(pred["scores"].float().cpu().numpy())
        logger.info("oracle boxes: %d/%d images", min(start + batch_size, len(image_list)), len(image_list))
    num_k = inp.schema.num_keypoints
    if not gt_idx:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, num_k, 3)), np.zeros(0)
    gt_all = np.concatenate(gt_idx)
    return (
        gt_all,
        data.gt_img[gt_all],
        np.concatenate(kpts).astype(np.float64),
        np.concatenate(scores).astype(np.float64),
    )


def oracle_data(
    inp: AnalysisInput, gt_index: np.ndarray, kpts: np.ndarray, scores: np.ndarray
) -> CategoryData:
    """``inp.data`` with its detections replaced by one prediction per ground-truth box."""
    x, y = kpts[:, :, 0], kpts[:, :, 1]
    data = replace(
        inp.data,
        dt_img=inp.data.gt_img[gt_index],
        dt_rank=np.zeros(len(gt_index), dtype=np.int64),
        dt_kpts=kpts,
        dt_areas=(x.max(1) - x.min(1)) * (y.max(1) - y.min(1)) if len(kpts) else np.zeros(0),
        dt_scores=scores,
        dt_ids=np.arange(1, len(gt_index) + 1, dtype=np.float64),
    )
    # sort by image first (stable), then by score inside images, and keep 20 per image like COCO
    by_image = np.argsort(data.dt_img, kind="stable")
    data = replace(
        data,
        dt_img=data.dt_img[by_image],
        dt_kpts=data.dt_kpts[by_image],
        dt_areas=data.dt_areas[by_image],
        dt_scores=data.dt_scores[by_image],
        dt_ids=data.dt_ids[by_image],
    )
    data, _ = with_scores(data, data.dt_scores)
    return select_detections(data, data.dt_rank < MAX_DETS)


def _ap_dict(summary) -> dict[str, float]:
    return {"ap": round(summary.ap, 6), "ap50": round(summary.ap50, 6), "ap75": round(summary.ap75, 6)}


def oracle_study(
    inp: AnalysisInput,
    checkpoint: str | os.PathLike,
    images_dir: str | os.PathLike,
    device: str = "auto",
    batch_size: int = 4,
) -> dict[str, Any]:
    """Compare AP of the model's detections (``inp``) with the keypoint head on ground-truth boxes.

    Returns:
        JSON-able dict: ``detections`` and ``oracle_boxes`` ({ap, ap50, ap75}),
        ``detection_error_ap`` (oracle AP - detections AP), ``keypoint_error_ap`` (1 - oracle AP),
        and for the oracle predictions, each classified against the person whose box it came
        from: ``errors``, ``per_keypoint``, ``oks_loss_share``, ``mean_ks``.

    Raises:
        WeightsError: unreadable checkpoint or a keypoint count that differs from the ground truth.
        InputError: a missing or unreadable image.
    """
    torch_device = resolve_device(device)
    model, config = load_model_from_checkpoint(checkpoint, torch_device)
    if config.num_keypoints != inp.schema.num_keypoints:
        raise WeightsError(
            f"{checkpoint}: the model predicts {config.num_keypoints} keypoints but {inp.gt_source} has "
            f"{inp.schema.num_keypoints}"
        )
    gt_index, _, kpts, scores = _oracle_predictions(model, inp, Path(images_dir), torch_device, batch_size)
    oracle_inp = _with_data(inp, oracle_data(inp, gt_index, kpts, scores))
    # each oracle prediction belongs to the box it was made in: classify against that person,
    # whatever its OKS (no matching needed)
    own_gt = gt_index[oracle_inp.data.dt_ids.astype(np.int64) - 1]
    errors = classify_keypoints(oracle_inp.data, own_gt, inp.schema)
    share, mean_ks = oks_loss_share(errors)
    own = evaluate_category(inp.data, inp.sigmas)
    oracle = evaluate_category(oracle_inp.data, inp.sigmas)
    names = inp.schema.names
    logger.info("oracle boxes: AP %.4f vs detections %.4f", oracle.ap, own.ap)
    return {
        "checkpoint": str(checkpoint),
        "num_boxes": int(len(gt_index)),
        "detections": _ap_dict(own),
        "oracle_boxes": _ap_dict(oracle),
        "detection_error_ap": round(oracle.ap - own.ap, 6),
        "keypoint_error_ap": round(1.0 - oracle.ap, 6),
        "errors": errors.counts(),
        "per_keypoint": errors.counts_per_keypoint(names),
        "oks_loss_share": {n: round(float(v), 6) for n, v in zip(names, share)},
        "mean_ks": {n: (round(float(v), 6) if np.isfinite(v) else None) for n, v in zip(names, mean_ks)},
    }


def _with_data(inp: AnalysisInput, data: CategoryData) -> AnalysisInput:
    return replace(inp, data=data, dt_keypoint_scores=None, dt_file_index=np.arange(len(data.dt_img)))
