"""The keypoint schema: names, OKS sigmas, flip pairs and skeleton, in one place.

Every other module takes a :class:`KeypointSchema` (or a keypoint count and calls
:func:`schema_for`) rather than repeating these tables.

Conventions used throughout raypose:

* keypoints are ``(x, y, v)`` in original-image pixels, ``v`` in {0, 1, 2}
  (0 = not labelled / outside the image, 1 = labelled but occluded, 2 = visible);
* indices into the schema are 0-based in Python; COCO JSON ``skeleton`` entries are 1-based
  (see :meth:`KeypointSchema.coco_skeleton`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COCO_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
FOOT_NAMES: tuple[str, ...] = (
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
)

# Per-keypoint annotator standard deviations from the design notes (the COCO team's values for
# the 17 body points; the 6 foot points are assumed to vary like wrists). pycocotools expects
# them divided by 10, which is what the schema stores.
_STD_TABLE: dict[str, float] = {
    "nose": 0.26,
    "left_eye": 0.25,
    "right_eye": 0.25,
    "left_ear": 0.35,
    "right_ear": 0.35,
    "left_shoulder": 0.79,
    "right_shoulder": 0.79,
    "left_elbow": 0.72,
    "right_elbow": 0.72,
    "left_wrist": 0.62,
    "right_wrist": 0.62,
    "left_hip": 1.07,
    "right_hip": 1.07,
    "left_knee": 0.87,
    "right_knee": 0.87,
    "left_ankle": 0.89,
    "right_ankle": 0.89,
    "left_big_toe": 0.62,
    "left_small_toe": 0.62,
    "left_heel": 0.62,
    "right_big_toe": 0.62,
    "right_small_toe": 0.62,
    "right_heel": 0.62,
}

# COCO's own 19 skeleton edges, by name.
_COCO_EDGES: tuple[tuple[str, str], ...] = (
    ("left_ankle", "left_knee"),
    ("left_knee", "left_hip"),
    ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"),
    ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"),
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_elbow", "right_wrist"),
    ("left_eye", "right_eye"),
    ("nose", "left_eye"),
    ("nose", "right_eye"),
    ("left_eye", "left_ear"),
    ("right_eye", "right_ear"),
    ("left_ear", "left_shoulder"),
    ("right_ear", "right_shoulder"),
)
_FOOT_EDGES: tuple[tuple[str, str], ...] = (
    ("left_ankle", "left_heel"),
    ("left_ankle", "left_big_toe"),
    ("left_big_toe", "left_small_toe"),
    ("right_ankle", "right_heel"),
    ("right_ankle", "right_big_toe"),
    ("right_big_toe", "right_small_toe"),
)


def _mirror(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[len("left_") :]
    if name.startswith("right_"):
        return "left_" + name[len("right_") :]
    return name


@dataclass(frozen=True)
class KeypointSchema:
    """An ordered keypoint set with everything that depends on the order.

    Attributes:
        names: keypoint names, in model-output order.
        sigmas: OKS sigmas as pycocotools expects them (annotator std / 10), shape (K,).
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        skeleton: 0-based index pairs of the limbs drawn between keypoints.
    """

    names: tuple[str, ...]
    sigmas: np.ndarray = field(repr=False)
    flip_pairs: tuple[tuple[int, int], ...] = field(repr=False)
    skeleton: tuple[tuple[int, int], ...] = field(repr=False)

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of a keypoint by name.

        Raises:
            KeyError: the name is not in this schema; the message lists the valid names.
        """
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown keypoint {name!r}; valid names: {', '.join(self.names)}") from None

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation ``p`` such that ``keypoints[:, p]`` relabels a mirrored person, shape (K,)."""
        perm = np.arange(self.num_keypoints)
        for left, right in self.flip_pairs:
            perm[left], perm[right] = right, left
        return perm

    def coco_skeleton(self) -> list[list[int]]:
        """Skeleton edges 1-based, as COCO category JSON stores them."""
        return [[a + 1, b + 1] for a, b in self.skeleton]

    def coco_category(self, category_id: int = 1) -> dict:
        """The COCO ``categories`` entry for a person with this schema's keypoints."""
        return {
            "id": category_id,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(self.names),
            "skeleton": self.coco_skeleton(),
        }


def _build(names: tuple[str, ...], edges: tuple[tuple[str, str], ...]) -> KeypointSchema:
    index = {n: i for i, n in enumerate(names)}
    pairs = tuple(
        (i, index[_mirror(n)]) for i, n in enumerate(names) if n.startswith("left_") and _mirror(n) in index
    )
    return KeypointSchema(
        names=names,
        sigmas=np.array([_STD_TABLE[n] / 10.0 for n in names], dtype=np.float64),
        flip_pairs=pairs,
        skeleton=tuple((index[a], index[b]) for a, b in edges),
    )


COCO17: KeypointSchema = _build(COCO_NAMES, _COCO_EDGES)
COCO23: KeypointSchema = _build(COCO_NAMES + FOOT_NAMES, _COCO_EDGES + _FOOT_EDGES)
SCHEMAS: dict[int, KeypointSchema] = {17: COCO17, 23: COCO23}
# Indices of the 17 COCO keypoints inside the 23-keypoint schema (they come first).
COCO17_IN_23: tuple[int, ...] = tuple(range(17))
FOOT_IN_23: tuple[int, ...] = tuple(range(17, 23))


def schema_for(num_keypoints: int) -> KeypointSchema:
    """The schema with ``num_keypoints`` keypoints (17: COCO body, 23: COCO body + CMU foot).

    Raises:
        ValueError: no schema has that many keypoints.
    """
    try:
        return SCHEMAS[num_keypoints]
    except KeyError:
        raise ValueError(
            f"no keypoint schema with {num_keypoints} keypoints; raypose knows {sorted(SCHEMAS)} "
            "(17 = COCO body, 23 = COCO body + CMU foot)"
        ) from None
