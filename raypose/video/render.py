"""Drawing tracks: skeleton overlays on video frames and before/after smoothing plots.

Overlay frames reuse :func:`raypose.data.draw.draw_skeletons` with one colour per track id and the
id written above the person's box. The plots show, for a chosen keypoint of a track, x and y over
time: the raw detections (markers), the smoothed curve (line) and the points replaced as outliers
(crosses), as in the design notes' right-knee figure.
"""

from __future__ import annotations

import colorsys
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from raypose.data.draw import draw_skeletons
from raypose.io import atomic_path
from raypose.schema import KeypointSchema
from raypose.video.tracking import boxes_from_keypoints
from raypose.video.tracks_io import TrackSet

log = logging.getLogger(__name__)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A bright colour per id, spread round the hue circle (golden-ratio steps)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def frame_index(tracks: TrackSet) -> dict[int, list[tuple[int, np.ndarray]]]:
    """``{frame: [(track id, keypoints (K, 3)), ...]}`` for fast per-frame drawing."""
    index: dict[int, list[tuple[int, np.ndarray]]] = {}
    for track in tracks.tracks:
        for frame, kps in zip(track.frames.tolist(), track.keypoints):
            index.setdefault(frame, []).append((track.id, kps))
    return index


def draw_tracks_on_frame(
    frame: np.ndarray, people: Sequence[tuple[int, np.ndarray]], schema: KeypointSchema, min_score: float = 0.1
) -> np.ndarray:
    """Draw people ``(track id, keypoints (K, 3) as (x, y, score))`` on a frame (H, W, 3) uint8 RGB."""
    image = frame
    for track_id, kps in people:
        scores = kps[None, :, 2]
        shown = kps.copy()
        shown[:, 2] = 2.0  # draw_skeletons hides v <= 0; the score threshold decides instead
        box = boxes_from_keypoints(kps[None], thresh=min_score)
        h, w = np.asarray(frame).shape[:2]
        box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])  # keeps the id label inside the frame
        image = draw_skeletons(
            image, shown[None], schema, boxes=box, color=track_color(track_id), keypoint_scores=scores,
            keypoint_threshold=min_score, labels=[f"id {track_id}"],
        )
    return np.asarray(image)


def overlay_frames(
    frames: Iterable[np.ndarray], tracks: TrackSet, schema: KeypointSchema, min_score: float = 0.1
) -> Iterator[np.ndarray]:
    """Frames with every track drawn where it was seen; frame ``i`` of ``frames`` is frame index ``i``."""
    index = frame_index(tracks)
    for i, frame in enumerate(frames):
        people = index.get(i, [])
        yield draw_tracks_on_frame(frame, people, schema, min_score) if people else frame


def plot_keypoint_series(
    raw: TrackSet,
    smoothed: TrackSet,
    track_id: int,
    keypoint: str,
    path: str | os.PathLike,
    outliers: np.ndarray | None = None,
    min_score: float | None = None,
) -> Path:
    """Before/after plot of one keypoint of one track: x(t) and y(t), raw vs smoothed; PNG, atomic.

    Args:
        outliers: optional (T, K) bool of replaced points (``SmoothingReport.outlier_mask[id]``).
        min_score: if given, raw points scoring below it are drawn grey as "low score (filled)".

    Raises:
        KeyError: unknown keypoint name or track id (the message lists the valid ones).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = list(raw.keypoint_names).index(keypoint) if keypoint in raw.keypoint_names else None
    if k is None:
        raise KeyError(f"unknown keypoint {keypoint!r}; valid: {', '.join(raw.keypoint_names)}")
    before, after = raw.track(track_id), smoothed.track(track_id)
    t = before.frames / raw.fps
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for c, (ax, name) in enumerate(zip(axes, ("x", "y"))):
        low = np.zeros(len(t), dtype=bool) if min_score is None else before.keypoints[:, k, 2] < min_score
        ax.plot(t[~low], before.keypoints[~low, k, c], "o", color="tab:green", ms=3, label="detected")
        if low.any():
            ax.plot(t[low], before.keypoints[low, k, c], "o", color="0.6", ms=4, label="low score (filled)")
        ax.plot(after.frames / smoothed.fps, after.keypoints[:, k, c], "-", color="tab:blue", lw=1.5, label="smoothed")
        if outliers is not None and outliers[:, k].any():
            mask = outliers[:, k]
            ax.plot(t[mask], before.keypoints[mask, k, c], "x", color="tab:red", ms=7, label="outlier (replaced)")
        ax.set_ylabel(f"{name} (px)")
        if c == 1:
            ax.invert_yaxis()  # image y grows downwards
    axes[0].set_title(f"track {track_id}: {keypoint}")
    axes[0].legend(loc="best", fontsize=8)
    axes[1].set_xlabel("time (s)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
