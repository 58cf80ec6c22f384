"""Rendering images of the error analysis: ground truth and predictions, keypoints coloured by error.

Ground-truth skeletons are drawn in green, predicted ones in magenta; every predicted keypoint of
a drawn detection is a dot coloured by its category (good, jitter, inversion, swap, miss) with
its keypoint score beside it when the detections file has ``keypoint_scores`` (for matched
detections and unmatched ones scoring at least ``TEXT_MIN_SCORE``). Only the top detections are
drawn (:func:`detections_to_draw`): an image keeps up to 20, and twenty overlapping boxes hide
the people. Every picture is scaled, up or down, to ``GALLERY_SIDE`` on its long side, with
lines, dots and fonts sized to the picture, so labels read alike on a 128 px synthetic image and
on a COCO photograph. Without the image file (no ``--images``, or a missing file) a grey canvas
of the image's size is used.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from raypose.analysis.error_types import UNCLASSIFIED
from raypose.analysis.summary import AnalysisResult
from raypose.data.draw import draw_skeletons
from raypose.errors import InputError
from raypose.images import read_rgb
from raypose.io import atomic_path

logger = logging.getLogger(__name__)

GALLERY_SIDE = 640  # long side of every rendered picture, px: small images are scaled up too
DRAW_MIN_SCORE = 0.5  # beyond an image's N best detections (N = its people), those scoring this are drawn
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
            return read_rgb(path)
        except InputError as e:  # a gallery of the other images is still worth having
            logger.warning("%s; drawing on a blank canvas", e)
    return Image.new("RGB", (int(inp.widths[image]), int(inp.heights[image])), (90, 90, 90))


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    return out


def _keypoint_box(kpts: np.ndarray) -> np.ndarray:
    return np.stack(
        [kpts[:, :, 0].min(1), kpts[:, :, 1].min(1), kpts[:, :, 0].max(1), kpts[:, :, 1].max(1)], 1
    )


@dataclass(frozen=True)
class _Pen:
    """Line width, dot radius (px) and fonts for a picture of a given long side."""

    line: int
    radius: int
    label: ImageFont.ImageFont | ImageFont.FreeTypeFont  # detection scores
    small: ImageFont.ImageFont | ImageFont.FreeTypeFont  # keypoint scores


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font; a fixed bitmap without FreeType


def _pen(side: int) -> _Pen:
    # at 640 px: 2 px lines, 5 px dots, 16 px detection scores, 11 px keypoint scores
    return _Pen(
        line=max(2, round(side / 320)),
        radius=max(3, round(side / 128)),
        label=_font(max(10, round(side / 40))),
        small=_font(max(9, round(side / 58))),
    )


def detections_to_draw(
    result: AnalysisResult,
    image: int,
    always: Sequence[int] | np.ndarray = (),
    min_score: float = DRAW_MIN_SCORE,
) -> np.ndarray:
    """The detections of image position ``image`` that the gallery draws, highest score first.

    As many as the image has people who count (its ``N`` best: what a perfect detector would
    show), every one scoring at least ``min_score``, every one matched to a person (the
    detections whose points the colours classify and whose OKS the image score sums, kept even
    when a higher-scoring false positive took a top-``N`` place), and those in ``always`` (the
    highlighted false positive), whatever their score.

    Returns:
        (D,) indices into ``result.inp.data``'s detections.
    """
    data = result.inp.data
    dets = np.flatnonzero(data.dt_img == image)
    dets = dets[np.argsort(-data.dt_scores[dets], kind="stable")]
    people = np.count_nonzero(~data.gt_ignore[data.gt_img == image])
    keep = (np.arange(len(dets)) < people) | (data.dt_scores[dets] >= min_score)
    keep |= (result.det_matched[dets] >= 0) | (result.errors.matched_gt[dets] >= 0)
    keep |= np.isin(dets, np.asarray(always, dtype=np.int64))
    return dets[keep]


def render_image(
    result: AnalysisResult,
    image: int,
    images_dir: Path | None = None,
    highlight_dets: np.ndarray | None = None,
    highlight_gts: np.ndarray | None = None,
    side: int = GALLERY_SIDE,
    min_score: float = DRAW_MIN_SCORE,
) -> Image.Image:
    """Draw one image (position ``image`` in ``result.inp``), scaled to ``side`` px on its long side.

    Every ground-truth person is drawn; of the detections, those :func:`detections_to_draw` picks.

    Args:
        highlight_dets / highlight_gts: detection / ground-truth indices to box in red
            (a background false positive, a missed person); highlighted detections are drawn.
        min_score: detections scoring this much are drawn beyond the image's ``N`` best.
    """
    inp, data = result.inp, result.inp.data
    canvas = _canvas(result, image, images_dir)
    scale = side / max(canvas.size)
    if scale != 1.0:
        resample = Image.Resampling.LANCZOS if scale < 1.0 else Image.Resampling.BICUBIC
        size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
        canvas = canvas.resize(size, resample)
    pen = _pen(max(canvas.size))
    highlight_dets = np.asarray([] if highlight_dets is None else highlight_dets, dtype=np.int64)
    highlight_gts = np.asarray([] if highlight_gts is None else highlight_gts, dtype=np.int64)
    gts = np.flatnonzero(data.gt_img == image)
    dets = detections_to_draw(result, image, highlight_dets, min_score)
    gt_kpts = data.gt_kpts[gts].copy()
    gt_kpts[:, :, :2] *= scale
    gt_boxes = _xywh_to_xyxy(data.gt_boxes[gts]) * scale
    canvas = draw_skeletons(canvas, gt_kpts, inp.schema, boxes=gt_boxes, color=GT_COLOR, line_width=pen.line)
    dt_kpts = data.dt_kpts[dets].copy()
    dt_kpts[:, :, :2] *= scale
    dt_kpts[:, :, 2] = 2  # draw every predicted point
    dt_boxes = _keypoint_box(dt_kpts)
    canvas = draw_skeletons(
        canvas, dt_kpts, inp.schema, boxes=dt_boxes, color=PRED_COLOR, line_width=pen.line
    )
    draw = ImageDraw.Draw(canvas)
    _draw_categories(draw, result, dets, dt_kpts, pen)
    for box, score in zip(dt_boxes, data.dt_scores[dets]):
        _box_label(draw, box, f"{score:.2f}", PRED_COLOR, pen)
    for n in highlight_dets:
        box = _keypoint_box(data.dt_kpts[n : n + 1])[0] * scale
        draw.rectangle([float(v) for v in box], outline=HIGHLIGHT_COLOR, width=pen.line + 1)
    for g in highlight_gts:
        box = _xywh_to_xyxy(data.gt_boxes[g : g + 1])[0] * scale
        draw.rectangle([float(v) for v in box], outline=HIGHLIGHT_COLOR, width=pen.line + 1)
    return canvas


def _text(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: tuple[int, int, int], font
) -> None:
    # a black outline keeps the text legible on any photograph
    draw.text(
        (float(xy[0]), float(xy[1])), text, fill=color, font=font, stroke_width=1, stroke_fill=(0, 0, 0)
    )


def _box_label(
    draw: ImageDraw.ImageDraw, box: np.ndarray, text: str, color: tuple[int, int, int], pen: _Pen
) -> None:
    """``text`` on a black tab above the box's top-left corner (inside the box at the top edge)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=pen.label)
    width, height = right - left + 2 * pen.line, bottom - top + 2 * pen.line
    x = float(box[0])
    y = float(box[1]) - height if box[1] >= height else float(box[1])
    draw.rectangle([x, y, x + width, y + height], fill=(0, 0, 0))
    draw.text((x + pen.line - left, y + pen.line - top), text, fill=color, font=pen.label)


def _draw_categories(
    draw: ImageDraw.ImageDraw, result: AnalysisResult, dets: np.ndarray, dt_kpts: np.ndarray, pen: _Pen
) -> None:
    radius = pen.radius
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
            _text(
                draw, (x + radius + 1, y - radius - 1), f"{kp_scores[n, k]:.2f}", (255, 255, 255), pen.small
            )


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
