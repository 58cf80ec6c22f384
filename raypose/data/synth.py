"""A synthetic keypoint data set in the real COCO + CMU-foot file formats.

COCO cannot be downloaded here, so the quickstart and the tests train on drawn figures instead:
articulated stick people (head with eyes, nose and ears; torso; arms; legs; feet with heel and
two toes) in random poses and sizes, several per image, overlapping, partly outside the frame,
sometimes behind an occluder, on smooth textured backgrounds. Every figure faces the viewer, so its
left side is on the image's right: that geometry is what makes left and right learnable, and it
survives a horizontal flip (a mirrored front view is a front view with its labels swapped). The two
sides' limbs differ in shade, but which side gets which shade is random, so colour says nothing
about left and right (a colour cue would contradict every flipped training image).

The files use exactly the source layouts, so the pipeline always runs the real merge::

    DIR/annotations/person_keypoints_{train,val}2017.json          COCO, 17 points
    DIR/annotations/person_keypoints_train2017_foot_v1.json        CMU style, 23 points each
    DIR/annotations/person_keypoints_val2017_foot_v1.json          CMU style, 6 points, one category dict
    DIR/{train,val}2017/*.jpg

Keypoints are ``(x, y, v)``: exactly the centre of the drawn joint; v = 0 outside the image
(x = y = 0), v = 1 under a later figure or an occluder, v = 2 visible. Each image is generated
from its own RNG (seed, split, index), so output is deterministic and independent of N.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from raypose.data.merge import merge_foot_files
from raypose.errors import InputError, OutputError
from raypose.io import atomic_path, reporting_write_failures, write_failure, write_json_atomic
from raypose.schema import COCO17, COCO23

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 1, "val": 2}
_IMAGE_ID_BASE = {"train": 1, "val": 500_001}
MIN_LABELLED_HEIGHT = 28  # figures smaller than this are left unlabelled, like COCO's tiny people
FOOT_FRACTION = 0.75  # share of labelled people that also get a CMU foot annotation
LIMB_COLORS = np.array([[215, 55, 40], [40, 90, 220], [225, 140, 30], [40, 170, 190], [150, 70, 190]])
SYNTH_VERSION = 2  # bumped whenever the same settings draw different images; older sets are refused
K = COCO23.num_keypoints
_KP = {name: i for i, name in enumerate(COCO23.names)}


def coco_path(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"person_keypoints_{split}2017.json"


def foot_path(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"person_keypoints_{split}2017_foot_v1.json"


MANIFEST = "synth.json"  # the settings a set was generated with


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The settings ``root``'s synthetic set was generated with, or None (none recorded)."""
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def merged_path(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"person_keypoints_{split}2017_foot23.json"


def image_dir(root: Path, split: str) -> Path:
    return Path(root) / f"{split}2017"


@dataclass(frozen=True)
class SynthStyle:
    """How hard the drawn images are. The defaults are the standard set the tests and demos use;
    the quickstart draws an easier one (see ``configs/synthetic_tiny.yaml``).

    Attributes:
        image_size: (min, max) of each image side in pixels.
        max_people: most labelled figures per image (1-4); counts above it are not drawn.
        empty_fraction: share of images with no figure at all.
        person_height: (min, max) height of a regular figure as a fraction of the image height.
        small_fraction: share of figures drawn small (0.12-0.3 of the image height; below 28 px unlabelled).
        clutter: 0-1, scales background shapes and the chance of an occluder or a crowd.
    """

    image_size: tuple[int, int] = (160, 256)
    max_people: int = 4
    empty_fraction: float = 0.08
    person_height: tuple[float, float] = (0.4, 0.95)
    small_fraction: float = 0.15
    clutter: float = 1.0

    def __post_init__(self) -> None:
        low, high = self.image_size
        problems = []
        if not 32 <= low <= high:
            problems.append(f"image_size must satisfy 32 <= min <= max, got {tuple(self.image_size)}")
        if not 1 <= self.max_people <= len(_PEOPLE_P):
            problems.append(f"max_people must be 1-{len(_PEOPLE_P)}, got {self.max_people}")
        h_low, h_high = self.person_height
        if not 0.05 <= h_low <= h_high <= 1.5:
            problems.append(f"person_height must satisfy 0.05 <= min <= max <= 1.5, got {tuple(self.person_height)}")
        for name in ("empty_fraction", "small_fraction", "clutter"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if problems:
            raise InputError("synthetic style: " + "; ".join(problems))

    def people_p(self) -> np.ndarray:
        """Probabilities of 1..4 figures in a non-empty image, cut at ``max_people``."""
        p = np.array(_PEOPLE_P[: self.max_people])
        return np.concatenate([p / p.sum(), np.zeros(len(_PEOPLE_P) - self.max_people)])


_PEOPLE_P = (0.3, 0.35, 0.22, 0.13)


@dataclass
class SynthLayout:
    """Where a generated (or real) data set's files are."""

    root: Path
    num_images: dict[str, int] = field(default_factory=dict)
    num_people: dict[str, int] = field(default_factory=dict)

    def coco(self, split: str) -> Path:
        return coco_path(self.root, split)

    def foot(self, split: str) -> Path:
        return foot_path(self.root, split)

    def merged(self, split: str) -> Path:
        return merged_path(self.root, split)

    def images(self, split: str) -> Path:
        return image_dir(self.root, split)


# ----------------------------------------------------------------------------- geometry


def _figure_keypoints(rng: np.random.Generator, center: np.ndarray, height: float) -> np.ndarray:
    """Joint positions (23, 2) of one front-facing figure, in image pixels.

    ``center`` is the pelvis; ``height`` runs from the top of the head to the soles. The person's
    left side is on the image's right (front view), along ``r``; ``u`` points up the body.
    """
    tilt = rng.uniform(-0.25, 0.25)
    u = np.array([np.sin(tilt), -np.cos(tilt)])
    r = np.array([np.cos(tilt), np.sin(tilt)])
    h = height
    pts = np.zeros((K, 2))
    shoulder_mid = center + u * 0.30 * h
    head_r = 0.065 * h
    head = shoulder_mid + u * (0.05 * h + head_r)
    yaw = rng.uniform(-0.35, 0.35)
    pts[_KP["nose"]] = head - u * 0.2 * head_r + r * yaw * head_r
    for side, name in ((1, "left"), (-1, "right")):
        pts[_KP[f"{name}_eye"]] = head + u * 0.25 * head_r + r * (side * 0.4 + 0.6 * yaw) * head_r
        pts[_KP[f"{name}_ear"]] = head + r * (side * 1.0 + 0.3 * yaw) * head_r
        pts[_KP[f"{name}_shoulder"]] = shoulder_mid + side * r * 0.13 * h
        pts[_KP[f"{name}_hip"]] = center + side * r * 0.085 * h

        def direction(angle: float, side: int = side) -> np.ndarray:
            return -u * np.cos(angle) + side * r * np.sin(angle)

        arm = rng.uniform(-0.3, 2.6)
        elbow = pts[_KP[f"{name}_shoulder"]] + direction(arm) * 0.16 * h
        pts[_KP[f"{name}_elbow"]] = elbow
        pts[_KP[f"{name}_wrist"]] = elbow + direction(arm + rng.uniform(-1.2, 1.8)) * 0.15 * h
        leg = rng.uniform(-0.12, 0.7)
        knee = pts[_KP[f"{name}_hip"]] + direction(leg) * 0.24 * h
        pts[_KP[f"{name}_knee"]] = knee
        ankle = knee + direction(leg + rng.uniform(-0.6, 0.35)) * 0.23 * h
        pts[_KP[f"{name}_ankle"]] = ankle
        # Feet turned outwards (front view), so heel and toes separate in the image.
        foot = direction(np.pi / 2 - rng.uniform(0.0, 0.5)) * 0.09 * h
        pts[_KP[f"{name}_big_toe"]] = ankle + foot - u * 0.025 * h
        pts[_KP[f"{name}_small_toe"]] = ankle + 0.7 * foot - u * 0.055 * h
        pts[_KP[f"{name}_heel"]] = ankle - 0.2 * foot - u * 0.05 * h
    return pts


def _jitter_color(rng: np.random.Generator, base: np.ndarray, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(base + rng.integers(-amount, amount + 1, 3), 0, 255))


def _draw_figure(
    rng: np.random.Generator,
    draws: tuple[ImageDraw.ImageDraw, ImageDraw.ImageDraw],
    pts: np.ndarray,
    h: float,
) -> None:
    """Draw one figure on the image (``draws[0]``) and its silhouette on a mask (``draws[1]``)."""
    draw, mask = draws
    width = max(2, round(0.045 * h))
    joint_r = max(1.0, 0.022 * h)
    skin = _jitter_color(rng, np.array([205, 160, 125]), 30)
    shirt = _jitter_color(rng, rng.integers(60, 200, 3), 0)
    base = LIMB_COLORS[rng.integers(len(LIMB_COLORS))].astype(float)
    shades = [base, np.clip(base * 0.65 + 70, 0, 255)]  # the same hue, one side lighter
    light_side = int(rng.integers(2))  # random: the shade is no left/right cue
    colors = {
        side: (_jitter_color(rng, shades[i ^ light_side]), _jitter_color(rng, shades[i ^ light_side] * 0.7))
        for i, side in enumerate(("left", "right"))
    }

    def line(a: str, b: str, color, w: int = width) -> None:
        xy = [tuple(pts[_KP[a]]), tuple(pts[_KP[b]])]
        draw.line(xy, fill=color, width=w)
        mask.line(xy, fill=255, width=w)

    def dot(name: str, color, radius: float) -> None:
        x, y = pts[_KP[name]]
        box = [x - radius, y - radius, x + radius, y + radius]
        draw.ellipse(box, fill=color)
        mask.ellipse(box, fill=255)

    for side in ("left", "right"):
        upper, lower = colors[side]
        line(f"{side}_hip", f"{side}_knee", upper)
        line(f"{side}_knee", f"{side}_ankle", lower)
        foot = [tuple(pts[_KP[f"{side}_{n}"]]) for n in ("ankle", "big_toe", "small_toe", "heel")]
        draw.polygon(foot, fill=lower)
        mask.polygon(foot, fill=255)
        dot(f"{side}_heel", (40, 40, 40), joint_r)
        dot(f"{side}_big_toe", (250, 230, 60), joint_r)
        dot(f"{side}_small_toe", (60, 200, 90), joint_r * 0.8)
    torso = [tuple(pts[_KP[n]]) for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")]
    draw.polygon(torso, fill=shirt)
    mask.polygon(torso, fill=255)
    neck = (pts[_KP["left_shoulder"]] + pts[_KP["right_shoulder"]]) / 2
    head_center = (pts[_KP["left_ear"]] + pts[_KP["right_ear"]]) / 2
    draw.line([tuple(neck), tuple(head_center)], fill=skin, width=width)
    mask.line([tuple(neck), tuple(head_center)], fill=255, width=width)
    head_r = 0.068 * h
    head_box = [
        head_center[0] - head_r,
        head_center[1] - head_r * 1.15,
        head_center[0] + head_r,
        head_center[1] + head_r * 1.1,
    ]
    draw.ellipse(head_box, fill=skin)
    mask.ellipse(head_box, fill=255)
    for side in ("left", "right"):
        upper, lower = colors[side]
        line(f"{side}_shoulder", f"{side}_elbow", upper)
        line(f"{side}_elbow", f"{side}_wrist", lower)
        for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
            dot(f"{side}_{joint}", lower, joint_r)
        dot(f"{side}_eye", (25, 25, 25), max(1.0, 0.012 * h))
        dot(f"{side}_ear", upper, max(1.0, 0.015 * h))
    dot("nose", (150, 60, 50), max(1.0, 0.012 * h))


# ----------------------------------------------------------------------------- images


def _background(rng: np.random.Generator, width: int, height: int, clutter: float = 1.0) -> Image.Image:
    """Smooth low-contrast noise plus a few muted shapes: textured, but not louder than the figures."""
    base = rng.uniform(90, 190, 3)
    grid = (max(2, height // 24), max(2, width // 24))
    # Mostly brightness texture with a little colour, so the coloured limbs stand out.
    coarse = rng.normal(0, 18, (*grid, 1)) + rng.normal(0, 7, (*grid, 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BICUBIC
    )
    field_ = np.asarray(coarse_img, dtype=np.float32) - 128 + base
    field_ += rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(field_, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(round(rng.integers(2, 6) * clutter)):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * width, y0 + rng.uniform(0.1, 0.6) * height
        gray = rng.uniform(70, 190)
        color = tuple(int(np.clip(gray + d, 0, 255)) for d in rng.normal(0, 12, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=color)
    return image


def _visibility(pts: np.ndarray, width: int, height: int, cover: np.ndarray) -> np.ndarray:
    """(K, 3) keypoints with v: 0 outside the image, 1 where ``cover`` (H, W) bool hides them, else 2."""
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
    kps = np.zeros((len(pts), 3))
    xs = np.clip(pts[:, 0].astype(int), 0, width - 1)
    ys = np.clip(pts[:, 1].astype(int), 0, height - 1)
    hidden = cover[ys, xs]
    kps[:, :2] = np.round(pts, 2)
    kps[:, 2] = np.where(hidden, 1, 2)
    kps[~inside] = 0
    return kps


def _mask_box(mask: np.ndarray) -> tuple[list[float], float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return [x0, y0, x1 - x0, y1 - y0], float(len(xs))


def _render_image(
    rng: np.random.Generator, width: int, height: int, crowd: bool, style: SynthStyle
) -> tuple[Image.Image, list]:
    """One image and its people as ``(kind, keypoints (K, 3) or None, bbox, area)`` tuples."""
    image = _background(rng, width, height, style.clutter)
    draw = ImageDraw.Draw(image)
    empty = rng.random() < style.empty_fraction
    n_figures = 0 if empty else int(rng.choice([1, 2, 3, 4], p=style.people_p()))
    people = []
    if crowd:  # distant people first, so every labelled figure is in front of them
        people.append(_draw_crowd(rng, draw, width, height))
    figures = []  # (keypoints 2d, height, mask)
    for _ in range(n_figures):
        small = rng.random() < style.small_fraction
        fig_h = height * (rng.uniform(0.12, 0.3) if small else rng.uniform(*style.person_height))
        center = np.array([rng.uniform(-0.05, 1.05) * width, rng.uniform(0.3, 0.85) * height])
        pts = _figure_keypoints(rng, center, fig_h)
        mask_img = Image.new("L", (width, height), 0)
        _draw_figure(rng, (draw, ImageDraw.Draw(mask_img)), pts, fig_h)
        figures.append((pts, fig_h, np.asarray(mask_img) > 0))
    occluder = np.zeros((height, width), dtype=bool)
    if figures and rng.random() < 0.3 * style.clutter:
        x0, y0 = rng.uniform(0, 0.8) * width, rng.uniform(0.2, 0.8) * height
        box = [x0, y0, x0 + rng.uniform(0.12, 0.35) * width, y0 + rng.uniform(0.12, 0.35) * height]
        draw.rectangle(box, fill=_jitter_color(rng, rng.uniform(80, 180, 3), 0), outline=(30, 30, 30))
        occluder[int(box[1]) : int(np.ceil(box[3])) + 1, int(box[0]) : int(np.ceil(box[2])) + 1] = True
    for i, (pts, fig_h, mask) in enumerate(figures):
        box = _mask_box(mask)
        if box is None:
            continue  # entirely outside the frame: not a person of this image
        cover = occluder.copy()
        for _, _, later in figures[i + 1 :]:
            cover |= later
        kps = _visibility(pts, width, height, cover) if fig_h >= MIN_LABELLED_HEIGHT else np.zeros((K, 3))
        people.append(("person", kps, box[0], box[1]))
    return image, people


def _draw_crowd(rng: np.random.Generator, draw: ImageDraw.ImageDraw, width: int, height: int) -> tuple:
    """A cluster of tiny figures annotated as one ``iscrowd`` region (no keypoints), as COCO does."""
    mask_img = Image.new("L", (width, height), 0)
    mask_draw = ImageDraw.Draw(mask_img)
    x0, y = rng.uniform(0.05, 0.6) * width, rng.uniform(0.2, 0.6) * height
    for j in range(int(rng.integers(4, 8))):
        fig_h = rng.uniform(14, 22)
        center = np.array([x0 + j * fig_h * 0.35, y + rng.uniform(-3, 3)])
        _draw_figure(rng, (draw, mask_draw), _figure_keypoints(rng, center, fig_h), fig_h)
    box = _mask_box(np.asarray(mask_img) > 0)
    return ("crowd", None, box[0], box[1])


# ----------------------------------------------------------------------------- files


def _annotation(ann_id: int, image_id: int, kps: np.ndarray | None, bbox: list, area: float, crowd: bool):
    flat = [0.0] * (3 * K) if kps is None else kps.reshape(-1).tolist()
    x, y, w, h = bbox
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": int(crowd),
        "bbox": [round(v, 2) for v in bbox],
        "area": round(area, 2),
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        "keypoints": [int(v) if float(v).is_integer() else v for v in flat],
    }


def _split_records(split: str, count: int, seed: int, style: SynthStyle, image_folder: Path) -> tuple:
    """Render ``count`` images of ``split``; return (images, 23-point annotations, foot ann ids)."""
    images, annotations, foot_ids = [], [], []
    low, high = style.image_size
    for n in range(count):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], n])
        width, height = (int(v) for v in rng.integers(low, high + 1, 2))
        image_id = _IMAGE_ID_BASE[split] + n
        crowd = split == "train" and rng.random() < 0.15 * style.clutter
        image, people = _render_image(rng, width, height, crowd, style)
        file_name = f"{image_id:012d}.jpg"
        with atomic_path(image_folder / file_name) as tmp:
            image.save(tmp, format="JPEG", quality=92)
        images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height, "license": 1}
        )
        for k, (kind, kps, bbox, area) in enumerate(people):
            ann = _annotation(image_id * 100 + k, image_id, kps, bbox, area, kind == "crowd")
            annotations.append(ann)
            labelled = kps is not None and (kps[:, 2] > 0).any()
            if labelled and rng.random() < FOOT_FRACTION:
                foot_ids.append(ann["id"])
        if (n + 1) % 100 == 0 or n + 1 == count:
            logger.info("synth %s: %d/%d images", split, n + 1, count)
    return images, annotations, foot_ids


def _count(flat: list) -> int:
    return sum(1 for v in flat[2::3] if v > 0)


def _write_split_files(root: Path, split: str, images: list, annotations: list, foot_ids: list) -> None:
    info = {"description": f"raypose synthetic {split} set", "version": "1.0"}
    licenses = [{"id": 1, "name": "generated", "url": ""}]
    body = []
    for ann in annotations:
        coco_ann = dict(ann, keypoints=ann["keypoints"][: 3 * COCO17.num_keypoints])
        coco_ann["num_keypoints"] = _count(coco_ann["keypoints"])
        body.append(coco_ann)
    coco = {
        "info": info,
        "licenses": licenses,
        "images": images,
        "annotations": body,
        "categories": [COCO17.coco_category(1)],
    }
    write_json_atomic(coco_path(root, split), coco)
    by_id = {ann["id"]: ann for ann in annotations}
    foot_anns = []
    for ann_id in foot_ids:
        ann = dict(by_id[ann_id])
        if split == "train":  # CMU train: 23 points, num_keypoints left at the body count (stale)
            ann["num_keypoints"] = _count(ann["keypoints"][: 3 * COCO17.num_keypoints])
        else:  # CMU val: only the 6 foot points
            ann["keypoints"] = ann["keypoints"][3 * COCO17.num_keypoints :]
            ann["num_keypoints"] = _count(ann["keypoints"])
        foot_anns.append(ann)
    foot_image_ids = {ann["image_id"] for ann in foot_anns}
    category = COCO23.coco_category(1)
    foot = {
        "info": info,
        "licenses": licenses,
        "images": [im for im in images if im["id"] in foot_image_ids],
        "annotations": foot_anns,
        "categories": [category] if split == "train" else category,
    }
    write_json_atomic(foot_path(root, split), foot)


def generate_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_train: int,
    num_val: int,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    style: SynthStyle | None = None,
) -> SynthLayout:
    """Write a synthetic data set in the COCO + CMU-foot layout (see the module docstring).

    Training and validation images are drawn the same way from disjoint RNG streams.

    Args:
        image_size: (min, max) of each image side in pixels; each image draws its width and height
            uniformly from this range. Overrides ``style.image_size``.
        style: how hard the images are (people per image, their size, clutter); default standard.

    The set is written into a temporary folder beside ``out_dir`` and moved into it at the end:
    a run that fails (a full disk) leaves ``out_dir`` as it was, or absent.

    Raises:
        InputError: negative counts or an invalid style.
        OutputError: the disk is full or read-only; the message names ``out_dir``.
    """
    if num_train < 0 or num_val < 0:
        raise InputError(f"image counts must be >= 0, got train={num_train} val={num_val}")
    style = style or SynthStyle()
    if image_size is not None:
        style = replace(style, image_size=tuple(image_size))
    out = Path(out_dir)
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)  # the first folder made here
    fix = "free space there or choose another folder"
    staging = None
    try:
        with reporting_write_failures(out, fix=fix):
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
            layout = _write_dataset(staging, num_train, num_val, seed, style)
            _move_into(staging, out)
    except OutputError as e:  # a file's atomic write failed: name the folder the user chose, not the temporary one
        cause = e.__cause__
        renamed = write_failure(cause, out, fix=fix) if isinstance(cause, OSError) else None
        raise (renamed or e) from cause
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created is not None and created != out and not out.exists():
            shutil.rmtree(created, ignore_errors=True)  # only our temporary folder was in it
    return replace(layout, root=out)


def _move_into(staging: Path, out: Path) -> None:
    """Rename ``staging``'s files into ``out`` (all on one disk), the manifest last; files of ``out``
    with other names stay."""
    if not out.exists():
        os.rename(staging, out)
        return
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == MANIFEST)
    for source in files:
        target = out / source.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def _write_dataset(root: Path, num_train: int, num_val: int, seed: int, style: SynthStyle) -> SynthLayout:
    layout = SynthLayout(root=root)
    for split, count in (("train", num_train), ("val", num_val)):
        folder = layout.images(split)
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations, foot_ids = _split_records(split, count, seed, style, folder)
        _write_split_files(layout.root, split, images, annotations, foot_ids)
        layout.num_images[split] = len(images)
        layout.num_people[split] = len(annotations)
    settings = {"version": SYNTH_VERSION, "train": num_train, "val": num_val, "seed": seed, **asdict(style)}
    write_json_atomic(layout.root / MANIFEST, {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()})
    return layout


def prepare_dataset(root: str | os.PathLike, allow_unmatched: bool = False) -> dict[str, Path]:
    """Merge COCO and CMU foot files of every split found under ``root`` into 23-point files.

    Works on real COCO + CMU downloads laid out as ``root/annotations/person_keypoints_*`` and on
    :func:`generate_synthetic_dataset` output. Returns ``{split: merged file}``.

    Raises:
        InputError: no split has both files.
    """
    root = Path(root)
    merged = {}
    for split in SPLITS:
        coco, foot = coco_path(root, split), foot_path(root, split)
        if coco.is_file() and foot.is_file():
            report = merge_foot_files(coco, foot, merged_path(root, split), allow_unmatched)
            logger.info("%s: %s", split, report.summary())
            merged[split] = merged_path(root, split)
        else:
            logger.warning("%s: skipped (needs %s and %s)", split, coco, foot)
    if not merged:
        raise InputError(
            f"{root}: no split has both annotations/person_keypoints_<split>2017.json and "
            "annotations/person_keypoints_<split>2017_foot_v1.json"
        )
    return merged
