"""Rendering images of the error analysis: ground truth and predictions, keypoints coloured by error.

Ground-truth skeletons are drawn in green, predicted ones in magenta; every predicted keypoint of
a matched detection is a dot coloured by its category (good, jitter, inversion, swap, miss) with
its keypoint score beside it when the detections file has ``keypoint_scores`` (for matched
detections and unmatched ones scoring at least ``TEXT_MIN_SCORE``). Without the image
file (no ``--images``, or a missing file) a grey canvas of the image's size is used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from raypose.analysis.error_types import UNCLASSIFIED
from raypose.analysis.summary import AnalysisResult
from raypose.data.draw import draw_skeletons
from raypose.io import atomic_path

logger = logging.getLogger(__name__)

MAX_SIDE = 640  # rendered images are scaled down to this longest side
TEXT_MIN_SCORE = 0.5  # unmatched detections below this score get no keypoint-score labels
GT_COLOR = (60, 230, 60)
PRED_COLOR = (230, 60, 230)
HIGHLIGHT_COLOR = (255, 40, 40)
CATEGORY_COLORS: dict[int, tuple[int, int, int]] = {
    0: (40, 200, 40),  # good
    1: (255, 215, 0),  # jitter
    2: (255, 120, 0),  # inversion
    3: (255, 30, 30),  # swap
    4: (150, 60, 255),  # miss
    UNCLASSIFIED: (200, 200, 200),
}
CATEGORY_HEX: dict[str, str] = {
    name: "#{:02x}{:02x}{:02x}".format(*CATEGORY_COLORS[code])
    for code, name in enumerate(("good", "jitter", "inversion", "swap", "miss"))
}


def _canvas(result: AnalysisResult, image: int, images_dir: Path | None) -> Image.Image:
    inp = result.inp
    if images_dir is not None:
        path = images_dir / inp.file_names[image]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except OSError as e:
            logger.warning("%s: cannot read image (%s); drawing on a blank canvas", path, e)
    return Image.new("RGB", (int(inp.widths[image]), int(inp.heights[image])), (90, 90, 90))


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    return out


def _keypoint_box(kpts: np.ndarray) -> np.ndarray:
    return np.stack(
        [kpts[:, :, 0].min(1), kpts[:, :, 1].min(1), kpts[:, :, 0].max(1), kpts[:, :, 1].max(1)], 1
    )


def render_image(
    result: AnalysisResult,
    image: int,
    images_dir: Path | None = None,
    highlight_dets: np.ndarray | None = None,
    highlight_gts: np.ndarray | None = None,
) -> Image.Image:
    """Draw one image (position ``image`` in ``result.inp``) scaled to at most ``MAX_SIDE``.

    Args:
        highlight_dets / highlight_gts: detection / ground-truth indices to box in red
            (a background false positive, a missed person).
    """
    inp, data = result.inp, result.inp.data
    canvas = _canvas(result, image, images_dir)
    scale = min(1.0, MAX_SIDE / max(canvas.size))
    if scale < 1.0:
        canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))))
    gts = np.flatnonzero(data.gt_img == image)
    dets = np.flatnonzero(data.dt_img == image)
    gt_kpts = data.gt_kpts[gts].copy()
    gt_kpts[:, :, :2] *= scale
    canvas = draw_skeletons(
        canvas, gt_kpts, inp.schema, boxes=_xywh_to_xyxy(data.gt_boxes[gts]) * scale, color=GT_COLOR
    )
    dt_kpts = data.dt_kpts[dets].copy()
    dt_kpts[:, :, :2] *= scale
    dt_kpts[:, :, 2] = 2  # draw every predicted point
    canvas = draw_skeletons(
        canvas,
        dt_kpts,
        inp.schema,
        boxes=_keypoint_box(dt_kpts),
        scores=data.dt_scores[dets],
        color=PRED_COLOR,
    )
    _draw_categories(canvas, result, dets, dt_kpts)
    draw = ImageDraw.Draw(canvas)
    for n in highlight_dets if highlight_dets is not None else ():
        box = _keypoint_box(data.dt_kpts[n : n + 1])[0] * scale
        draw.rectangle([float(v) for v in box], outline=HIGHLIGHT_COLOR, width=3)
    for g in highlight_gts if highlight_gts is not None else ():
        box = _xywh_to_xyxy(data.gt_boxes[g : g + 1])[0] * scale
        draw.rectangle([float(v) for v in box], outline=HIGHLIGHT_COLOR, width=3)
    return canvas


def _draw_categories(
    canvas: Image.Image, result: AnalysisResult, dets: np.ndarray, dt_kpts: np.ndarray
) -> None:
    draw = ImageDraw.Draw(canvas)
    radius = max(2, round(min(canvas.size) / 120))
    kp_scores = result.inp.dt_keypoint_scores
    classes = result.errors.classes[dets]  # (D, K)
    # errors are drawn last so a good point never hides an inversion or swap lying on it
    rows, ks = np.nonzero(np.ones_like(classes, dtype=bool))
    order = np.argsort(classes[rows, ks], kind="stable")
    for row, k in zip(rows[order], ks[order]):
        x, y = dt_kpts[row, k, :2]
        color = CATEGORY_COLORS[int(classes[row, k])]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(0, 0, 0))
    if kp_scores is None:
        return
    data = result.inp.data
    for row, n in enumerate(dets):
        # keypoint scores of low-score unmatched detections would only bury the others' numbers
        if result.errors.matched_gt[n] < 0 and data.dt_scores[n] < TEXT_MIN_SCORE:
            continue
        for k, (x, y, _) in enumerate(dt_kpts[row]):
            draw.text((x + radius + 1, y - radius - 1), f"{kp_scores[n, k]:.2f}", fill=(255, 255, 255))


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically.

    zlib level 3 instead of PIL's 6: the gallery's ~200 images encode in 40 % less time, for files
    about a third larger (encoding was a quarter of ``write_report``'s time).
    """
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=3)
    return Path(path)


def render_gallery(
    result: AnalysisResult,
    out_dir: Path,
    images: list[int],
    images_dir: Path | None = None,
    prefix: str = "worst",
    highlight: dict[int, tuple[list[int], list[int]]] | None = None,
) -> list[str]:
    """Render ``images`` (positions) into ``out_dir/gallery``; return paths relative to ``out_dir``."""
    paths = []
    for rank, image in enumerate(images):
        dets, gts = (highlight or {}).get(image, ([], []))
        picture = render_image(result, image, images_dir, np.asarray(dets, int), np.asarray(gts, int))
        name = f"gallery/{prefix}_{rank:03d}_{int(result.inp.image_ids[image])}.png"
        save_png(picture, out_dir / name)
        paths.append(name)
        if (rank + 1) % 25 == 0 or rank + 1 == len(images):
            logger.info("rendered %s %d/%d", prefix, rank + 1, len(images))
    return paths
