"""Training augmentations on ``(image, target)`` pairs.

Every transform is a callable ``(image, target) -> (image, target)`` where ``image`` is a float
tensor (3, H, W) in [0, 1] and ``target`` is the dict :class:`~raypose.data.dataset.KeypointDataset`
returns: ``boxes`` (N, 4) xyxy, ``keypoints`` (N, K, 3) as (x, y, v) in pixels of the current
image, ``labels``, ``area``, ``iscrowd``, and in training ``crowd_boxes`` (M, 4) xyxy, which
move with the image. Randomness comes from torch's global RNG, so
``torch.manual_seed`` (and the DataLoader's per-worker seeding) makes runs repeatable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from raypose.schema import KeypointSchema

Target = dict
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

PER_PERSON_KEYS = ("boxes", "labels", "keypoints", "area", "iscrowd")


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def zero_unlabelled(keypoints: torch.Tensor) -> torch.Tensor:
    """Set x = y = 0 where v == 0 (COCO's convention for points that are not labelled)."""
    return keypoints * (keypoints[..., 2:3] > 0).to(keypoints.dtype)


def select_people(target: Target, keep: torch.Tensor) -> Target:
    """The target restricted to the people where ``keep`` (N,) bool is true."""
    out = dict(target)
    for key in PER_PERSON_KEYS:
        if key in out:
            out[key] = out[key][keep]
    return out


class RandomHorizontalFlip:
    """Mirror the image with probability ``p``; relabel left/right keypoints by ``schema.flip_index``.

    COCO keypoints are pixel indices (the point at x = 0 is the first column's centre), so a
    point at x maps to ``W - 1 - x``, the column its pixel lands on; ``W - x`` (torchvision's
    reference) would teach half the data a one-pixel shift. Boxes are pixel edges and map to
    ``W - x``. v = 0 points stay 0.
    """

    def __init__(self, schema: KeypointSchema, p: float = 0.5):
        self.flip_index = torch.as_tensor(schema.flip_index, dtype=torch.long)
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if float(torch.rand(())) >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        image = image.flip(-1)
        target["boxes"] = _flip_boxes(target["boxes"], width)
        if "crowd_boxes" in target:
            target["crowd_boxes"] = _flip_boxes(target["crowd_boxes"], width)
        keypoints = target["keypoints"][:, self.flip_index].clone()
        keypoints[..., 0] = width - 1 - keypoints[..., 0]
        target["keypoints"] = zero_unlabelled(keypoints)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def _flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """xyxy boxes (N, 4) mirrored in an image ``width`` pixels wide."""
    flipped = boxes.clone()
    flipped[:, [0, 2]] = width - boxes[:, [2, 0]]
    return flipped


class RandomScaleJitter:
    """Zoom the content by a random factor in ``scale_range`` while keeping the canvas size.

    KeypointRCNN resizes every input to its ``min_size``, so a plain resize would be undone; zooming
    inside a fixed canvas (pad when shrinking, random crop when enlarging) is what changes the
    apparent size of people. Keypoints leaving the canvas get v = 0; boxes (and crowd boxes) are
    clipped; people left with a box under ``min_box_size`` pixels are dropped, while people whose
    keypoints all left stay as boxes (the keypoint loss ignores v = 0).
    """

    def __init__(self, scale_range: tuple[float, float] = (0.75, 1.25), min_box_size: float = 2.0):
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))
        self.min_box_size = min_box_size

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        scale = _uniform(*self.scale_range)
        if abs(scale - 1.0) < 1e-3:
            return image, target
        _, height, width = image.shape
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
        # Offset of the resized image inside the canvas: >= 0 pads, < 0 crops.
        dx = round(_uniform(0, width - new_w)) if new_w <= width else -round(_uniform(0, new_w - width))
        dy = round(_uniform(0, height - new_h)) if new_h <= height else -round(_uniform(0, new_h - height))
        canvas = image.new_zeros(image.shape) + resized.mean(dim=(1, 2), keepdim=True)
        src_x0, src_y0 = max(0, -dx), max(0, -dy)
        dst_x0, dst_y0 = max(0, dx), max(0, dy)
        w = min(new_w - src_x0, width - dst_x0)
        h = min(new_h - src_y0, height - dst_y0)
        canvas[:, dst_y0 : dst_y0 + h, dst_x0 : dst_x0 + w] = resized[
            :, src_y0 : src_y0 + h, src_x0 : src_x0 + w
        ]
        sx, sy = new_w / width, new_h / height
        return canvas, self._move_target(target, sx, sy, dx, dy, width, height)

    def _move_target(self, target: Target, sx: float, sy: float, dx: int, dy: int, width: int, height: int):
        target = dict(target)
        boxes = _move_boxes(target["boxes"], sx, sy, dx, dy, width, height)
        if "crowd_boxes" in target:
            crowd = _move_boxes(target["crowd_boxes"], sx, sy, dx, dy, width, height)
            target["crowd_boxes"] = crowd[(crowd[:, 2] > crowd[:, 0]) & (crowd[:, 3] > crowd[:, 1])]
        keypoints = target["keypoints"].clone()
        keypoints[..., 0] = keypoints[..., 0] * sx + dx
        keypoints[..., 1] = keypoints[..., 1] * sy + dy
        inside = (
            (keypoints[..., 0] >= 0)
            & (keypoints[..., 0] < width)
            & (keypoints[..., 1] >= 0)
            & (keypoints[..., 1] < height)
        )
        keypoints[..., 2] = torch.where(inside, keypoints[..., 2], torch.zeros_like(keypoints[..., 2]))
        target["boxes"] = boxes
        target["keypoints"] = zero_unlabelled(keypoints)
        if "area" in target:
            target["area"] = target["area"] * (sx * sy)
        big_enough = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) >= self.min_box_size
        )
        return select_people(target, big_enough)

    def __repr__(self) -> str:
        return f"RandomScaleJitter(scale_range={self.scale_range})"


def _move_boxes(boxes: torch.Tensor, sx: float, sy: float, dx: int, dy: int, width: int, height: int) -> torch.Tensor:
    """xyxy boxes (N, 4) scaled by (sx, sy), shifted by (dx, dy) and clipped to the canvas."""
    moved = boxes * torch.tensor([sx, sy, sx, sy]) + torch.tensor([dx, dy, dx, dy])
    moved[:, 0::2] = moved[:, 0::2].clamp(0, width)
    moved[:, 1::2] = moved[:, 1::2].clamp(0, height)
    return moved


class PhotometricJitter:
    """Random brightness, contrast and saturation (factors in ``1 ± strength``); targets unchanged."""

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3):
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        b = _uniform(1 - self.brightness, 1 + self.brightness)
        c = _uniform(1 - self.contrast, 1 + self.contrast)
        s = _uniform(1 - self.saturation, 1 + self.saturation)
        # brightness x*b, contrast (x - m)*c + m around the mean grey m, saturation (x - g)*s + g
        # around the per-pixel grey g, folded into one pass: out = b*c*s*x + (1-s)*g' + s*m*(1-c).
        gray = image[0] * 0.299 + image[1] * 0.587 + image[2] * 0.114
        mean = float(gray.mean()) * b
        gray_after = gray.mul_(b * c).add_(mean * (1 - c))
        out = image * (b * c * s)
        out.add_(gray_after.mul_(1 - s)[None]).add_(s * mean * (1 - c))
        return out.clamp_(0.0, 1.0), target

    def __repr__(self) -> str:
        return f"PhotometricJitter({self.brightness}, {self.contrast}, {self.saturation})"


def build_train_transforms(
    schema: KeypointSchema,
    hflip_prob: float = 0.5,
    scale_range: tuple[float, float] | None = (0.75, 1.25),
    photometric: bool = True,
) -> Compose:
    """The training augmentations: horizontal flip, scale jitter, photometric jitter.

    ``hflip_prob=0``, ``scale_range=None`` or ``(1, 1)``, and ``photometric=False`` switch each off.
    """
    transforms: list[Transform] = []
    if hflip_prob > 0:
        transforms.append(RandomHorizontalFlip(schema, hflip_prob))
    if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
        transforms.append(RandomScaleJitter(tuple(scale_range)))
    if photometric:
        transforms.append(PhotometricJitter())
    return Compose(transforms)


def build_eval_transforms() -> Compose:
    """Evaluation transforms: none (the model does its own resizing and normalisation)."""
    return Compose([])
