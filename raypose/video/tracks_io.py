"""tracks.json: people tracked through a video, their keypoints frame by frame.

The file format (one JSON object)::

    {"fps": 25.0,
     "keypoint_names": ["nose", ..., "right_heel"],
     "tracks": [{"id": 1,
                 "frames": [0, 1, 2, 5, ...],                  # strictly increasing frame indices
                 "keypoints": [[[x, y, score], ...K...],       # one list of K points per frame
                               ...]}]}

``x``, ``y`` are pixels in the original frame (origin top-left); ``score`` is a keypoint confidence
in [0, 1] (for model output: the sigmoid of torchvision's keypoint heatmap logit). A track lists only
the frames it was seen in: frames missing from ``frames`` are gaps (occlusions, missed detections).

In memory a track is a :class:`Track` with ``frames`` (T,) int64 and ``keypoints`` (T, K, 3) float64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raypose.errors import InputError
from raypose.io import load_json, write_json_atomic


@dataclass
class Track:
    """One person through the video.

    Attributes:
        id: the track id, unique within a :class:`TrackSet`.
        frames: (T,) int64 frame indices, strictly increasing.
        keypoints: (T, K, 3) float64 as (x, y, score), pixels and [0, 1].
    """

    id: int
    frames: np.ndarray
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64).reshape(-1)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64)
        assert self.keypoints.ndim == 3 and self.keypoints.shape[2] == 3, self.keypoints.shape
        assert len(self.frames) == len(self.keypoints), (len(self.frames), len(self.keypoints))

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class TrackSet:
    """Everything in a tracks.json: frame rate, keypoint names and the tracks."""

    fps: float
    keypoint_names: tuple[str, ...]
    tracks: list[Track] = field(default_factory=list)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def track(self, track_id: int) -> Track:
        """The track with id ``track_id``.

        Raises:
            KeyError: no such track; the message lists the ids there are.
        """
        for t in self.tracks:
            if t.id == track_id:
                return t
        raise KeyError(f"no track with id {track_id}; ids: {[t.id for t in self.tracks]}")


def tracks_to_dict(tracks: TrackSet, decimals: int = 2) -> dict[str, Any]:
    """The JSON object of a :class:`TrackSet`; coordinates rounded to ``decimals``, scores to 4."""
    out_tracks = []
    for t in tracks.tracks:
        kps = t.keypoints.copy()
        kps[..., :2] = np.round(kps[..., :2], decimals)
        kps[..., 2] = np.round(kps[..., 2], 4)
        out_tracks.append({"id": int(t.id), "frames": t.frames.tolist(), "keypoints": kps.tolist()})
    return {"fps": float(tracks.fps), "keypoint_names": list(tracks.keypoint_names), "tracks": out_tracks}


def save_tracks(path: str | os.PathLike, tracks: TrackSet) -> Path:
    """Validate and write ``tracks`` to ``path`` atomically; return the path."""
    obj = tracks_to_dict(tracks)
    tracks_from_dict(obj, source="tracks to write")  # never write a file we would refuse to read
    return write_json_atomic(path, obj)


def load_tracks(path: str | os.PathLike) -> TrackSet:
    """Read and validate a tracks.json.

    Raises:
        InputError: missing file, invalid JSON, or any departure from the format (the message names
            the file, the track and the frame, and says what is expected).
    """
    return tracks_from_dict(load_json(path, what="tracks file"), source=str(path))


def _fail(source: str, where: str, problem: str) -> InputError:
    return InputError(
        f"{source}: {where}: {problem} (see raypose/video/tracks_io.py for the tracks.json format)"
    )


def tracks_from_dict(obj: Any, source: str = "tracks.json") -> TrackSet:
    """Validate a tracks.json object and build a :class:`TrackSet`.

    Raises:
        InputError: naming ``source``, the track (index and id) and the problem.
    """
    if not isinstance(obj, dict):
        raise _fail(
            source,
            "top level",
            f"expected an object with fps, keypoint_names, tracks; got {type(obj).__name__}",
        )
    missing = [k for k in ("fps", "keypoint_names", "tracks") if k not in obj]
    if missing:
        raise _fail(source, "top level", f"missing key(s) {missing}")
    fps = obj["fps"]
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise _fail(source, "fps", f"expected a positive number, got {fps!r}")
    names = obj["keypoint_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _fail(source, "keypoint_names", "expected a non-empty list of strings")
    if len(set(names)) != len(names):
        raise _fail(source, "keypoint_names", "names repeat")
    if not isinstance(obj["tracks"], list):
        raise _fail(source, "tracks", f"expected a list, got {type(obj['tracks']).__name__}")
    tracks: list[Track] = []
    seen: set[int] = set()
    for i, raw in enumerate(obj["tracks"]):
        track = _track_from_dict(raw, len(names), source, i)
        if track.id in seen:
            raise _fail(
                source, f"tracks[{i}]", f"id {track.id} is used by an earlier track; ids must be unique"
            )
        seen.add(track.id)
        tracks.append(track)
    return TrackSet(fps=float(fps), keypoint_names=tuple(names), tracks=tracks)


def _track_from_dict(raw: Any, num_keypoints: int, source: str, index: int) -> Track:
    where = f"tracks[{index}]"
    if not isinstance(raw, dict) or not {"id", "frames", "keypoints"} <= raw.keys():
        raise _fail(source, where, "expected an object with id, frames, keypoints")
    track_id = raw["id"]
    if isinstance(track_id, bool) or not isinstance(track_id, int) or not -(2**63) <= track_id < 2**63:
        raise _fail(source, where, f"id must be an integer fitting int64, got {track_id!r:.40}")
    where = f"tracks[{index}] (id {track_id})"
    frames = raw["frames"]
    if not isinstance(frames, list) or not all(
        isinstance(f, int) and not isinstance(f, bool) for f in frames
    ):
        raise _fail(source, where, "frames must be a list of integers")
    if frames and (min(frames) < 0 or any(b <= a for a, b in zip(frames, frames[1:]))):
        raise _fail(source, where, "frames must be >= 0 and strictly increasing")
    if frames and frames[-1] >= 2**63:
        raise _fail(
            source, where, f"frame {frames[-1]:.3g} does not fit int64; frames are indices in the video"
        )
    kps = raw["keypoints"]
    if not isinstance(kps, list) or len(kps) != len(frames):
        got = len(kps) if isinstance(kps, list) else type(kps).__name__
        raise _fail(
            source, where, f"keypoints must be a list with one entry per frame ({len(frames)}), got {got}"
        )
    array = _keypoint_array(kps, num_keypoints, source, where, frames)
    return Track(id=track_id, frames=np.array(frames, dtype=np.int64), keypoints=array)


def _keypoint_array(
    kps: list, num_keypoints: int, source: str, where: str, frames: Sequence[int]
) -> np.ndarray:
    try:
        array = np.array(kps, dtype=np.float64).reshape(len(frames), -1)
    except (ValueError, TypeError):
        array = None
    if array is None or array.shape[1] != 3 * num_keypoints:
        for j, frame_kps in enumerate(kps):  # find the first bad frame to name it
            ok = isinstance(frame_kps, list) and len(frame_kps) == num_keypoints
            ok = ok and all(isinstance(p, list) and len(p) == 3 for p in frame_kps)
            ok = ok and all(
                isinstance(v, int | float) and not isinstance(v, bool) for p in frame_kps for v in p
            )
            if not ok:
                raise _fail(
                    source,
                    f"{where}, frame {frames[j]}",
                    f"expected {num_keypoints} [x, y, score] number triples (one per keypoint name)",
                )
        raise _fail(source, where, f"expected {num_keypoints} [x, y, score] triples per frame")
    array = array.reshape(len(frames), num_keypoints, 3)
    bad = (
        ~np.isfinite(array).all(axis=(1, 2))
        | (array[..., 2] < 0).any(axis=1)
        | (array[..., 2] > 1).any(axis=1)
    )
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise _fail(source, f"{where}, frame {frames[j]}", "coordinates must be finite and scores in [0, 1]")
    return array
