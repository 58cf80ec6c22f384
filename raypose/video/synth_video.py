"""A synthetic video with known ground truth, for tracking/smoothing tests and the demo.

Figures from the synthetic data set (:mod:`raypose.data.synth`'s drawing) walk along known paths:
person 1 from left to right, person 2 from right to left slightly lower, so their paths cross in
the middle of the video; more people (if asked for) walk diagonally. A grey pillar stands in front
of everyone: whoever walks behind it is occluded for a few frames. Legs and arms swing as they walk.

Alongside the frames the generator returns:

* ``gt_keypoints`` (P, T, K, 2): the exact joint positions (pixels) of every person in every frame;
* ``detections``: per frame, what a detector might output: the ground truth plus Gaussian jitter
  (``jitter_px`` per coordinate), occasional large outliers (``outlier_px`` away, probability
  ``outlier_prob`` per keypoint), occasional low-confidence garbage points, detections dropped at
  random (``drop_prob``) and whenever the person is behind the pillar; shuffled within each frame.

Everything is drawn from ``numpy.random.default_rng(seed)``: same config, same video.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from raypose.errors import ConfigError
from raypose.schema import COCO23
from raypose.video.tracking import boxes_from_keypoints
from raypose.video.tracks_io import Track, TrackSet

log = logging.getLogger(__name__)

K = COCO23.num_keypoints
_LEG_POINTS = {
    side: [COCO23.index(f"{side}_{j}") for j in ("knee", "ankle", "big_toe", "small_toe", "heel")]
    for side in ("left", "right")
}
_ARM_POINTS = {side: [COCO23.index(f"{side}_{j}") for j in ("elbow", "wrist")] for side in ("left", "right")}
PILLAR_X = (0.62, 0.70)  # pillar span, fractions of the width


@dataclass(frozen=True)
class SynthVideoConfig:
    """What to generate. Sizes in pixels; probabilities per keypoint or per detection."""

    num_frames: int = 40
    width: int = 160
    height: int = 128
    fps: float = 10.0
    num_people: int = 2
    seed: int = 0
    figure_height: float = 0.7  # fraction of the frame height
    jitter_px: float = 1.5
    outlier_prob: float = 0.03
    outlier_px: float = 20.0
    low_score_prob: float = 0.03
    drop_prob: float = 0.03
    pillar: bool = True

    def __post_init__(self) -> None:
        if self.num_frames < 2 or self.width < 32 or self.height < 32:
            raise ConfigError(f"need >= 2 frames of at least 32x32 pixels, got {self.num_frames} x {self.width}x{self.height}")
        if self.num_people < 1 or self.fps <= 0:
            raise ConfigError(f"need >= 1 person and fps > 0, got {self.num_people} and {self.fps}")
        for name in ("outlier_prob", "low_score_prob", "drop_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class SynthVideo:
    """A generated video and its truth (see the module docstring).

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        gt_keypoints: (P, T, K, 2) pixels.
        occluded: (P, T) bool, behind the pillar.
        detections: T dicts with ``keypoints`` (N, K, 3) as (x, y, score), ``boxes`` (N, 4) xyxy,
            ``scores`` (N,), and the truth: ``person`` (N,) index into P, ``outlier`` (N, K) bool.
    """

    config: SynthVideoConfig
    frames: np.ndarray
    gt_keypoints: np.ndarray
    occluded: np.ndarray
    detections: list[dict[str, np.ndarray]]

    @property
    def fps(self) -> float:
        return self.config.fps

    def ground_truth_tracks(self) -> TrackSet:
        """The exact paths as a TrackSet (track id = person index + 1, every frame, score 1)."""
        tracks = []
        for p, path in enumerate(self.gt_keypoints):
            kps = np.concatenate([path, np.ones((*path.shape[:2], 1))], axis=2)
            tracks.append(Track(id=p + 1, frames=np.arange(len(path)), keypoints=kps))
        return TrackSet(fps=self.fps, keypoint_names=COCO23.names, tracks=tracks)

    def detection_tracks(self) -> TrackSet:
        """The noisy detections grouped by their true person (ideal tracking), id = person + 1."""
        per_person: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        for t, det in enumerate(self.detections):
            for n, p in enumerate(det["person"]):
                frames, kps = per_person.setdefault(int(p), ([], []))
                frames.append(t)
                kps.append(det["keypoints"][n])
        tracks = [
            Track(id=p + 1, frames=np.array(frames), keypoints=np.stack(kps))
            for p, (frames, kps) in sorted(per_person.items())
        ]
        return TrackSet(fps=self.fps, keypoint_names=COCO23.names, tracks=tracks)


def _base_pose(rng: np.random.Generator, height: float) -> np.ndarray:
    """(K, 2) joints of a standing figure relative to its pelvis."""
    try:  # the data set's figure geometry, when that module is present
        from raypose.data.synth import _figure_keypoints

        return _figure_keypoints(rng, np.zeros(2), height)
    except ImportError:  # pragma: no cover - fallback when raypose.data.synth is absent
        return _stick_pose(height)


def _stick_pose(h: float) -> np.ndarray:
    pts = np.zeros((K, 2))
    for side, s in (("left", 1), ("right", -1)):
        for joint, (dx, dy) in {
            "eye": (0.03, -0.47), "ear": (0.06, -0.45), "shoulder": (0.13, -0.30), "elbow": (0.17, -0.15),
            "wrist": (0.19, -0.01), "hip": (0.085, 0.0), "knee": (0.09, 0.24), "ankle": (0.09, 0.47),
            "big_toe": (0.16, 0.50), "small_toe": (0.14, 0.48), "heel": (0.08, 0.50),
        }.items():
            pts[COCO23.index(f"{side}_{joint}")] = (s * dx * h, dy * h)
    pts[COCO23.index("nose")] = (0, -0.44 * h)
    return pts


def _paths(config: SynthVideoConfig, rng: np.random.Generator) -> np.ndarray:
    """(P, T, 2) pelvis positions: two people crossing head-on, extra people walking diagonally."""
    w, h, t = config.width, config.height, np.linspace(0.0, 1.0, config.num_frames)[:, None]
    paths = []
    for p in range(config.num_people):
        if p < 2:
            y = h * (0.58 + 0.05 * p)
            start, end = np.array([0.15 * w, y]), np.array([0.85 * w, y])
            if p == 1:
                start, end = end, start
        else:
            start = rng.uniform([0.1 * w, 0.45 * h], [0.9 * w, 0.7 * h])
            end = rng.uniform([0.1 * w, 0.45 * h], [0.9 * w, 0.7 * h])
        bob = np.stack([np.zeros_like(t[:, 0]), 0.01 * h * np.sin(2 * np.pi * 3 * t[:, 0])], axis=1)
        paths.append(start + (end - start) * t + bob)
    return np.stack(paths)


def _walk(base: np.ndarray, pelvis: np.ndarray, phase: np.ndarray, stride: float) -> np.ndarray:
    """(T, K, 2) joints: the base pose at each pelvis position with legs and arms swinging."""
    pts = base[None] + pelvis[:, None, :]
    swing = stride * np.sin(phase)[:, None]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        # The foot swings the full stride, the knee half of it; arms swing against the legs.
        pts[:, _LEG_POINTS[side], 0] += sign * swing * np.array([0.5, 1.0, 1.0, 1.0, 1.0])
        pts[:, _ARM_POINTS[side], 0] -= sign * swing * np.array([0.4, 0.8])
    return pts


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    base = 120 + 40 * (ys / height)[..., None] + rng.uniform(-15, 15, 3)
    texture = rng.normal(0, 4, (height, width, 1))
    return np.clip(base + 10 * np.sin(xs / 9.0)[..., None] + texture, 0, 255).astype(np.uint8)


def _draw_frame(background: np.ndarray, poses: list[np.ndarray], heights: list[float], seeds: list[int], pillar) -> np.ndarray:
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    mask = ImageDraw.Draw(Image.new("L", image.size, 0))
    try:
        from raypose.data.synth import _draw_figure
    except ImportError:  # pragma: no cover - fallback when raypose.data.synth is absent
        _draw_figure = None
    for pts, h, seed in zip(poses, heights, seeds):
        if _draw_figure is not None:
            # A fixed RNG per person: the same clothes and colours in every frame.
            _draw_figure(np.random.default_rng(seed), (draw, mask), pts, h)
        else:  # pragma: no cover
            for a, b in COCO23.skeleton:
                draw.line([tuple(pts[a]), tuple(pts[b])], fill=(200, 60, 40), width=max(2, round(0.04 * h)))
    if pillar is not None:
        draw.rectangle(pillar, fill=(95, 95, 100), outline=(40, 40, 40))
    return np.asarray(image)


def _detect(gt: np.ndarray, config: SynthVideoConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A detector-like reading of one person's (K, 2) joints: ((K, 3) keypoints, (K,) outlier mask)."""
    kps = np.empty((K, 3))
    kps[:, :2] = gt + rng.normal(0, config.jitter_px, (K, 2))
    kps[:, 2] = rng.uniform(0.6, 1.0, K)
    outlier = rng.random(K) < config.outlier_prob
    angle = rng.uniform(0, 2 * np.pi, K)
    kps[outlier, :2] += config.outlier_px * np.stack([np.cos(angle), np.sin(angle)], axis=1)[outlier]
    low = (rng.random(K) < config.low_score_prob) & ~outlier
    kps[low, :2] += rng.normal(0, 3 * config.outlier_px, (int(low.sum()), 2))  # garbage, but flagged
    kps[low, 2] = rng.uniform(0.0, 0.05, int(low.sum()))
    return kps, outlier


def generate_synthetic_video(config: SynthVideoConfig | None = None) -> SynthVideo:
    """Render a video of walking figures and its ground truth and synthetic detections."""
    config = config or SynthVideoConfig()
    rng = np.random.default_rng(config.seed)
    w, h, T, P = config.width, config.height, config.num_frames, config.num_people
    fig_h = config.figure_height * h
    bases = [_base_pose(rng, fig_h) for _ in range(P)]
    paths = _paths(config, rng)
    steps_per_frame = 2 * np.pi / max(8.0, T / 3)  # about three strides per video
    gt = np.stack([
        _walk(bases[p], paths[p], steps_per_frame * np.arange(T) + rng.uniform(0, 2 * np.pi), 0.05 * fig_h)
        for p in range(P)
    ])  # (P, T, K, 2)
    pillar = [PILLAR_X[0] * w, 0.25 * h, PILLAR_X[1] * w, h] if config.pillar else None
    occluded = np.zeros((P, T), dtype=bool)
    if pillar is not None:
        occluded = (paths[..., 0] > pillar[0]) & (paths[..., 0] < pillar[2])
    background = _background(w, h, rng)
    seeds = [int(s) for s in rng.integers(0, 2**31, P)]
    frames = np.stack([_draw_frame(background, list(gt[:, t]), [fig_h] * P, seeds, pillar) for t in range(T)])
    detections = []
    for t in range(T):
        seen = [p for p in range(P) if not occluded[p, t] and rng.random() >= config.drop_prob]
        rng.shuffle(seen)
        read = [_detect(gt[p, t], config, rng) for p in seen]
        kps = np.stack([r[0] for r in read]) if read else np.zeros((0, K, 3))
        detections.append({
            "keypoints": kps,
            "boxes": boxes_from_keypoints(kps, thresh=0.5) if read else np.zeros((0, 4)),
            "scores": rng.uniform(0.8, 1.0, len(read)),
            "person": np.array(seen, dtype=np.int64),
            "outlier": np.stack([r[1] for r in read]) if read else np.zeros((0, K), dtype=bool),
        })
    log.info("synthetic video: %d frames %dx%d, %d people", T, w, h, P)
    return SynthVideo(config=config, frames=frames, gt_keypoints=gt, occluded=occluded, detections=detections)
