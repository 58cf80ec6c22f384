"""Drawing skeletons on images (data preview, error analysis, video overlays)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from raypose.images import to_rgb
from raypose.schema import KeypointSchema

Color = tuple[int, int, int]
SIDE_COLORS: dict[str, Color] = {"left": (255, 140, 0), "right": (0, 200, 255), "center": (60, 255, 60)}


def _side(name: str) -> str:
    if name.startswith("left_"):
        return "left"
    if name.startswith("right_"):
        return "right"
    return "center"


def to_pil(image) -> Image.Image:
    """A PIL RGB copy of ``image``: PIL image (any mode :func:`raypose.images.to_rgb` takes),
    tensor (3, H, W) float in [0, 1] or uint8, or array (H, W, 3).

    Raises:
        InputError: a PIL image whose pixels have no 8-bit RGB form (float, 32-bit integer).
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if hasattr(image, "detach"):  # torch tensor, without importing torch here
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.transpose(1, 2, 0)
    else:
        array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


def _as_numpy(values) -> np.ndarray | None:
    if values is None:
        return None
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def draw_skeletons(
    image,
    keypoints,
    schema: KeypointSchema,
    boxes=None,
    scores=None,
    color: Color | None = None,
    keypoint_scores=None,
    keypoint_threshold: float = 0.0,
    line_width: int | None = None,
    labels: Sequence[str] | None = None,
) -> Image.Image:
    """Draw people's keypoints, limbs and boxes; return a new PIL image.

    Args:
        image: PIL image, tensor (3, H, W) in [0, 1] or uint8 array (H, W, 3).
        keypoints: (N, K, 3) as (x, y, v) pixels; points with v <= 0 are not drawn, v == 1 (occluded)
            as hollow circles.
        boxes: optional (N, 4) xyxy pixels.
        scores: optional (N,) detection scores, written above each box.
        color: one colour for everything (e.g. ground truth vs prediction); default colours by side
            (the person's left orange, right cyan, centre green).
        keypoint_scores: optional (N, K); points scoring below ``keypoint_threshold`` are skipped.
        labels: optional (N,) text per person, written above its box.
    """
    canvas = to_pil(image)
    draw = ImageDraw.Draw(canvas)
    kps = _as_numpy(keypoints)
    kps = np.zeros((0, schema.num_keypoints, 3)) if kps is None else kps.reshape(-1, schema.num_keypoints, 3)
    kp_scores = _as_numpy(keypoint_scores)
    width = line_width or max(1, round(min(canvas.size) / 200))
    radius = width + 1
    colors = [color or SIDE_COLORS[_side(name)] for name in schema.names]
    for n, person in enumerate(kps):
        shown = person[:, 2] > 0
        if kp_scores is not None:
            shown &= kp_scores[n] >= keypoint_threshold
        for a, b in schema.skeleton:
            if shown[a] and shown[b]:
                edge_color = colors[b] if color is None else color
                draw.line([tuple(person[a, :2]), tuple(person[b, :2])], fill=edge_color, width=width)
        for k in np.flatnonzero(shown):
            x, y, v = person[k]
            box = [x - radius, y - radius, x + radius, y + radius]
            if v >= 2 or kp_scores is not None:
                draw.ellipse(box, fill=colors[k], outline=(0, 0, 0))
            else:
                draw.ellipse(box, outline=colors[k], width=max(1, width))
    _draw_boxes(draw, _as_numpy(boxes), _as_numpy(scores), labels, color or (255, 255, 255), width)
    return canvas


def _draw_boxes(draw, boxes, scores, labels, color: Color, width: int) -> None:
    if boxes is None:
        return
    for n, box in enumerate(boxes.reshape(-1, 4)):
        draw.rectangle([float(v) for v in box], outline=color, width=width)
        text = []
        if labels is not None:
            text.append(str(labels[n]))
        if scores is not None:
            text.append(f"{float(scores[n]):.2f}")
        if text:
            draw.text((float(box[0]) + 2, float(box[1]) + 1), " ".join(text), fill=color)
