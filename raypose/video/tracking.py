"""Multi-person tracking by detection: per-frame detections in, tracks with stable ids out.

Each frame, every live track predicts where its person is now (constant velocity of the box
centre, so two people whose paths cross are told apart by where they are heading), and detections
are assigned to tracks by the Hungarian method (scipy's ``linear_sum_assignment``) on a similarity:

* ``"oks"``: Object Keypoint Similarity between the detection's keypoints and the track's last
  keypoints moved by the predicted displacement, with the schema's sigmas and the predicted box
  area as the scale; keypoints where either side scores below ``keypoint_thresh`` are left out.
* ``"iou"``: IoU of the detection box with the predicted box.

Pairs below ``min_similarity`` are never matched. An unmatched detection starts a new track
(birth, new id); a track unmatched for more than ``max_gap`` frames ends (death); within the gap it
can be matched again with the same id (short occlusions, missed detections). Tracks seen in fewer
than ``min_length`` frames are dropped at the end (flicker from false positives). Ids are numbered
1, 2, ... in order of first appearance among the tracks kept.

Coordinates are original-frame pixels; boxes xyxy; keypoints (N, K, 3) as (x, y, score).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from raypose.errors import ConfigError
from raypose.evaluation.oks import keypoint_similarity
from raypose.video.tracks_io import Track

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackerConfig:
    """How to link detections into tracks (see the module docstring).

    Attributes:
        match: ``"oks"`` (keypoints) or ``"iou"`` (boxes).
        min_similarity: smallest OKS / IoU accepted for a match.
        max_gap: frames a track may go unseen and still be continued.
        min_length: tracks with fewer detections are dropped.
        keypoint_thresh: keypoints scoring below this are ignored by OKS.
        velocity_smoothing: weight of the newest displacement in the velocity estimate (0..1].
    """

    match: Literal["oks", "iou"] = "oks"
    min_similarity: float = 0.2
    max_gap: int = 10
    min_length: int = 1
    keypoint_thresh: float = 0.1
    velocity_smoothing: float = 0.5

    def __post_init__(self) -> None:
        if self.match not in ("oks", "iou"):
            raise ConfigError(f"match must be 'oks' or 'iou', got {self.match!r}")
        if not 0 <= self.min_similarity < 1:
            raise ConfigError(f"min_similarity must be in [0, 1), got {self.min_similarity}")
        if self.max_gap < 0:
            raise ConfigError(f"max_gap must be >= 0 frames, got {self.max_gap}")
        if self.min_length < 1:
            raise ConfigError(f"min_length must be >= 1, got {self.min_length}")
        if not 0 < self.velocity_smoothing <= 1:
            raise ConfigError(f"velocity_smoothing must be in (0, 1], got {self.velocity_smoothing}")


@dataclass
class _LiveTrack:
    id: int
    frames: list[int]
    keypoints: list[np.ndarray]  # each (K, 3)
    box: np.ndarray  # (4,) xyxy at the last frame seen
    velocity: np.ndarray  # (2,) box-centre pixels per frame

    @property
    def last_frame(self) -> int:
        return self.frames[-1]


def boxes_from_keypoints(keypoints: np.ndarray, thresh: float = 0.0, pad: float = 0.1) -> np.ndarray:
    """Boxes around keypoints: (N, K, 3) -> (N, 4) xyxy, enlarged by ``pad`` of their size per side.

    Points scoring below ``thresh`` are ignored unless that leaves none.
    """
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, keypoints.shape[-2], 3)
    boxes = np.zeros((len(kps), 4))
    for n, person in enumerate(kps):
        pts = person[person[:, 2] >= thresh, :2] if (person[:, 2] >= thresh).any() else person[:, :2]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        margin = pad * (hi - lo) + 1.0
        boxes[n] = [*(lo - margin), *(hi + margin)]
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (A, 4) and (B, 4) xyxy -> (A, B)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _centre(box: np.ndarray) -> np.ndarray:
    return (box[..., :2] + box[..., 2:]) / 2


class Tracker:
    """Online tracker: call :meth:`update` once per frame in order, then :meth:`finish`.

    Args:
        sigmas: (K,) OKS sigmas (pycocotools convention), e.g. ``schema.sigmas``.
        config: matching parameters.
    """

    def __init__(self, sigmas: np.ndarray, config: TrackerConfig | None = None) -> None:
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        self.config = config or TrackerConfig()
        self._live: list[_LiveTrack] = []
        self._done: list[_LiveTrack] = []
        self._next_id = 1
        self._last_frame = -1

    def update(self, frame: int, keypoints: np.ndarray, boxes: np.ndarray | None = None) -> list[int]:
        """Add one frame's detections.

        Args:
            frame: frame index, larger than the previous call's.
            keypoints: (N, K, 3) as (x, y, score), pixels.
            boxes: (N, 4) xyxy; derived from the keypoints when None.

        Returns:
            (N,) the (provisional) track id given to each detection.
        """
        if frame <= self._last_frame:
            raise ValueError(f"frames must increase: got {frame} after {self._last_frame}")
        self._last_frame = frame
        kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, len(self.sigmas), 3)
        boxes = boxes_from_keypoints(kps, self.config.keypoint_thresh) if boxes is None else np.asarray(boxes, float)
        self._retire(frame)
        pairs = self._assign(frame, kps, boxes.reshape(-1, 4))
        ids = [0] * len(kps)
        for det, live in pairs:
            self._extend(live, frame, kps[det], boxes[det])
            ids[det] = live.id
        for det in sorted(set(range(len(kps))) - {d for d, _ in pairs}):
            live = _LiveTrack(self._next_id, [frame], [kps[det]], boxes[det].copy(), np.zeros(2))
            self._next_id += 1
            self._live.append(live)
            ids[det] = live.id
        return ids

    def _retire(self, frame: int) -> None:
        gone = [t for t in self._live if frame - t.last_frame > self.config.max_gap + 1]
        self._done.extend(gone)
        self._live = [t for t in self._live if t not in gone]

    def _extend(self, live: _LiveTrack, frame: int, kps: np.ndarray, box: np.ndarray) -> None:
        step = (_centre(box) - _centre(live.box)) / (frame - live.last_frame)
        w = self.config.velocity_smoothing
        live.velocity = step if len(live.frames) == 1 else w * step + (1 - w) * live.velocity
        live.frames.append(frame)
        live.keypoints.append(kps)
        live.box = box.copy()

    def _assign(self, frame: int, kps: np.ndarray, boxes: np.ndarray) -> list[tuple[int, _LiveTrack]]:
        if not self._live or not len(kps):
            return []
        similarity = self.similarity(frame, kps, boxes)
        rows, cols = linear_sum_assignment(-similarity)
        return [
            (int(r), self._live[c])
            for r, c in zip(rows, cols)
            if similarity[r, c] >= self.config.min_similarity and similarity[r, c] > 0
        ]

    def similarity(self, frame: int, kps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N detections, live tracks) similarity of this frame's detections to the predictions."""
        shifts = np.stack([t.velocity * (frame - t.last_frame) for t in self._live])  # (L, 2)
        pred_boxes = np.stack([t.box for t in self._live]) + np.tile(shifts, 2)
        if self.config.match == "iou":
            return box_iou(boxes, pred_boxes)
        pred_kps = np.stack([t.keypoints[-1] for t in self._live]).copy()  # (L, K, 3)
        pred_kps[..., :2] += shifts[:, None, :]
        wh = pred_boxes[:, 2:] - pred_boxes[:, :2]
        # Boxes from keypoints carry a margin; ~0.6 of the box approximates COCO's segment area.
        area = 0.6 * np.prod(np.clip(wh, 1.0, None), axis=1)
        ks = keypoint_similarity(kps[..., :2], pred_kps[..., :2], area, self.sigmas)  # (N, L, K)
        thresh = self.config.keypoint_thresh
        both = (kps[:, None, :, 2] >= thresh) & (pred_kps[None, :, :, 2] >= thresh)
        counts = both.sum(axis=2)
        return np.where(counts > 0, (ks * both).sum(axis=2) / np.maximum(counts, 1), 0.0)

    def finish(self) -> list[Track]:
        """End tracking: the tracks with at least ``min_length`` detections, ids 1.. by first frame."""
        finished = [t for t in self._done + self._live if len(t.frames) >= self.config.min_length]
        finished.sort(key=lambda t: (t.frames[0], t.id))
        self._done, self._live = [], []
        tracks = [
            Track(id=n + 1, frames=np.array(t.frames), keypoints=np.stack(t.keypoints)) for n, t in enumerate(finished)
        ]
        log.info("tracking: %d tracks kept (%d dropped as shorter than %d frames)",
                 len(tracks), self._next_id - 1 - len(tracks), self.config.min_length)
        return tracks


def track_detections(
    detections: list[dict[str, np.ndarray]], sigmas: np.ndarray, config: TrackerConfig | None = None, start_frame: int = 0
) -> list[Track]:
    """Track a whole list of per-frame detections.

    Args:
        detections: one dict per frame with ``keypoints`` (N, K, 3) as (x, y, score) and optionally
            ``boxes`` (N, 4) xyxy; frame ``i`` of the list is frame ``start_frame + i``.
        sigmas: (K,) OKS sigmas.

    Returns:
        The tracks (see :meth:`Tracker.finish`).
    """
    tracker = Tracker(sigmas, config)
    for i, det in enumerate(detections):
        tracker.update(start_frame + i, det["keypoints"], det.get("boxes"))
    return tracker.finish()
