"""A COCO-keypoints dataset returning torchvision detection targets.

Per image it returns ``(image, target)``: ``image`` a float tensor (3, H, W) in [0, 1];
``target`` a dict with ``boxes`` (N, 4) float32 xyxy pixels, ``labels`` (N,) int64 (all 1),
``keypoints`` (N, K, 3) float32 (x, y, v) pixels, ``image_id`` 0-d int64 tensor, ``area`` (N,)
float32 and ``iscrowd`` (N,) int64. Only numpy arrays are held (see
:mod:`raypose.data.annotations`), so DataLoader workers share them cheaply.

Training targets (``train=True``) follow torchvision's reference and detectron2: every non-crowd
person with a box is a target box, with or without labelled keypoints (the keypoint loss
ignores ``v = 0``; about 40% of COCO's training people have none), so that the RPN and box head
do not learn unlabelled people as background. Crowd regions are not targets; they come as
``crowd_boxes`` (M, 4) float32 xyxy pixels, which :func:`raypose.model.build_model`'s model
ignores when sampling background anchors and proposals. As torchvision's reference
(``_coco_remove_images_without_annotations``), an image is trained on only when its people have
at least ``min_keypoints_per_image`` (10) labelled keypoints in all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from raypose.data.annotations import KeypointAnnotations, load_keypoint_annotations
from raypose.errors import InputError
from raypose.images import read_rgb_tensor

logger = logging.getLogger(__name__)

# torchvision refuses boxes with zero width or height while training.
MIN_TRAIN_BOX_SIZE = 1.0
# torchvision's references/detection keeps an image for keypoint training only with this many
# labelled keypoints (min_keypoints_per_image in _coco_remove_images_without_annotations).
MIN_KEYPOINTS_PER_IMAGE = 10


class WorkerInputError(InputError):
    """An :class:`InputError` raised in a DataLoader worker process, with its message intact.

    A worker's exception reaches the main process as its type called on its traceback text
    (``torch._utils.ExceptionWrapper.reraise``: ``"Caught X in DataLoader worker process
    0.\\nOriginal Traceback ..."``); this type takes the original message back out of that text,
    so the user reads the dataset's one line, not a traceback. :meth:`KeypointDataset.__getitem__`
    raises it in workers only; in the main process its errors stay plain :class:`InputError`.
    """

    def __init__(self, message: str):
        header = f"\n{type(self).__module__}.{type(self).__qualname__}: "  # the traceback's last line
        if message.startswith("Caught ") and header in message:
            message = message.split(header, 1)[1].rstrip("\n")
        super().__init__(message)


def training_person_mask(annotations: KeypointAnnotations) -> np.ndarray:
    """People that are training targets, shape (P,) bool: not crowd, box >= 1 px (keypoints or not)."""
    boxes = annotations.boxes_xywh
    return ~annotations.iscrowd & (boxes[:, 2] >= MIN_TRAIN_BOX_SIZE) & (boxes[:, 3] >= MIN_TRAIN_BOX_SIZE)


def training_image_mask(annotations: KeypointAnnotations, min_keypoints: int = MIN_KEYPOINTS_PER_IMAGE) -> np.ndarray:
    """Images worth training on, shape (I,) bool: a target person and >= ``min_keypoints`` labelled
    keypoints over the image's target people (torchvision's rule)."""
    person = training_person_mask(annotations)
    image_rows = np.repeat(np.arange(annotations.num_images), np.diff(annotations.image_offsets))
    people = np.bincount(image_rows[person], minlength=annotations.num_images)
    labelled = np.bincount(
        image_rows[person], weights=annotations.labelled_counts()[person], minlength=annotations.num_images
    )
    return (people > 0) & (labelled >= max(min_keypoints, 1))


class KeypointDataset(torch.utils.data.Dataset):
    """COCO keypoint images and people as torchvision detection ``(image, target)`` pairs.

    Args:
        annotations: loaded annotations, or the path of a COCO keypoint JSON file.
        image_dir: folder holding the images named by ``file_name``.
        train: training targets: crowd people become ``crowd_boxes``, people with a degenerate
            box are dropped, and so are images with fewer than ``min_keypoints_per_image``
            labelled keypoints. ``False`` keeps every image and person (crowd as ``iscrowd``).
        transforms: callable ``(image, target) -> (image, target)`` applied last.
        image_ids: restrict to these COCO image ids (e.g. a few images to overfit on).
        min_keypoints_per_image: see :data:`MIN_KEYPOINTS_PER_IMAGE`; training only.
    """

    def __init__(
        self,
        annotations: KeypointAnnotations | str | os.PathLike,
        image_dir: str | os.PathLike,
        train: bool = False,
        transforms: Callable | None = None,
        image_ids: Sequence[int] | None = None,
        min_keypoints_per_image: int = MIN_KEYPOINTS_PER_IMAGE,
    ):
        if not isinstance(annotations, KeypointAnnotations):
            annotations = load_keypoint_annotations(annotations)
        self.annotations = annotations
        self.image_dir = Path(image_dir)
        self.train = train
        self.transforms = transforms
        if not self.image_dir.is_dir():
            raise InputError(
                f"{self.image_dir}: image folder not found (for {annotations.source}); "
                "pass the folder holding the files its 'file_name' entries name"
            )
        keep = training_person_mask(annotations) if train else np.ones(annotations.num_people, dtype=bool)
        self._select(keep, image_ids, min_keypoints_per_image)

    def _select(self, keep: np.ndarray, image_ids: Sequence[int] | None, min_keypoints: int) -> None:
        ann = self.annotations
        candidates = np.arange(ann.num_images)
        if image_ids is not None:
            candidates = np.asarray([ann.index_of_image_id(i) for i in image_ids], dtype=np.int64)
        if self.train:
            usable = training_image_mask(ann, min_keypoints)[candidates]
            if not usable.all():
                logger.info(
                    "%s: %d of %d images have no person with a box or under %d labelled keypoints; skipped",
                    ann.source, int((~usable).sum()), len(candidates), min_keypoints,
                )
            candidates = candidates[usable]
            logger.info(
                "%s: %d crowd regions ignored, %d people with a degenerate box dropped",
                ann.source, int(ann.iscrowd.sum()), int((~keep & ~ann.iscrowd).sum()),
            )
        self.image_rows = candidates.astype(np.int64)
        self.person_index, self.person_offsets = _grouped_index(ann, keep)
        # Crowd regions of training images, indexed the same way.
        crowd = ann.iscrowd if self.train else np.zeros(ann.num_people, dtype=bool)
        self.crowd_index, self.crowd_offsets = _grouped_index(ann, crowd)

    def __len__(self) -> int:
        return len(self.image_rows)

    @property
    def num_keypoints(self) -> int:
        return self.annotations.num_keypoints

    def image_id(self, index: int) -> int:
        """COCO image id of dataset item ``index``."""
        return int(self.annotations.image_ids[self.image_rows[index]])

    def image_path(self, index: int) -> Path:
        return self.image_dir / str(self.annotations.file_names[self.image_rows[index]])

    def load_image(self, index: int) -> torch.Tensor:
        """The image of item ``index`` as a float tensor (3, H, W) in [0, 1].

        Raises:
            InputError: the file is missing, unreadable, or not the size the annotations say.
        """
        row = self.image_rows[index]
        path = self.image_path(index)
        image_id = int(self.annotations.image_ids[row])
        image = read_rgb_tensor(path, f"image id {image_id} in {self.annotations.source}")
        size = (int(image.shape[2]), int(image.shape[1]))
        expected = (int(self.annotations.widths[row]), int(self.annotations.heights[row]))
        if size != expected:
            raise InputError(
                f"{path}: image id {image_id} is {size[0]}x{size[1]} but {self.annotations.source} "
                f"says {expected[0]}x{expected[1]}"
            )
        return image

    def target(self, index: int) -> dict:
        """The torchvision target of item ``index`` (before transforms); training targets add
        ``crowd_boxes`` (M, 4) xyxy pixels."""
        ann = self.annotations
        row = self.image_rows[index]
        people = self.person_index[self.person_offsets[row] : self.person_offsets[row + 1]]
        keypoints = torch.from_numpy(ann.keypoints[people].copy())
        keypoints *= (keypoints[..., 2:3] > 0).to(keypoints.dtype)  # v = 0 points sit at (0, 0)
        target = {
            "boxes": _xyxy(ann.boxes_xywh[people]),
            "labels": torch.ones(len(people), dtype=torch.int64),
            "keypoints": keypoints.reshape(len(people), ann.num_keypoints, 3),
            "image_id": torch.tensor(int(ann.image_ids[row]), dtype=torch.int64),
            "area": torch.from_numpy(ann.areas[people].copy()),
            "iscrowd": torch.from_numpy(ann.iscrowd[people].astype(np.int64)),
        }
        if self.train:
            crowd = self.crowd_index[self.crowd_offsets[row] : self.crowd_offsets[row + 1]]
            target["crowd_boxes"] = _xyxy(ann.boxes_xywh[crowd])
        return target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        try:
            image = self.load_image(index)
            target = self.target(index)
            if self.transforms is not None:
                image, target = self.transforms(image, target)
        except InputError as e:
            if torch.utils.data.get_worker_info() is None:
                raise
            raise WorkerInputError(str(e)) from None
        return image, target


def _grouped_index(ann: KeypointAnnotations, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kept people as one flat index array plus per-image offsets (I+1,): no Python lists per image."""
    image_rows = np.repeat(np.arange(ann.num_images), np.diff(ann.image_offsets))
    offsets = np.zeros(ann.num_images + 1, dtype=np.int64)
    np.cumsum(np.bincount(image_rows[keep], minlength=ann.num_images), out=offsets[1:])
    return np.flatnonzero(keep).astype(np.int64), offsets


def _xyxy(boxes_xywh: np.ndarray) -> torch.Tensor:
    """COCO ``[x, y, w, h]`` boxes (N, 4) as a float32 xyxy tensor (N, 4)."""
    xywh = torch.from_numpy(boxes_xywh.reshape(-1, 4).copy())
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


def collate_fn(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images and targets as lists (images differ in size; torchvision models take lists)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
